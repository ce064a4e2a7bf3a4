"""3DDFA_V2 teacher (training only): loader parity on real AFLW crops, z convention, manual override, blend fit.

The real-data tests need ../shared/teachers/3ddfa_v2 and ../shared/data (skip without them); CPU, a few s.
"""

from __future__ import annotations

import numpy as np
import pytest

from face3d_live.training.blend68 import apply_blend68, fit_blend68
from face3d_live.training.teacher_3ddfa import (
    AFLW_IDX,
    IBUG_IDX,
    OVERRIDE_DAMPING,
    manual_override,
    roi_from_bbox,
    roi_from_landmarks,
    teachers_dir,
)

EYE_MOUTH = {6: 36, 8: 39, 9: 42, 11: 45, 17: 48, 19: 54}  # AFLW index -> iBUG index


@pytest.fixture(scope="module")
def teacher():
    pytest.importorskip("torch")
    from face3d_live.training.teacher_3ddfa import Teacher3DDFA

    if not teachers_dir().is_dir():
        pytest.skip(f"3DDFA_V2 teacher pack not found at {teachers_dir()}")
    return Teacher3DDFA(threads=1)


@pytest.fixture(scope="module")
def aflw_frontal():
    """Up to 40 near-frontal AFLW crops with all eye and mouth corners annotated: (images, pts21 crop px)."""
    from face3d_live.training.data import aflw_shards, default_data_dir, iter_tar_images, load_aflw_labels

    d = default_data_dir()
    if not (d / "faces" / "aflw_list.txt").is_file() or not aflw_shards(d):
        pytest.skip(f"shared AFLW data not found at {d}")
    aflw = load_aflw_labels(d)
    row = {n: i for i, n in enumerate(aflw.names)}
    imgs, pts = [], []
    for name, img in iter_tar_images(aflw_shards(d)[0]):
        i = row.get(name)
        if i is None or abs(aflw.yaw[i]) > 25:
            continue
        p = aflw.points_in_crop(i, img.shape[1])
        if np.isfinite(p[list(EYE_MOUTH)]).all():
            imgs.append(img)
            pts.append(p)
        if len(imgs) == 40:
            break
    return imgs, np.asarray(pts)


def test_roi_helpers_match_3ddfa_v2() -> None:
    # whole 120 crop: side0 120, centre (60, 60 + 16.8), side int(189.6) = 189
    np.testing.assert_allclose(roi_from_bbox([0, 0, 120, 120]), [-34.5, -17.7, 154.5, 171.3])
    pts = np.array([[10.0, 20.0], [50.0, 40.0], [30.0, 80.0]])  # extent 40 x 60 about (30, 50)
    side = np.sqrt(2) * 60
    np.testing.assert_allclose(
        roi_from_landmarks(pts), [30 - side / 2, 50 - side / 2, 30 + side / 2, 50 + side / 2]
    )


def test_landmarks_on_real_aflw_crops(teacher, aflw_frontal) -> None:
    imgs, pts = aflw_frontal
    assert len(imgs) >= 20
    lm, roi = teacher.predict_two_pass(imgs)
    assert lm.shape == (len(imgs), 68, 3) and lm.dtype == np.float32 and roi.shape == (len(imgs), 4)
    size = np.sqrt(np.prod(np.nanmax(pts, 1) - np.nanmin(pts, 1), axis=1))  # manual points' box
    a, b = list(EYE_MOUTH), list(EYE_MOUTH.values())
    err = np.linalg.norm(lm[:, b, :2] - pts[:, a], axis=2) / size[:, None]
    assert err.mean() < 0.06, f"eye/mouth corners off by {100 * err.mean():.1f} % of the face"
    assert np.median(err) < 0.06
    # left/right mapping: iBUG 36 / 48 are AFLW's right-eye outer corner / right mouth corner, not the left ones
    for ib, same, other in ((36, 6, 11), (48, 17, 19)):
        d_same = np.linalg.norm(lm[:, ib, :2] - pts[:, same], axis=1)
        d_other = np.linalg.norm(lm[:, ib, :2] - pts[:, other], axis=1)
        assert (d_same < d_other).all()


def test_z_convention(teacher, aflw_frontal) -> None:
    imgs, _ = aflw_frontal
    lm = teacher.predict(imgs[:16], np.tile([0.0, 0.0, 120.0, 120.0], (16, 1)))
    np.testing.assert_allclose(lm[:, :, 2].mean(1), 0.0, atol=1e-3)
    # +z away from the camera: the nose tip is nearer (smaller z) than the jaw ends
    assert (lm[:, 30, 2] < lm[:, [0, 16], 2].min(1)).all()


