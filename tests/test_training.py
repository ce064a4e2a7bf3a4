"""Training pipeline on real AFLW crops: teacher-label cache, split, augmentation, a training step, eval.

Needs ../shared/data (skips without it). CPU only; a few real crops each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def faces_dir() -> Path:
    from face3d_live.training.data import default_data_dir

    d = default_data_dir() / "faces"
    if not (d / "aflw_crops-00.tar").is_file():
        pytest.skip(f"shared face data not found at {d}")
    return d


@pytest.fixture(scope="module")
def labelled(faces_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """Both teachers' labels (478 points + blendshapes, 3D 68 points) of the first 12 crops of shard 0."""
    from face3d_live.training import teacher_3ddfa, teacher_landmarker
    from face3d_live.training.data import load_aflw_labels

    if not teacher_landmarker.default_task_path().is_file() or not teacher_3ddfa.teachers_dir().is_dir():
        pytest.skip("teacher models (../shared/teachers) not found")
    cache = tmp_path_factory.mktemp("teacher")
    src = faces_dir / "aflw_crops-00.tar"
    teacher_landmarker.label_source(src, cache, limit=12, progress=False)
    teacher_3ddfa.label_3ddfa(src, cache, aflw=load_aflw_labels(faces_dir.parent), limit=12, progress=False)
    return src, cache


@pytest.fixture(scope="module")
def data(labelled, faces_dir: Path):
    from face3d_live.training.data import load_aflw_labels
    from face3d_live.training.dataset import load_source
    from face3d_live.training.pipeline import _lm68_labels, _mesh_labels

    src, cache = labelled
    return load_source(
        src, _mesh_labels(cache, src), load_aflw_labels(faces_dir.parent), lm68=_lm68_labels(cache, src)
    )


def test_both_teachers_label_every_crop(labelled, data) -> None:
    from face3d_live.training.teacher_landmarker import cache_path, label_source

    src, cache = labelled
    path = cache_path(cache, src)
    mtime = path.stat().st_mtime_ns
    label_source(src, cache, limit=12, progress=False)  # served from the cache
    assert path.stat().st_mtime_ns == mtime
    assert data.verts.shape == (12, 478, 3) and data.lm68.shape == (12, 68, 3)
    assert np.isfinite(data.lm68).all()
    ok = data.teacher_ok
    assert ok.sum() >= 8
    # both teachers put the face in the same place: their eye and mouth corners agree within 8 % of the
    # crop (frontal crops; they disagree most on the jaw, which is what the 68-point labels are for)
    from face3d_live.geometry.mesh import LANDMARKS68

    front = ok & (np.abs(data.yaw) < 30)
    corners = [36, 39, 42, 45, 48, 54]
    d = np.linalg.norm(
        data.verts[front][:, LANDMARKS68[corners], :2] - data.lm68[front][:, corners, :2], axis=-1
    )
    assert front.any() and (d.mean(1) / data.shape[front, 0] < 0.08).all(), d.mean(1)


def test_split_is_deterministic_and_disjoint(faces_dir: Path, data) -> None:
    from face3d_live.training.teacher import is_held_out

    names = (faces_dir / "aflw_list.txt").read_text().split()
    held = np.array([is_held_out(n) for n in names])
    assert np.array_equal(held, [is_held_out(n) for n in names])
    assert 0.08 < held.mean() < 0.12
    train, test = {n for n, h in zip(names, held) if not h}, {n for n, h in zip(names, held) if h}
    assert not train & test and len(train) + len(test) == len(set(names))
    assert [is_held_out(str(n)) for n in data.names] == data.held_out.tolist()


def _batch(data, flip: bool, idx: np.ndarray):
    from face3d_live.training.augment import crop_matrices, transform_points, warp
    from face3d_live.training.points21 import AFLW_MIRROR

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    c = t(data.mesh_crop[idx])
    m = crop_matrices(c[:, :2], c[:, 2], c[:, 3] + 0.3, torch.full((len(idx),), flip))
    img = warp(t(data.images[idx]), m)
    v = transform_points(m, t(np.concatenate([data.verts[idx], data.lm68[idx]], 1)))
    p = transform_points(m, t(data.points[idx]))
    if flip:
        v, p = v[:, _mirror()], p[:, torch.from_numpy(AFLW_MIRROR)]
    return img, v, p


