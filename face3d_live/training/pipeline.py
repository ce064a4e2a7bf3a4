"""One-command training: label every source with both teachers (cached), fit the point maps, train, export.

A *data dir* holds sources: ``*.tar`` shards and/or image folders, plus optional AFLW label files
(``aflw_list.txt``, ``aflw_pts21.npy``, ``aflw_roi_box.npy``, ``aflw_yaw.npy``; as in ../shared/data/faces).
Labels live in the cache dir: ``landmarker-<source>.npz`` (478 points + blendshapes, teacher_landmarker.py)
and ``3ddfa-<source>.npz`` (68 points, teacher_3ddfa.py). ``pack.pack_parts`` writes the assembled data as
parts of ≤ 58 MB for a training machine that has neither teacher.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from face3d_live.errors import SourceError
from face3d_live.training import points21
from face3d_live.training.dataset import TrainData, load_source

log = logging.getLogger(__name__)

AFLW_FILES = ("aflw_list.txt", "aflw_pts21.npy", "aflw_roi_box.npy", "aflw_yaw.npy")


def find_sources(data_dir: Path) -> list[Path]:
    """Tar shards and image folders directly under data_dir (or data_dir/faces), sorted."""
    data_dir = Path(data_dir)
    if (data_dir / "faces").is_dir():
        data_dir = data_dir / "faces"
    if not data_dir.is_dir():
        raise SourceError(f"data folder {data_dir} does not exist")
    tars = sorted(data_dir.glob("*.tar"))
    dirs = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not tars and not dirs:
        return [data_dir]  # a plain folder of images
    return tars + dirs


def load_aflw(data_dir: Path):
    """AFLW manual labels if data_dir (or data_dir/faces) has them, else None."""
    from face3d_live.training.data import AflwLabels

    root = Path(data_dir)
    for d in (root, root / "faces"):
        if all((d / f).exists() for f in AFLW_FILES):
            return AflwLabels(
                names=(d / "aflw_list.txt").read_text().split(),
                pts21=np.load(d / "aflw_pts21.npy"),
                roi=np.load(d / "aflw_roi_box.npy"),
                yaw=np.load(d / "aflw_yaw.npy"),
            )
    return None


def label_all_v2(data_dir: Path, cache_dir: Path, limit: int = 0) -> None:
    """Label every source with both teachers (each cached; labelled sources are skipped)."""
    from face3d_live.training import teacher_3ddfa, teacher_landmarker

    aflw = load_aflw(data_dir)
    for src in find_sources(data_dir):
        teacher_landmarker.label_source(src, cache_dir, limit=limit)
        teacher_3ddfa.label_3ddfa(src, cache_dir, aflw=aflw, limit=limit)


def _mesh_labels(cache_dir: Path, src: Path):
    """The 478-point teacher's cache (a ``TeacherLabels`` whose verts are the 478 points)."""
    from face3d_live.training.teacher_landmarker import cache_path, load_labels

    return load_labels(cache_path(cache_dir, src))


def _lm68_labels(cache_dir: Path, src: Path) -> dict[str, np.ndarray]:
    """The 3D teacher's cache: file name → (68, 3) source px (manual AFLW points already winning)."""
    from face3d_live.training.teacher_3ddfa import cache_path_3ddfa, load_labels_3ddfa

    lab = load_labels_3ddfa(cache_path_3ddfa(cache_dir, src))
    lm = lab.lm68_manual if lab.lm68_manual is not None else lab.lm68
    return {str(n): v for n, v in zip(lab.names, lm)}


def load_all_v2(
    data_dir: Path, cache_dir: Path, canvas: int = 128, limit: int = 0, threads: int = 4
) -> TrainData:
    """Every source with both teachers' caches → one TrainData: 478 points from the mesh teacher, 68 points
    from the 3D teacher with the manual AFLW points winning where they exist."""
    aflw = load_aflw(data_dir)
    sources = find_sources(data_dir)

    def load(src: Path) -> TrainData:
        return load_source(
            src, _mesh_labels(cache_dir, src), aflw, canvas, limit, lm68=_lm68_labels(cache_dir, src)
        )

    with ThreadPoolExecutor(max(1, min(threads, len(sources)))) as pool:
        data = TrainData.concat(list(pool.map(load, sources)))
    with warnings.catch_warnings():  # rows without a label are all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        data.lm68[..., 2] -= np.nanmean(data.lm68[..., 2], axis=1, keepdims=True)
    return data


BLENDS_PATH = Path(__file__).resolve().with_name("blends_iris.npz")


def fit_blends(data: TrainData) -> tuple[np.ndarray, np.ndarray]:
    """Fit the learned blends of mesh vertices on the training split's confident, not too profile teacher
    meshes: W68 (68, 468) against the 68-point labels (saved as the shipped ``assets/blend68.npz``) and
    W_iris (10, 468) against the teacher's iris (``training/blends_iris.npz``: starts the iris head)."""
    from face3d_live.geometry.landmarks68 import BLEND68_PATH, blend_matrix
    from face3d_live.training.blend68 import fit_blend68

    yaw = np.abs(np.nan_to_num(data.yaw, nan=0.0))
    sel = data.teacher_ok & ~data.held_out & (yaw < 45)
    has68 = sel & ~np.isnan(data.lm68[..., 0]).any(1)
    if has68.sum() < 100:
        raise SourceError(f"only {has68.sum()} confident crops with 68-point labels: cannot fit the blends")
    mesh = data.verts[:, :468]
    w = np.ones(int(has68.sum()), np.float32)
    W68 = fit_blend68(mesh[has68], data.lm68[has68], w)
    W_iris = fit_blend68(mesh[sel], data.verts[sel, 468:], np.ones(int(sel.sum()), np.float32))
    BLEND68_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez(BLEND68_PATH, W=W68.astype(np.float32))
    np.savez(BLENDS_PATH, W_iris=W_iris.astype(np.float32))
    blend_matrix.cache_clear()
    log.info("blends fitted on %d / %d crops -> %s, %s", has68.sum(), sel.sum(), BLEND68_PATH, BLENDS_PATH)
    return W68, W_iris


def load_blends() -> tuple[np.ndarray | None, np.ndarray | None]:
    """(W68, W_iris) as fitted by ``fit_blends`` (None where not fitted yet)."""
    from face3d_live.geometry.landmarks68 import BLEND68_PATH, blend_matrix

    W68 = blend_matrix() if BLEND68_PATH.is_file() else None
    W_iris = np.load(BLENDS_PATH)["W_iris"] if BLENDS_PATH.is_file() else None
    return W68, W_iris


def fit_map(data: TrainData, out: Path = points21.MAP_PATH) -> np.ndarray:
    """Fit the AFLW-21 map on confident, not too profile teacher meshes of the training split."""
    yaw = np.abs(np.nan_to_num(data.yaw, nan=90.0))
    sel = data.teacher_ok & ~data.held_out & (yaw < 50) & ~np.isnan(data.points[..., 0]).all(1)
    if sel.sum() < 50:
        raise SourceError(f"only {sel.sum()} AFLW-annotated confident crops: cannot fit the landmark map")
    W, nearest, err = points21.fit_mapping(data.verts[sel, :468], data.points[sel])
    points21.save_mapping(W, nearest, err, out)
    log.info(
        "AFLW map from %d crops: nearest %s, fit error %% %s",
        sel.sum(),
        nearest.tolist(),
        np.round(100 * err, 2).tolist(),
    )
    return W
