"""One-command training: teacher-label every source (cached), fit the AFLW point map, train, export.

A *data dir* holds sources: ``*.tar`` shards and/or image folders, plus optional AFLW label files
(``aflw_list.txt``, ``aflw_pts21.npy``, ``aflw_roi_box.npy``, ``aflw_yaw.npy``; as in ../shared/data/faces).
Teacher labels live in the cache dir (``teacher-<source>.npz``); ``pack()`` writes a compact copy of them
plus the sources into folders of at most ~60 MB each, to ship to a training machine with no mediapipe.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from face3d_live.errors import SourceError
from face3d_live.training import points21
from face3d_live.training.dataset import TrainData, load_source
from face3d_live.training.teacher import cache_path, label_source, load_labels, save_compact

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


def label_all(data_dir: Path, cache_dir: Path, workers: int = 2, limit: int = 0) -> list[tuple[Path, Path]]:
    """Teacher-label every source (skips cached ones) → [(source, cache file)]."""
    out = []
    for src in find_sources(data_dir):
        label_source(src, cache_dir, workers=workers, limit=limit)
        out.append((src, cache_path(cache_dir, src)))
    return out


def load_all(
    data_dir: Path, cache_dir: Path, canvas: int = 128, limit: int = 0, threads: int = 8
) -> TrainData:
    """Decode every labelled source into one TrainData (sources without a cache are skipped)."""
    aflw = load_aflw(data_dir)
    jobs = []
    for src in find_sources(data_dir):
        cp = cache_path(cache_dir, src)
        if not cp.exists():
            log.warning("no teacher labels for %s in %s: skipped (run the labelling first)", src, cache_dir)
            continue
        jobs.append((src, cp))
    if not jobs:
        raise SourceError(f"no teacher-labelled sources in {data_dir} (cache {cache_dir})")
    with ThreadPoolExecutor(max(1, min(threads, len(jobs)))) as pool:
        parts = list(pool.map(lambda j: load_source(j[0], load_labels(j[1]), aflw, canvas, limit), jobs))
    return TrainData.concat(parts)


def fit_map(data: TrainData, out: Path = points21.MAP_PATH) -> np.ndarray:
    """Fit the AFLW-21 map on confident, not too profile teacher meshes of the training split."""
    yaw = np.abs(np.nan_to_num(data.yaw, nan=90.0))
    sel = data.teacher_ok & ~data.held_out & (yaw < 50) & ~np.isnan(data.points[..., 0]).all(1)
    if sel.sum() < 50:
        raise SourceError(f"only {sel.sum()} AFLW-annotated confident crops: cannot fit the landmark map")
    W, nearest, err = points21.fit_mapping(data.verts[sel], data.points[sel])
    points21.save_mapping(W, nearest, err, out)
    log.info(
        "AFLW map from %d crops: nearest %s, fit error %% %s",
        sel.sum(),
        nearest.tolist(),
        np.round(100 * err, 2).tolist(),
    )
    return W


def pack(data_dir: Path, cache_dir: Path, out_dir: Path, budget_mb: float = 60.0) -> list[Path]:
    """Group sources + compact labels + AFLW files into folders out_dir/partN of ≤ budget_mb each."""
    data_dir = Path(data_dir)
    items: list[tuple[Path, str]] = []  # (file to copy, name there)
    faces = data_dir / "faces" if (data_dir / "faces").is_dir() else data_dir
    for f in AFLW_FILES:
        if (faces / f).exists():
            items.append((faces / f, f))
    tmp = Path(out_dir) / "_labels"
    tmp.mkdir(parents=True, exist_ok=True)
    for src in find_sources(data_dir):
        if not src.is_file():
            raise SourceError(f"pack ships tar shards only; tar the folder {src} first")
        cp = cache_path(cache_dir, src)
        compact = save_compact(load_labels(cp), tmp / cp.name)
        items += [(src, src.name), (compact, compact.name)]
    items.sort(key=lambda it: -it[0].stat().st_size)
    parts: list[list[tuple[Path, str]]] = []
    sizes: list[float] = []
    for path, name in items:  # first fit, largest first
        mb = path.stat().st_size / 1e6
        for i, s in enumerate(sizes):
            if s + mb <= budget_mb:
                parts[i].append((path, name))
                sizes[i] += mb
                break
        else:
            parts.append([(path, name)])
            sizes.append(mb)
    dirs = []
    for i, part in enumerate(parts):
        d = Path(out_dir) / f"part{i}"
        d.mkdir(parents=True, exist_ok=True)
        for path, name in part:
            shutil.copyfile(path, d / name)
        dirs.append(d)
        log.info("%s: %.1f MB: %s", d, sizes[i], [n for _, n in part])
    shutil.rmtree(tmp)
    return dirs