def test_augmentation_flip_is_an_exact_label_transform(data) -> None:
    idx = np.flatnonzero(data.teacher_ok)[:4]
    img, v, p = _batch(data, False, idx)
    img_f, v_f, p_f = _batch(data, True, idx)
    # the flipped crop is the mirror image of the plain crop ...
    assert torch.abs(img_f - img.flip(-1)).max() < 2e-3
    # ... and its labels are the plain labels mirrored (x → 223 − x) and re-indexed left ↔ right
    np.testing.assert_allclose(v_f[..., 0], 223.0 - v[..., 0][:, _mirror()], atol=1e-3)
    np.testing.assert_allclose(v_f[..., 1:], v[..., 1:][:, _mirror()], atol=1e-3)
    ok = ~torch.isnan(p_f[..., 0])
    from face3d_live.training.points21 import AFLW_MIRROR

    pm = p[:, torch.from_numpy(AFLW_MIRROR)]
    np.testing.assert_allclose(p_f[..., 0][ok], 223.0 - pm[..., 0][ok], atol=1e-3)


def _mirror() -> torch.Tensor:
    """The training's mirror map of the 478 points + 68 points."""
    from face3d_live.geometry.landmarks68 import MIRROR68
    from face3d_live.geometry.mesh import mirror_indices_478

    return torch.from_numpy(np.concatenate([mirror_indices_478(), 478 + MIRROR68]).astype(np.int64))


def test_augmented_labels_match_the_teacher_on_the_augmented_crop(data) -> None:
    """The warped crop's labels are where the teacher itself finds the face in that crop."""
    import cv2

    from face3d_live.training.teacher_landmarker import LandmarkerTeacher

    idx = np.flatnonzero(data.teacher_ok)[:3]
    img, v, _ = _batch(data, True, idx)
    model = LandmarkerTeacher()
    crops = (img.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    crops = np.stack([cv2.resize(c, (256, 256), interpolation=cv2.INTER_LINEAR) for c in crops])
    pred, _ = model.predict(crops)
    pred = pred[..., :2] * (224 / 256)
    # the flipped crop's labels (mesh and iris, re-indexed) are where the teacher finds them in that crop
    err = np.linalg.norm(pred - v[:, :478, :2].numpy(), axis=-1).mean(1) / 224
    assert (err < 0.03).all(), err


def test_points21_is_affine_and_symmetric() -> None:
    from face3d_live.geometry.mesh import mirror_indices
    from face3d_live.training.points21 import AFLW_MIRROR, load_mapping

    W = load_mapping()
    assert W.shape == (21, 468)
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-5)
    Wm = np.zeros_like(W)
    Wm[:, mirror_indices()] = W
    np.testing.assert_allclose(Wm[AFLW_MIRROR], W, atol=1e-5)


def test_one_training_step_lowers_the_loss(data, tmp_path: Path) -> None:
    from face3d_live.training.points21 import load_mapping
    from face3d_live.training.train import TrainConfig, Trainer

    data.held_out[:] = False
    trainer = Trainer(TrainConfig(batch=3, lr=1e-3, steps=10), data, load_mapping(), tmp_path, "cpu")
    trainer._setup()
    trainer.total_steps = 10
    idx = trainer.train_idx[:3]
    batch = trainer.batch(idx, train=False)
    trainer.model.train()

    def loss() -> float:
        with torch.no_grad():
            return float(trainer.loss(trainer.model(batch.images), batch)[0])

    before = loss()
    for g in trainer.opt.param_groups:
        g["lr"] = 1e-5  # Adam's first step moves every weight by lr: keep it small
    trainer.opt.zero_grad()
    total, parts = trainer.loss(trainer.model(batch.images), batch)
    assert set(parts) == {"teacher", "lm68", "mesh68", "manual", "presence"}  # every head is trained
    assert all(torch.isfinite(v) for v in parts.values())
    total.backward()
    trainer.opt.step()
    assert loss() < before
    trainer.save_checkpoint()
    assert trainer.checkpoint_path().is_file()


