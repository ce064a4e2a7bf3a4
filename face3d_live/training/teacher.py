"""Teacher labels: the MediaPipe mesh of every training crop, cached on disk and re-used between runs.

One cache file per source (a tar shard or an image folder): ``<cache>/<source>.npz`` with
``names`` (N,), ``verts`` (N, 468, 3) float32 in the source image's pixels (z same scale),
``score`` (N,) presence of the second pass, ``score1`` (N,) of the first, ``failed`` (N,) bool
(the record of crops the teacher failed on: low presence or a degenerate mesh), ``held_out`` (N,) bool
(the fixed 10 % split by file name) and ``source`` (the tar or folder path it was made from).
Labelling runs in ``workers`` processes, each taking every k-th image.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from face3d_live.errors import SourceError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_TEACHER_SCORE = 0.5  # below: the teacher did not see a face (its own presence flag)
HELD_OUT_PERCENT = 10


def is_held_out(name: str, percent: int = HELD_OUT_PERCENT) -> bool:
    """Fixed split by file name: a stable hash (not Python's salted hash()) modulo 100."""
    h = int.from_bytes(hashlib.sha1(Path(name).name.encode()).digest()[:4], "little")
    return h % 100 < percent


def iter_source(source: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(file name, RGB uint8) of every image in a tar shard or a folder (recursively, sorted)."""
    from face3d_live.training.data import iter_tar_images

    source = Path(source)
    if source.is_file() and source.name.endswith(".tar"):
        yield from iter_tar_images(source)
        return
    if not source.is_dir():
        raise SourceError(f"{source}: not a .tar shard or a folder of images")
    for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            yield str(path.relative_to(source)), cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def degenerate(verts: np.ndarray, shape: tuple[int, int]) -> bool:
    """A mesh that cannot be a face in this crop: tiny, or mostly outside the image."""
    lo, hi = verts[:, :2].min(0), verts[:, :2].max(0)
    size = float((hi - lo).max())
    h, w = shape
    inside = (
        (verts[:, 0] > -0.1 * w)
        & (verts[:, 0] < 1.1 * w)
        & (verts[:, 1] > -0.1 * h)
        & (verts[:, 1] < 1.1 * h)
    )
    return size < 0.15 * max(h, w) or inside.mean() < 0.8


def teacher_two_pass(model, img: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The teacher as canonical_mesh.teacher_mesh runs it (whole crop, then a crop re-centred on the first
    mesh, as the tracker does) → (vertices (468, 3) image px, first-pass score, second-pass score)."""
    from face3d_live.geometry.crop import CropTransform

    h, w = img.shape[:2]
    ct = CropTransform((w / 2, h / 2), float(max(h, w)), 0.0, model.input_size)
    scores = []
    for _ in range(2):
        v, s = model.predict(ct.warp(img)[None])
        verts = ct.to_image(v[0])
        scores.append(float(s[0]))
        ct = CropTransform.around_points(verts, verts[33], verts[263], 1.5, model.input_size)
    return verts, scores[0], scores[1]


_COUNTER = None


def _init_worker(counter) -> None:
    global _COUNTER
    _COUNTER = counter


def _label_worker(
    args: tuple[str, int, int, int],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list]:
    source, worker, workers, limit = args
    from face3d_live.models.mediapipe_mesh import MediaPipeMeshModel

    model = MediaPipeMeshModel(num_threads=1)
    names, verts, scores, scores1, shapes = [], [], [], [], []
    for i, (name, img) in enumerate(iter_source(Path(source))):
        if limit and i >= limit:
            break
        if i % workers != worker:
            continue
        v, s1, s = teacher_two_pass(model, img)
        if _COUNTER is not None and len(names) % 20 == 0:
            with _COUNTER.get_lock():
                _COUNTER.value += 20
        names.append(name)
        verts.append(v.astype(np.float32))
        scores.append(s)
        scores1.append(s1)
        shapes.append(img.shape[:2])
    model.close()
    return (
        names,
        np.asarray(verts, np.float32).reshape(-1, 468, 3),
        np.float32(scores),
        np.float32(scores1),
        shapes,
    )


@dataclass(frozen=True)
class TeacherLabels:
    """Cached teacher labels of one source (see module docstring)."""

    names: np.ndarray
    verts: np.ndarray
    score: np.ndarray
    score1: np.ndarray
    failed: np.ndarray
    held_out: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.names)

    def index(self) -> dict[str, int]:
        return {str(n): i for i, n in enumerate(self.names)}


def cache_path(cache_dir: Path, source: Path) -> Path:
    source = Path(source)
    stem = source.name[:-4] if source.name.endswith(".tar") else source.name
    return Path(cache_dir) / f"teacher-{stem}.npz"


def save_compact(labels: TeacherLabels, path: Path) -> Path:
    """The same labels in ~1/4 of the size (to ship to a training machine): vertices as uint8 steps of
    each mesh's own x/y/z range (max error range/510, ≈ 0.2 px on a 120 px crop: far below teacher noise)."""
    v = labels.verts.astype(np.float32)
    lo = v.min(1)
    step = np.maximum(v.max(1) - lo, 1e-6) / 255.0
    q = np.round((v - lo[:, None]) / step[:, None]).astype(np.uint8)
    np.savez(
        path, names=labels.names, q=q, lo=lo, step=step, score=labels.score, score1=labels.score1,
        failed=labels.failed, held_out=labels.held_out, source=labels.source,
    )  # fmt: skip
    return Path(path)


def load_labels(path: Path) -> TeacherLabels:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "q" in z.files:
                verts = z["lo"][:, None] + z["q"].astype(np.float32) * z["step"][:, None]
            else:
                verts = z["verts"]
            return TeacherLabels(
                names=z["names"],
                verts=verts,
                score=z["score"],
                score1=z["score1"],
                failed=z["failed"],
                held_out=z["held_out"],
                source=str(z["source"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise SourceError(f"teacher label cache {path} is unreadable ({exc}); delete it to relabel") from exc


def label_source(
    source: Path,
    cache_dir: Path,
    workers: int = 2,
    limit: int = 0,
    force: bool = False,
    progress: bool = True,
) -> TeacherLabels:
    """Teacher-label every image of ``source`` once; later calls load the cache."""
    out = cache_path(cache_dir, source)
    if out.exists() and not force:
        labels = load_labels(out)
        if not limit or len(labels) == limit:
            return labels
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(str(source), w, workers, limit) for w in range(workers)]
    if workers == 1:
        parts = [_label_worker(jobs[0])]
    else:
        ctx = mp.get_context("spawn")  # the tflite interpreter does not survive fork
        counter = ctx.Value("i", 0)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
            parts = _with_progress(pool.map_async(_label_worker, jobs), source, counter, progress)
    names = [n for p in parts for n in p[0]]
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    verts = np.concatenate([p[1] for p in parts])[order]
    score = np.concatenate([p[2] for p in parts])[order]
    score1 = np.concatenate([p[3] for p in parts])[order]
    shapes = [s for p in parts for s in p[4]]
    shapes = [shapes[i] for i in order]
    names = np.array([names[i] for i in order])
    failed = np.array([s < MIN_TEACHER_SCORE or degenerate(v, sh) for v, s, sh in zip(verts, score, shapes)])
    held = np.array([is_held_out(str(n)) for n in names])
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        names=names,
        verts=verts,
        score=score,
        score1=score1,
        failed=failed,
        held_out=held,
        source=str(source),
    )
    tmp.replace(out)
    log.info(
        "teacher labels: %s: %d images, %d failed, %d held out", out, len(names), failed.sum(), held.sum()
    )
    return load_labels(out)


def _with_progress(result, source: Path, counter, progress: bool) -> list:
    """Wait for the pool, showing a tqdm bar fed by the workers' shared image counter."""
    from tqdm import tqdm

    with tqdm(desc=f"teacher {Path(source).name}", disable=not progress, unit="img") as bar:
        while not result.ready():
            result.wait(1.0)
            bar.update(counter.value - bar.n)
    return result.get()
