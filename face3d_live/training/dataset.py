"""Training set assembly: decoded images in memory + teacher labels + manual AFLW points + base crops.

Sources are tar shards or image folders, each with its teacher-label cache (``teacher.py``). Images are
put on a square canvas of ``canvas`` px (edge-replicated, larger images scaled down) so one uint8 array
holds them all and the GPU warps straight from it. Labels stay in canvas pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from face3d_live.training.points21 import NUM_POINTS
from face3d_live.training.teacher import TeacherLabels, iter_source

log = logging.getLogger(__name__)

EYE_R, EYE_L = 33, 263
MARGIN = 1.5


@dataclass
class TrainData:
    """N samples. images (N, S, S, 3) uint8; verts (N, 478, 3) float32 canvas px (the mesh teacher's 468
    vertices + 10 iris points; zeros where it failed); lm68 (N, 68, 3) float32 canvas px, iBUG-68 in the 3D
    convention (the 3D teacher, manual AFLW points winning; NaN = none; z centred); points (N, 21, 2) manual
    AFLW points (NaN = none); yaw (N,) degrees (NaN = unknown); teacher_ok (N,) bool; mesh_crop / box_crop
    (N, 4) = cx, cy, side, angle; held_out (N,) bool; shape (N, 2) original h, w; names (N,)."""

    images: np.ndarray
    verts: np.ndarray
    lm68: np.ndarray
    points: np.ndarray
    yaw: np.ndarray
    teacher_ok: np.ndarray
    mesh_crop: np.ndarray
    box_crop: np.ndarray
    held_out: np.ndarray
    shape: np.ndarray
    names: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    @staticmethod
    def concat(parts: list[TrainData]) -> TrainData:
        return TrainData(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in TrainData.__dataclass_fields__)
        )

    def subset(self, idx: np.ndarray) -> TrainData:
        return TrainData(*(getattr(self, f)[idx] for f in TrainData.__dataclass_fields__))


def mesh_crops(verts: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    """Vectorised CropTransform.around_points(v, v[33], v[263], margin) → (N, 4) cx, cy, side, angle."""
    v = verts[..., :2].astype(np.float64)
    d = v[:, EYE_L] - v[:, EYE_R]
    angle = np.arctan2(d[:, 1], d[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    qx = v[..., 0] * c[:, None] + v[..., 1] * s[:, None]
    qy = -v[..., 0] * s[:, None] + v[..., 1] * c[:, None]
    mx, my = (qx.min(1) + qx.max(1)) / 2, (qy.min(1) + qy.max(1)) / 2
    side = np.maximum(qx.max(1) - qx.min(1), qy.max(1) - qy.min(1)) * margin
    cx, cy = c * mx - s * my, s * mx + c * my
    return np.stack([cx, cy, np.maximum(side, 1.0), angle], 1).astype(np.float32)


def box_crops(shape: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    """The still-image first pass given the whole source as the box: centre, longer side × margin."""
    h, w = shape[:, 0].astype(np.float32), shape[:, 1].astype(np.float32)
    return np.stack([w / 2, h / 2, np.maximum(w, h) * margin, np.zeros_like(w)], 1)


def to_canvas(img: np.ndarray, canvas: int) -> tuple[np.ndarray, float]:
    """Scale down (if larger) and edge-pad bottom/right to canvas²; returns image and scale factor."""
    h, w = img.shape[:2]
    k = min(1.0, canvas / max(h, w))
    if k < 1.0:
        img = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    h2, w2 = img.shape[:2]
    return np.pad(img, ((0, canvas - h2), (0, canvas - w2), (0, 0)), mode="edge"), k


def load_source(
    source: Path,
    labels: TeacherLabels,
    aflw=None,
    canvas: int = 128,
    limit: int = 0,
    lm68: dict[str, np.ndarray] | None = None,
) -> TrainData:
    """Decode a source's images in label order and attach the labels (AFLW points and 68-point labels,
    source px, by file name)."""
    index = labels.index()
    n = len(labels) if not limit else min(limit, len(labels))
    images = np.zeros((n, canvas, canvas, 3), np.uint8)
    scale = np.ones(n, np.float32)
    shape = np.zeros((n, 2), np.float32)
    seen = np.zeros(n, bool)
    for name, img in iter_source(source):
        i = index.get(name)
        if i is None or i >= n:
            continue
        images[i], scale[i] = to_canvas(img, canvas)
        shape[i] = np.array(img.shape[:2]) * scale[i]
        seen[i] = True
        if seen.all():
            break
    if not seen.all():
        log.warning("%s: %d labelled images missing from the source", source, (~seen).sum())
    verts = labels.verts[:n].astype(np.float32) * scale[:, None, None]
    ok = ~labels.failed[:n] & seen
    lm = np.full((n, 68, 3), np.nan, np.float32)
    for i, nm in enumerate(labels.names[:n]):
        if lm68 is not None and (row := lm68.get(str(nm))) is not None and seen[i]:
            lm[i] = row * scale[i]
    points = np.full((n, NUM_POINTS, 2), np.nan, np.float32)
    yaw = np.full(n, np.nan, np.float32)
    if aflw is not None:
        rows = {nm: r for r, nm in enumerate(aflw.names)}
        for i, nm in enumerate(labels.names[:n]):
            r = rows.get(str(nm))
            if r is not None:
                h = shape[i, 0]  # AFLW crops are square; points in crop px of the shown size
                points[i] = aflw.points_in_crop(r, crop_size=int(round(h)) or 120)
                yaw[i] = aflw.yaw[r]
    mesh = verts[:, :468]
    mc = mesh_crops(np.where(ok[:, None, None], mesh, 0.0) + (~ok)[:, None, None] * _unit_face())
    return TrainData(
        images=images,
        verts=np.where(ok[:, None, None], verts, 0.0).astype(np.float32),
        lm68=lm,
        points=points,
        yaw=yaw,
        teacher_ok=ok,
        mesh_crop=mc,
        box_crop=box_crops(shape),
        held_out=labels.held_out[:n].copy(),
        shape=shape,
        names=labels.names[:n].copy(),
    )


def _unit_face() -> np.ndarray:
    """A placeholder mesh for crops where the teacher failed (never used: those take the box crop)."""
    from face3d_live.geometry.mesh import canonical_vertices

    return canonical_vertices()[None] + 60.0