def test_eval_writes_json_fields(faces_dir: Path, labelled, tmp_path: Path) -> None:
    """End to end on a small data folder: 3 held-out AFLW crops, labelled by both teachers, evaluated with the
    v2 measures (68 points, iris, blendshapes)."""
    import tarfile

    from face3d_live.cli import main
    from face3d_live.training import teacher_3ddfa, teacher_landmarker
    from face3d_live.training.data import load_aflw_labels
    from face3d_live.training.teacher import is_held_out

    data = tmp_path / "data"
    (data / "faces").mkdir(parents=True)
    for f in ("aflw_list.txt", "aflw_pts21.npy", "aflw_roi_box.npy", "aflw_yaw.npy"):
        (data / "faces" / f).symlink_to(faces_dir / f)
    shard = data / "faces" / "aflw_crops-00.tar"
    with tarfile.open(faces_dir / "aflw_crops-00.tar") as src, tarfile.open(shard, "w") as dst:
        kept = 0
        for m in src:
            if m.isfile() and is_held_out(Path(m.name).name) and kept < 3:
                dst.addfile(m, src.extractfile(m))
                kept += 1
    cache = tmp_path / "cache"
    teacher_landmarker.label_source(shard, cache, progress=False)
    teacher_3ddfa.label_3ddfa(shard, cache, aflw=load_aflw_labels(faces_dir.parent), progress=False)
    out = (
        tmp_path / "not-made-yet" / "eval.json"
    )  # the JSON's folder is made (a long run must not end in an error)
    args = ["eval", "--data", str(data), "--cache", str(cache), "--no-videos", "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    plain = tmp_path / "eval-no-flip.json"  # photos without the mirror averaging: other numbers
    assert main([*args[:-2], "--models", "r50", "--no-flip", "--json", str(plain)]) == 0
    assert json.loads(plain.read_text())["models"]["r50"]["nme68"] != result["models"]["r50"]["nme68"]
    lighter = tmp_path / "eval-first-pass.json"  # the first pass by the INT8 rung: its own numbers, named
    assert main([*args[:-2], "--models", "r50", "--first-pass", "r50-int8", "--json", str(lighter)]) == 0
    first = json.loads(lighter.read_text())["models"]["r50"]
    assert first["first_pass"] == "r50-int8" and result["models"]["r50"]["first_pass"] == "r50"
    assert first["nme68"] != result["models"]["r50"]["nme68"]
    # the service's path: the detector's box, one pass
    detected = tmp_path / "eval-detect.json"
    argv = [*args[:-2], "--models", "r50", "--box", "detect", "--passes", "1", "--json", str(detected)]
    assert main(argv) == 0
    one = json.loads(detected.read_text())
    assert one["box"] == "detect" and one["models"]["r50"]["passes"] == 1 and one["n"] == 3
    assert one["models"]["r50"]["nme_mean"] < 10 and one["models"]["r50"]["not_found_rate"] < 1
    assert result["n"] == 3 and set(result["models"]) == {"r50", "mediapipe"}
    for r in result["models"].values():
        for key in ("nme_0_30", "nme_30_60", "nme_60_90", "nme_mean", "failure_rate", "median_ms_per_image"):
            assert key in r
        assert 0 < r["nme68"]["all"] < 20  # 68 points against the 3D labels, % of the label box
        assert r["iris_error_pct_iod"]["n"] == 0 or 0 < r["iris_error_pct_iod"]["centres"] < 30
        assert 0 <= r["blendshapes_crops"]["mae"] < 0.2
        assert 0 < r["nme68_manual16"]["all"] < 20  # against the manual points no teacher made
    ref = result["reference_3ddfa_v2"]["nme68_manual16"]  # 3DDFA_V2 itself on the same crops
    assert 0 < ref["all"] < 20 and ref["all"] != result["models"]["r50"]["nme68_manual16"]["all"]
    assert "all_teacher_found" in result["r50_vs_teacher_vertex_distance_pct"]
    assert isinstance(result["r50_beats_teacher"], bool)
