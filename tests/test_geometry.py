"""Geometry: crop ↔ inverse, mesh topology and UVs, pose alignment, One Euro filter."""

from __future__ import annotations

import numpy as np
import pytest

from face3d_live.geometry import mesh
from face3d_live.geometry.crop import CropTransform
from face3d_live.geometry.one_euro import OneEuroConfig, OneEuroFilter
from face3d_live.geometry.pose import apply_pose, umeyama
from face3d_live.types import Pose


@pytest.mark.parametrize("seed", range(5))
def test_crop_roundtrip_is_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ct = CropTransform(
        tuple(rng.uniform(50, 500, 2)), float(rng.uniform(40, 400)), float(rng.uniform(-np.pi, np.pi)), 224
    )
    pts = rng.uniform(0, 600, (100, 3))
    back = ct.to_image(ct.to_crop(pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    np.testing.assert_allclose(ct.matrix() @ np.append(ct.inverse_matrix()[:, 2], 1.0), [0.0, 0.0], atol=1e-9)


def test_crop_warp_puts_image_points_where_to_crop_says(astronaut: np.ndarray) -> None:
    img = np.zeros((300, 400, 3), np.uint8)
    img[148:153, 248:253] = 255  # a bright dot at (250, 150)
    ct = CropTransform((230.0, 160.0), 120.0, np.deg2rad(25.0), 224)
    crop = ct.warp(img)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    expected = ct.to_crop(np.array([[250.0, 150.0]]))[0]
    assert abs(xs.mean() - expected[0]) < 1.0 and abs(ys.mean() - expected[1]) < 1.0


def test_crop_warp_into_a_batch_row(astronaut: np.ndarray) -> None:
    """warp(out=row) writes the same crop into the caller's batch (the reconstructor's crops and their mirrors
    share one array); a row that does not fit is refused (OpenCV would write a new array instead)."""
    ct = CropTransform((230.0, 160.0), 180.0, 0.2, 224)
    batch = np.zeros((2, 224, 224, 3), np.uint8)
    assert ct.warp(astronaut, out=batch[1]) is not None
    assert np.array_equal(batch[1], ct.warp(astronaut)) and not batch[0].any()
    for bad in (np.zeros((2, 192, 192, 3), np.uint8)[0], np.zeros((224, 224, 3), np.float32)):
        with pytest.raises(ValueError, match="warp: out"):
            ct.warp(astronaut, out=bad)


def test_a_crop_much_smaller_than_its_region_is_antialiased(astronaut: np.ndarray) -> None:
    """A 224 crop of a 2,000 px region of an 8× upscaled photo is the same picture as the crop of the 250 px
    region of the photo itself, and sensor-like noise at full resolution averages out instead of aliasing
    (plain bilinear sampling kept it)."""
    import cv2

    big = cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_CUBIC)
    small_ct = CropTransform((224.0, 130.0), 250.0, 0.3)
    big_ct = CropTransform((224.0 * 8 + 3.5, 130.0 * 8 + 3.5), 2000.0, 0.3)  # pixel centres scale about -0.5
    ref = small_ct.warp(astronaut).astype(float)
    assert np.abs(big_ct.warp(big).astype(float) - ref).mean() < 3.0  # 1.8 (plain bilinear: 4.9)
    noisy = np.clip(big + np.random.default_rng(0).normal(0, 20, big.shape), 0, 255).astype(np.uint8)
    plain = cv2.warpAffine(noisy, big_ct.matrix(), (224, 224), flags=cv2.INTER_LINEAR).astype(float)
    assert np.abs(big_ct.warp(noisy).astype(float) - ref).mean() < 0.6 * np.abs(plain - ref).mean()
    # a crop reaching past the image's corner still comes out whole, edge-replicated
    assert CropTransform((10.0, 10.0), 3000.0, 0.0).warp(big).shape == (224, 224, 3)


def test_crop_around_points_levels_the_eye_line() -> None:
    pts = np.array([[100.0, 100.0], [140.0, 140.0], [120.0, 160.0]])
    ct = CropTransform.around_points(pts, pts[0], pts[1], margin=1.5, out_size=100)
    eyes = ct.to_crop(pts[:2])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-9 and eyes[0, 0] < eyes[1, 0]
    assert np.all((ct.to_crop(pts) > 0) & (ct.to_crop(pts) < 100))


def test_mesh_topology_and_uv() -> None:
    tris = mesh.triangles()
    assert tris.shape == (852, 3) and tris.dtype == np.int32
    assert tris.min() == 0 and tris.max() == mesh.NUM_VERTICES - 1
    assert len(np.unique(np.sort(tris, axis=1), axis=0)) == len(tris)
    # every edge is shared by at most two triangles, with opposite directions (consistent winding)
    directed = {tuple(e) for t in tris for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    assert len(directed) == 3 * len(tris)
    uv = mesh.uv_coords()
    assert uv.shape == (468, 2) and uv.min() >= 0.0 and uv.max() <= 1.0
    a, b, c = uv[tris[:, 0]], uv[tris[:, 1]], uv[tris[:, 2]]
    area = 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    assert (area > 0).all()


def test_canonical_mesh_is_symmetric_and_frontal() -> None:
    v = mesh.canonical_vertices()
    m = mesh.mirror_indices()
    assert (m[m] == np.arange(468)).all()
    np.testing.assert_allclose(v[m] * [-1, 1, 1], v, atol=1e-4)
    assert v[4, 2] < v[33, 2]  # nose tip nearer the camera than the eye corners
    assert np.isclose(np.linalg.norm(v[33] - v[263]), 9.0)
    assert len(mesh.LANDMARKS68) == 68 and len(set(mesh.LANDMARKS68.tolist())) == 68


def test_umeyama_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    truth = Pose(q, np.array([10.0, -5.0, 3.0]), 2.5)
    src = mesh.canonical_vertices()
    est = umeyama(src, apply_pose(truth, src))
    np.testing.assert_allclose(est.rotation, truth.rotation, atol=1e-9)
    np.testing.assert_allclose(est.translation, truth.translation, atol=1e-9)
    assert abs(est.scale - truth.scale) < 1e-9


def test_one_euro_passes_a_constant_and_follows_a_step() -> None:
    f = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.0))
    x = np.full((5, 3), 7.0)
    for i in range(10):
        np.testing.assert_allclose(f(x, i / 30), x)
    out = [f(x + 10.0, (10 + i) / 30)[0, 0] for i in range(60)]
    assert out[0] < 17.0 and abs(out[-1] - 17.0) < 0.1  # lags, then converges
