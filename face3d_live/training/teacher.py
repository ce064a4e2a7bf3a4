"""Shared pieces of the teacher labelling (teacher_landmarker.py, teacher_3ddfa.py): the fixed held-out split,
image sources (tar shards or folders), the two-pass protocol, the failure test, and ``TeacherLabels``, the
in-memory form of a mesh teacher's cache (names, verts (N, V, 3) source px, scores, failed, held_out)."""

from __future__ import annotations

import hashlib
import logging
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


def teacher_two_pass(predict, input_size: int, img: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The teachers' labelling protocol: the whole image, then a crop re-centred on the first mesh (as the
    tracker does). ``predict(crops (1, S, S, 3) uint8) -> (points (1, P, 3) crop px, scores (1,))`` with
    P ≥ 468 (mesh first) → (points (P, 3) image px, first-pass score, second-pass score)."""
    from face3d_live.geometry.crop import CropTransform

    h, w = img.shape[:2]
    ct = CropTransform((w / 2, h / 2), float(max(h, w)), 0.0, input_size)
    scores = []
    for _ in range(2):
        points, s = predict(ct.warp(img)[None])
        pts = ct.to_image(points[0])
        scores.append(float(s[0]))
        ct = CropTransform.around_points(pts, pts[33], pts[263], 1.5, input_size)
    return pts, scores[0], scores[1]


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
