"""What every face model returns for a batch of crops."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from face3d_live.geometry.landmarks68 import MIRROR68
from face3d_live.geometry.mesh import mirror_indices_478


@dataclass
class ModelOutput:
    """One batch of N crops, everything in crop pixels of the model's input size (z: relative depth, same
    scale, +z away from the camera).

    vertices:    (N, 468, 3) float32 face-mesh vertices.
    iris:        (N, 10, 3) float32 iris points (MediaPipe's 478-point order: 468-472, 473-477).
    landmarks68: (N, 68, 3) float32 iBUG-68 points in the 3D (morphable-model) convention, or None when the
                 model has no 68-point output (the Reconstructor then blends them from the mesh).
    scores:      (N,) float32 face-presence probability.
    """

    vertices: np.ndarray
    iris: np.ndarray
    landmarks68: np.ndarray | None
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def rows(self, a: int, b: int) -> ModelOutput:
        """Crops ``a`` to ``b`` of the batch (views)."""
        lm = None if self.landmarks68 is None else self.landmarks68[a:b]
        return ModelOutput(self.vertices[a:b], self.iris[a:b], lm, self.scores[a:b])


@functools.lru_cache(maxsize=1)
def _mirror_partners() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right partners of the 468 vertices, the 10 iris points (0-based among them) and the 68 points."""
    m478 = mirror_indices_478()
    return m478[:468], m478[468:] - 468, MIRROR68


def merge_flipped(out: ModelOutput, size: int) -> ModelOutput:
    """A batch of 2N outputs, crops then the same crops mirrored (``crop[:, ::-1]``), → N outputs: each
    averaged with its mirror's output mapped back (x → size − 1 − x, left/right partners swapped)."""
    n = len(out) // 2
    verts, iris, lm68 = _mirror_partners()

    def back(points: np.ndarray, partners: np.ndarray) -> np.ndarray:
        p = points[n:][:, partners]  # fancy indexing: a copy
        p[..., 0] = (size - 1) - p[..., 0]
        return ((points[:n] + p) * 0.5).astype(np.float32)

    return ModelOutput(
        vertices=back(out.vertices, verts),
        iris=back(out.iris, iris),
        landmarks68=None if out.landmarks68 is None else back(out.landmarks68, lm68),
        scores=((out.scores[:n] + out.scores[n:]) * 0.5).astype(np.float32),
    )
