"""Mesh topology (MediaPipe face mesh, 468 vertices), canonical neutral mesh, UV layout, iBUG-68 map."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

NUM_VERTICES = 468
ASSETS = Path(__file__).resolve().parents[1] / "assets"

# iBUG-68 points as face-mesh vertex indices: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
LANDMARKS68 = np.array(
    [162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
     71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
     168, 197, 5, 4, 75, 97, 2, 326, 305,
     33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
     61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87],
    dtype=np.int32,
)  # fmt: skip


def triangles() -> np.ndarray:
    """(852, 3) int32 triangles of MediaPipe's face-mesh tessellation (kept in assets/canonical_mesh.npz,
    read from mediapipe's source by training/canonical_mesh.py). The winding is consistent over the whole
    mesh: (b - a) x (c - a) points towards the camera (-z) for every triangle that faces it."""
    return _canonical()["triangles"]


@functools.lru_cache(maxsize=1)
def _canonical() -> dict[str, np.ndarray]:
    with np.load(ASSETS / "canonical_mesh.npz") as data:
        return {k: data[k] for k in data.files}


def canonical_vertices() -> np.ndarray:
    """(468, 3) float32 neutral frontal face; outer eye corners 9.0 apart, x right, y down, +z away."""
    return _canonical()["vertices"]


def mirror_indices() -> np.ndarray:
    """(468,) int32: the left/right mirror partner of each vertex (midline vertices map to themselves)."""
    return _canonical()["mirror"]


# the 10 iris points after the mesh (MediaPipe's 478 order: 468-472 the subject's right eye, 473-477 the
# left; each eye: centre, then the rim at image +x, -y, -x, +y, measured on the teacher's output). Under a
# horizontal flip the centres swap eyes and the ±x rim points swap sides too.
IRIS_MIRROR = np.array([473, 476, 475, 474, 477, 468, 471, 470, 469, 472], np.int32)


def mirror_indices_478() -> np.ndarray:
    """(478,) int32: mirror partners of the 468 vertices and the 10 iris points."""
    return np.concatenate([mirror_indices(), IRIS_MIRROR]).astype(np.int32)


@functools.lru_cache(maxsize=1)
def uv_coords() -> np.ndarray:
    """(468, 2) float32 UVs in [0, 1]: a cylindrical unwrap of the canonical mesh.

    The cylinder's axis is vertical, behind the face, so the cheeks get texels in proportion to
    their surface (a frontal projection squeezes them). v = 0 is the top of the texture (forehead).
    """
    v = canonical_vertices().astype(np.float64)
    width = v[:, 0].max() - v[:, 0].min()
    axis_z = v[:, 2].min() + 0.75 * width  # cylinder axis depth: behind the face
    theta = np.arctan2(v[:, 0], axis_z - v[:, 2])
    radius = np.median(np.hypot(v[:, 0], axis_z - v[:, 2]))
    u = theta * radius
    y = v[:, 1]
    # u and v are scaled separately so the square texture is filled (the unwrap is wider than tall):
    # v gets a little more texel density than u, which costs nothing and wastes no rows.
    margin = 0.02
    uv = np.stack(
        [(u - (u.max() + u.min()) / 2) / np.ptp(u), (y - (y.max() + y.min()) / 2) / np.ptp(y)], axis=1
    )
    return (uv * (1 - 2 * margin) + 0.5).astype(np.float32)