def test_label_cache(teacher, tmp_path) -> None:
    from face3d_live.training.data import default_data_dir
    from face3d_live.training.teacher_3ddfa import cache_path_3ddfa, label_3ddfa

    src = default_data_dir() / "faces" / "expressions-00.tar"
    if not src.is_file():
        pytest.skip(f"{src} missing")
    labels = label_3ddfa(src, tmp_path, teacher=teacher, limit=6, progress=False)
    path = cache_path_3ddfa(tmp_path, src)
    assert path.name == "3ddfa-expressions-00.npz" and path.exists()
    assert len(labels) == 6 and list(labels.names) == sorted(labels.names)
    assert labels.lm68.shape == (6, 68, 3) and labels.roi.shape == (6, 4)
    mtime = path.stat().st_mtime_ns
    again = label_3ddfa(src, tmp_path, teacher=teacher, limit=6, progress=False)
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.lm68, labels.lm68)


def _synthetic_face(rng: np.random.Generator, n: int) -> np.ndarray:
    lm = np.zeros((n, 68, 3), np.float32)
    lm[:, :, :2] = rng.uniform(20, 100, (n, 68, 2))
    lm[:, :, 2] = rng.normal(0, 10, (n, 68))
    return lm


def test_manual_override_replaces_annotated_points() -> None:
    rng = np.random.default_rng(0)
    lm = _synthetic_face(rng, 3)
    pts = np.full((3, 21, 2), np.nan)
    pts[0, AFLW_IDX] = lm[0, IBUG_IDX, :2] + rng.normal(0, 3, (len(AFLW_IDX), 2))  # all annotated
    pts[1, [6, 8, 17]] = [[30, 40], [45, 41], [35, 80]]  # a few; face 2: none
    out = manual_override(lm, pts, correction="none")
    np.testing.assert_allclose(out[0, IBUG_IDX, :2], pts[0, AFLW_IDX], atol=1e-4)
    np.testing.assert_allclose(out[1, [36, 39, 48], :2], pts[1, [6, 8, 17]], atol=1e-4)
    untouched = np.setdiff1d(np.arange(68), [36, 39, 48])
    np.testing.assert_array_equal(out[1, untouched], lm[1, untouched])
    np.testing.assert_array_equal(out[2], lm[2])
    np.testing.assert_array_equal(out[..., 2], lm[..., 2])  # z kept

    # a pure shift of the annotated points moves the others by the damped shift m / (m + damping)
    shift = np.array([5.0, -2.0])
    pts2 = np.full((1, 21, 2), np.nan)
    pts2[0, AFLW_IDX] = lm[0, IBUG_IDX, :2] + shift
    out2 = manual_override(lm[:1], pts2)
    np.testing.assert_allclose(out2[0, IBUG_IDX, :2], pts2[0, AFLW_IDX], atol=1e-4)
    m = len(AFLW_IDX)
    rest = np.setdiff1d(np.arange(68), IBUG_IDX)
    moved = out2[0, rest, :2] - lm[0, rest, :2]
    np.testing.assert_allclose(moved, np.tile(shift * m / (m + OVERRIDE_DAMPING), (len(rest), 1)), atol=1e-3)


@pytest.mark.parametrize("n_verts", [468, 478])
def test_blend_fit_recovers_known_blend(n_verts: int) -> None:
    rng = np.random.default_rng(1)
    n = 200
    template = rng.normal(size=(n_verts, 3)) * [1.0, 1.2, 0.5]
    w_true = np.zeros((68, n_verts))
    for p in range(68):
        while True:  # 3 neighbouring vertices whose blend has them among its 8 nearest (well-posed truth)
            anchor = template[rng.integers(n_verts)] + rng.normal(0, 0.05, 3)
            nn = np.argsort(np.linalg.norm(template - anchor, axis=1))[:3]
            w = rng.uniform(0.2, 1.0, 3)
            point = (w / w.sum()) @ template[nn]
            if set(nn) <= set(np.argsort(np.linalg.norm(template - point, axis=1))[:8]):
                break
        w_true[p, nn] = w / w.sum()
    verts = np.empty((n, n_verts, 3))
    for i in range(n):
        yaw = rng.uniform(-1.0, 1.0)
        c, s = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        face = template + rng.normal(0, 0.05, template.shape)  # per-face shape changes: W identifiable
        verts[i] = face @ rot.T * rng.uniform(20, 50) + [60, 60, rng.uniform(-30, 30)]
    lm = apply_blend68(w_true, verts)  # labels: z centred on the 68 points, mesh z elsewhere
    weights = np.ones(n)
    weights[:10] = 0.0  # skipped faces
    lm[:10] += rng.normal(0, 50, lm[:10].shape)  # garbage that weight 0 must keep out
    W = fit_blend68(verts, lm, weights, k=8, ridge=1e-7)
    assert W.shape == (68, n_verts)
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(W, w_true, atol=1e-3)
    assert (np.count_nonzero(W, axis=1) <= 8).all()
    np.testing.assert_allclose(apply_blend68(W, verts[10:]), lm[10:], atol=0.05)
