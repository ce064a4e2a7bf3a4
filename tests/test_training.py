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
    """Teacher labels of the first 12 crops of shard 0, cached in a temp folder."""
    from face3d_live.training.teacher import label_source

    cache = tmp_path_factory.mktemp("teacher")
    label_source(faces_dir / "aflw_crops-00.tar", cache, workers=1, limit=12, progress=False)
    return faces_dir / "aflw_crops-00.tar", cache


@pytest.fixture(scope="module")
def data(labelled, faces_dir: Path):
    from face3d_live.training.data import load_aflw_labels
    from face3d_live.training.dataset import load_source
    from face3d_live.training.teacher import cache_path, load_labels

    src, cache = labelled
    return load_source(src, load_labels(cache_path(cache, src)), load_aflw_labels(faces_dir.parent))


def test_teacher_cache_round_trip(labelled) -> None:
    from face3d_live.models.mediapipe_mesh import MediaPipeMeshModel
    from face3d_live.training.teacher import (
        cache_path,
        iter_source,
        label_source,
        load_labels,
        save_compact,
        teacher_two_pass,
    )

    src, cache = labelled
    path = cache_path(cache, src)
    labels = load_labels(path)
    assert len(labels) == 12 and labels.verts.shape == (12, 468, 3)
    mtime = path.stat().st_mtime_ns
    again = label_source(src, cache, workers=1, limit=12, progress=False)  # served from the cache
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.verts, labels.verts)
    # the cached mesh is what the teacher says about that very crop
    name, img = next(iter_source(src))
    i = labels.index()[name]
    model = MediaPipeMeshModel()
    v, _, s = teacher_two_pass(model, img)
    np.testing.assert_allclose(labels.verts[i], v, atol=1e-3)
    assert labels.score[i] == pytest.approx(s, abs=1e-5)
    assert labels.failed.dtype == bool and labels.failed[i] == (s < 0.5)
    # the compact copy shipped to the training machine is within 0.5 px
    compact = load_labels(save_compact(labels, cache / "compact.npz"))
    assert np.abs(compact.verts - labels.verts).max() < 0.5
    np.testing.assert_array_equal(compact.names, labels.names)


def test_split_is_deterministic_and_disjoint(faces_dir: Path, labelled) -> None:
    from face3d_live.training.teacher import cache_path, is_held_out, load_labels

    names = (faces_dir / "aflw_list.txt").read_text().split()
    held = np.array([is_held_out(n) for n in names])
    assert np.array_equal(held, [is_held_out(n) for n in names])
    assert 0.08 < held.mean() < 0.12
    train, test = {n for n, h in zip(names, held) if not h}, {n for n, h in zip(names, held) if h}
    assert not train & test and len(train) + len(test) == len(set(names))
    src, cache = labelled
    labels = load_labels(cache_path(cache, src))
    assert [is_held_out(str(n)) for n in labels.names] == labels.held_out.tolist()


def _batch(data, flip: bool, idx: np.ndarray):
    from face3d_live.geometry.mesh import mirror_indices
    from face3d_live.training.augment import crop_matrices, transform_points, warp
    from face3d_live.training.points21 import AFLW_MIRROR

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    c = t(data.mesh_crop[idx])
    m = crop_matrices(c[:, :2], c[:, 2], c[:, 3] + 0.3, torch.full((len(idx),), flip))
    img = warp(t(data.images[idx]), m)
    v = transform_points(m, t(data.verts[idx]))
    p = transform_points(m, t(data.points[idx]))
    if flip:
        v, p = v[:, torch.from_numpy(mirror_indices().astype(np.int64))], p[:, torch.from_numpy(AFLW_MIRROR)]
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
    from face3d_live.geometry.mesh import mirror_indices

    return torch.from_numpy(mirror_indices().astype(np.int64))


def test_augmented_labels_match_the_teacher_on_the_augmented_crop(data) -> None:
    """The warped crop's labels are where the teacher itself finds the face in that crop."""
    import cv2

    from face3d_live.models.mediapipe_mesh import MediaPipeMeshModel

    idx = np.flatnonzero(data.teacher_ok)[:3]
    img, v, _ = _batch(data, True, idx)
    model = MediaPipeMeshModel()
    crops = (img.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    crops = np.stack([cv2.resize(c, (192, 192), interpolation=cv2.INTER_AREA) for c in crops])
    pred, _ = model.predict(crops)
    pred = pred[..., :2] * (224 / 192)
    err = np.linalg.norm(pred - v[..., :2].numpy(), axis=-1).mean(1) / 224
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
    total, _ = trainer.loss(trainer.model(batch.images), batch)
    total.backward()
    trainer.opt.step()
    assert loss() < before
    trainer.save_checkpoint()
    assert trainer.checkpoint_path().is_file()


def test_eval_writes_json_fields(faces_dir: Path, tmp_path: Path) -> None:
    from face3d_live.cli import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--data", str(faces_dir.parent), "--limit", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 3 and set(result["models"]) == {"r50", "mediapipe"}
    for r in result["models"].values():
        for key in ("nme_0_30", "nme_30_60", "nme_60_90", "nme_mean", "failure_rate", "median_ms_per_image"):
            assert key in r
    assert "all_teacher_found" in result["r50_vs_teacher_vertex_distance_pct"]
    assert isinstance(result["r50_beats_teacher"], bool)
