"""iBUG-68 points from a face mesh, for models without a 68-point output (model="mediapipe").

The 68 points follow the 3D (morphable-model) convention of AFLW2000-3D / 300W-LP: the jaw points are the
3D jaw line, seen or hidden. Each point is a learned *affine* blend of a few mesh vertices (weights sum
to 1, so the blend moves with the head at any pose), fitted by ``training/blend68.py`` on training crops
against the 3D teacher's labels and shipped as ``assets/blend68.npz``. Without that file the fixed
vertex picks ``mesh.LANDMARKS68`` stand in.
"""

from __future__ import annotations

import functools

import numpy as np

from face3d_live.geometry import mesh

BLEND68_PATH = mesh.ASSETS / "blend68.npz"

# left/right partner of each iBUG-68 point (0-based; midline points map to themselves)
MIRROR68 = np.array(
    [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
     26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
     27, 28, 29, 30, 35, 34, 33, 32, 31,
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65],
    dtype=np.int64,
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def blend_matrix() -> np.ndarray:
    """(68, 468) float32, rows sum to 1."""
    if BLEND68_PATH.is_file():
        with np.load(BLEND68_PATH) as z:
            return z["W"].astype(np.float32)
    w = np.zeros((68, mesh.NUM_VERTICES), np.float32)
    w[np.arange(68), mesh.LANDMARKS68] = 1.0
    return w


@functools.lru_cache(maxsize=1)
def _mean_row() -> np.ndarray:
    return blend_matrix().mean(0)


def blend68_mean_z(vertices: np.ndarray) -> np.ndarray:
    """(..., 468, 3) mesh → (..., 1) the mean depth of its blended 68 points, without blending all 68."""
    # a product and a row sum, not a matrix-vector product: BLAS rounds a row differently with other rows
    # beside it, and a face's points must not depend on the faces that share its batch
    return (np.asarray(vertices, np.float32)[..., 2] * _mean_row()).sum(-1, keepdims=True)


def blend68(vertices: np.ndarray) -> np.ndarray:
    """(..., 468, 3) mesh → (..., 68, 3) float32 iBUG-68 points."""
    return np.einsum("kv,...vd->...kd", blend_matrix(), np.asarray(vertices, np.float32)).astype(np.float32)
