"""What every face model returns for a batch of crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
