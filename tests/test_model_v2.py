"""r50 v2: the output layout, v1 files refused, widening a v1 head, the data parts, the CPU default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _small_r50(rows: int | None = None):
    from face3d_live.models.r50 import FaceR50

    model = FaceR50(width=8, blocks=(1, 1, 1, 1)).eval()
    if rows is not None:  # a v1-shaped head
        model.head = torch.nn.Linear(model.head.in_features, rows)
    return model


def test_layout_splits_points_68_and_presence() -> None:
    from face3d_live.models.layout import NUM_POINTS, OUTPUT_DIM, decode

    out = np.zeros((2, OUTPUT_DIM), np.float32)
    out[:, : NUM_POINTS * 3] = 0.5  # every point at the crop centre
    out[:, NUM_POINTS * 3 : -1] = 0.25
    out[1, -1] = 10.0
    dec = decode(out, 224)
    assert dec.vertices.shape == (2, 468, 3) and dec.iris.shape == (2, 10, 3)
    assert dec.landmarks68.shape == (2, 68, 3) and dec.scores.shape == (2,)
    assert (
        np.allclose(dec.vertices, 112.0)
        and np.allclose(dec.iris, 112.0)
        and np.allclose(dec.landmarks68, 56.0)
    )
    assert dec.scores[0] == pytest.approx(0.5) and dec.scores[1] > 0.99
    with pytest.raises(ValueError, match="1639"):
        decode(np.zeros((1, 1405), np.float32))


def test_non_finite_rows_read_as_no_face(caplog) -> None:
    """A row with NaN / inf (a broken backend) decodes as 'no face' with finite geometry and one warning;
    the other rows are untouched, and a huge logit does not overflow the sigmoid."""
    from face3d_live.models.layout import OUTPUT_DIM, decode

    out = np.full((3, OUTPUT_DIM), 0.5, np.float32)
    out[:, -1] = (4.0, 3.0, -1e4)
    out[1, 7] = np.nan
    out[1, -1] = np.inf
    with np.errstate(all="raise"):  # no overflow or invalid value inside decode
        dec = decode(out, 224)
    assert np.isfinite(dec.vertices).all() and np.isfinite(dec.landmarks68).all()
    assert dec.scores[1] < 1e-20 and dec.scores[2] < 1e-20 and dec.scores[0] > 0.98
    assert np.allclose(dec.vertices[[0, 2]], 112.0)
    assert "not finite for 1 of 3" in caplog.text


def test_v1_weights_are_a_clear_error(tmp_path: Path) -> None:
    from face3d_live.errors import ModelError
    from face3d_live.models.r50_face import build_r50, save_r50

    path = tmp_path / "v1.safetensors"
    save_r50(_small_r50(rows=1405), path)
    with pytest.raises(ModelError, match="v1 file .*no iris or 68-point head"):
        build_r50(path)
    v2 = tmp_path / "v2.safetensors"
    save_r50(_small_r50(), v2)
    assert build_r50(v2).head.out_features == 1639


def test_widening_a_v1_head_keeps_its_mesh_and_blends_the_new_points(tmp_path: Path) -> None:
    from face3d_live.geometry.landmarks68 import blend_matrix
    from face3d_live.models.r50_face import save_r50
    from face3d_live.training.train import head_blend, init_from_trained

    v1 = _small_r50(rows=1405)
    path = tmp_path / "v1.safetensors"
    save_r50(v1, path)
    v2 = _small_r50()
    W68 = blend_matrix()
    init_from_trained(v2, path, head_blend(W68))
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        a, b = v1(x), v2.float()(x)
    mesh_a = a[:, :-1].reshape(2, 468, 3)
    mesh_b = b[:, : 478 * 3].reshape(2, 478, 3)
    tol = dict(atol=2e-3, rtol=2e-3)  # the file is FP16
    torch.testing.assert_close(mesh_b[:, :468], mesh_a, **tol)
    lm = b[:, 478 * 3 : -1].reshape(2, 68, 3)
    torch.testing.assert_close(lm, torch.einsum("kv,nvd->nkd", torch.from_numpy(W68), mesh_a), **tol)
    iris = mesh_b[:, 468:]  # default iris blend: the middle of each eye's corners
    torch.testing.assert_close(iris[:, 0], (mesh_a[:, 33] + mesh_a[:, 133]) / 2, **tol)
    torch.testing.assert_close(b[:, -1], a[:, -1], **tol)


def test_blend68_is_affine_and_mirror_consistent() -> None:
    from face3d_live.geometry.landmarks68 import MIRROR68, blend68, blend_matrix

    W = blend_matrix()
    assert W.shape == (68, 468)
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-4)  # moves with the head at any pose
    assert (MIRROR68[MIRROR68] == np.arange(68)).all()
    v = np.random.default_rng(0).normal(size=(3, 468, 3)).astype(np.float32)
    np.testing.assert_allclose(blend68(v + 5.0), blend68(v) + 5.0, atol=1e-4)


def test_data_parts_round_trip(tmp_path: Path) -> None:
    from face3d_live.training.dataset import TrainData
    from face3d_live.training.pack import load_any, pack_parts

    rng = np.random.default_rng(0)
    n = 30
    ramp = np.linspace(0, 255, 32, dtype=np.float32)  # smooth images: what a lossy codec keeps
    images = (ramp[None, :, None, None] * rng.uniform(0.3, 1.0, (n, 1, 1, 3))).astype(np.uint8)
    data = TrainData(
        images=np.repeat(images, 32, axis=2),
        verts=rng.uniform(0, 32, (n, 478, 3)).astype(np.float32),
        lm68=rng.uniform(0, 32, (n, 68, 3)).astype(np.float32),
        points=np.full((n, 21, 2), np.nan, np.float32),
        yaw=rng.uniform(-90, 90, n).astype(np.float32),
        teacher_ok=rng.random(n) > 0.2,
        mesh_crop=rng.random((n, 4)).astype(np.float32),
        box_crop=rng.random((n, 4)).astype(np.float32),
        held_out=rng.random(n) > 0.8,
        shape=np.full((n, 2), 32, np.float32),
        names=np.array([f"img{i:03d}.jpg" for i in range(n)]),
    )
    paths = pack_parts(data, tmp_path, part_mb=0.02)  # tiny parts: several files
    assert len(paths) > 1
    back = load_any(paths)
    order = np.argsort(back.names)
    back = back.subset(order)
    np.testing.assert_array_equal(back.names, data.names)
    assert np.abs(back.verts - data.verts).max() < 32 / 255  # uint8 steps of each mesh's range
    assert np.abs(back.lm68 - data.lm68).max() < 0.02  # float16
    for f in ("teacher_ok", "held_out", "mesh_crop", "yaw"):
        np.testing.assert_array_equal(getattr(back, f), getattr(data, f))
    assert np.abs(back.images.astype(int) - data.images).mean() < 4  # WebP, lossy


def test_cpu_default_is_the_int8_rung(monkeypatch) -> None:
    from face3d_live.inference import cuda
    from face3d_live.models import registry

    monkeypatch.setattr(cuda, "cuda_status", lambda: "no NVIDIA driver")
    assert registry.default_model() == "r50-int8"
    monkeypatch.setattr(cuda, "cuda_status", lambda: "")
    assert registry.default_model() == "r50"
