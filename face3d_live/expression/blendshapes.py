"""The project's own blendshape network: 478 face points (mesh + iris) → 52 ARKit blendshapes.

A small MLP run in numpy (no torch, no mediapipe at run time), distilled from the MediaPipe Face
Landmarker's blendshape model (training: ``face3d_live/training/blendshapes.py``), trained on both the
teacher's own points (what a student distilled from it predicts) and the mediapipe-mesh path's points
(face_landmark.tflite + ``IrisModel``) of the same faces. The head pose is removed before the network
sees the points: a similarity (Umeyama) fit of a few rigid points (forehead, nose bridge, eye corners,
temples) to the reference face maps the points into a frame where only the expression is left; the
network reads a subset of the aligned points' offsets from the reference, plus the fitted rotation (the
teacher reads 2D image points, so its scores depend a little on head pose).

Weights: ``face3d_live/models/weights/face3d-blendshapes.safetensors`` (format ``face3d-weights/1``,
see models/weights.py and models/weights/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from face3d_live.errors import ModelError
from face3d_live.expression.arkit import ARKIT_BLENDSHAPES

ARCH = "face3d-blendshapes"
WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "face3d-blendshapes.safetensors"
N_POINTS = 478
# rigid points for the pose fit: forehead, nose bridge, eye corners, temples/upper cheek contour (no lids,
# brows, lips or jaw, which move with the expression)
ALIGN_POINTS: tuple[int, ...] = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,  # midline: forehead to nose tip
    109, 338, 67, 297, 103, 332,  # forehead
    33, 133, 263, 362,  # eye corners
    127, 356, 234, 454, 162, 389, 21, 251, 93, 323,  # temples and upper contour
    122, 351, 196, 419, 198, 420, 131, 360,  # nose side
)  # fmt: skip


def batched_umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-face similarity ``dst ≈ s * src @ R.T + t``: src (N, K, 3), dst (K, 3) → R (N,3,3), s (N,), t (N,3)."""
    mu_s = src.mean(1, keepdims=True)
    mu_d = dst.mean(0)
    s0 = src - mu_s
    d0 = dst - mu_d
    cov = (d0.T @ s0) / src.shape[1]  # (N, 3, 3): matmul, not einsum (3x faster on one face)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    u[:, :, 2] *= sign[:, None]  # reflection fix folded into U: U diag(1, 1, sign) Vt
    rot = u @ vt
    var_s = (s0**2).sum((1, 2)) / src.shape[1]
    scale = (sig[:, 0] + sig[:, 1] + sig[:, 2] * sign) / np.maximum(var_s, 1e-12)
    t = mu_d - scale[:, None] * (mu_s @ rot.transpose(0, 2, 1))[:, 0]
    return rot, scale, t


def features(points: np.ndarray, reference: np.ndarray, align: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """(N, 478, 3) image px → (N, F) float32: aligned offsets from the reference of ``inputs`` (× 10, the
    reference has unit RMS radius) and the 9 entries of the fitted rotation (image → reference frame)."""
    p = np.asarray(points, np.float64)
    rot, scale, t = batched_umeyama(p[:, align], reference[align])
    q = scale[:, None, None] * (p[:, inputs] @ rot.transpose(0, 2, 1)) + t[:, None]
    off = (q - reference[inputs]) * 10.0
    return np.concatenate([off.reshape(len(p), -1), rot.reshape(len(p), 9)], 1).astype(np.float32)


class BlendshapeModel:
    """``predict(points (N, 478, 3) image px) -> (N, 52) float32`` ARKit blendshapes in [0, 1].

    Points: the 468 face-mesh vertices then the 10 iris points (MediaPipe's 478 order), x/y in image
    pixels, z in the same scale (+z away from the camera). tongueOut is always 0.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        from face3d_live.models.weights import load_weights

        tensors, self.info = load_weights(Path(path or WEIGHTS), arch=ARCH)
        try:
            self.reference = tensors["reference"].astype(np.float64)
            self.align = tensors["align"].astype(np.int64)
            self.inputs = tensors["inputs"].astype(np.int64)
            self.outputs = tensors["outputs"].astype(np.int64)  # ARKit index of each network output
            n_layers = int(self.info.config.get("layers", 3))
            self.layers = [
                (tensors[f"fc{i}.weight"].T.astype(np.float32), tensors[f"fc{i}.bias"].astype(np.float32))
                for i in range(n_layers)
            ]
            mean, std = tensors["feature_mean"], tensors["feature_std"]
        except KeyError as exc:
            raise ModelError(f"{self.info.path} lacks tensor {exc}; retrain it") from None
        # fold the feature standardisation into the first layer: one matmul fewer per call
        w0, b0 = self.layers[0]
        self.layers[0] = ((w0 / std[:, None]).astype(np.float32), (b0 - (mean / std) @ w0).astype(np.float32))

    def predict(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points)
        if points.ndim == 2:
            return self.predict(points[None])[0]
        if points.shape[1:] != (N_POINTS, 3):
            raise ValueError(f"expected (N, {N_POINTS}, 3) points, got {points.shape}")
        out = np.zeros((points.shape[0], len(ARKIT_BLENDSHAPES)), np.float32)
        if points.shape[0] == 0:
            return out
        h = features(points, self.reference, self.align, self.inputs)
        for i, (w, b) in enumerate(self.layers):
            # einsum, not BLAS: a face is a 1×447 row, and OpenBLAS's threads (woken for it, then waiting for
            # cores onnxruntime's spinning threads held) made this 4.6 ms on average instead of 0.5 (2 cores)
            h = np.einsum("ij,jk->ik", h, w) + b
            if i < len(self.layers) - 1:
                np.maximum(h, 0.0, out=h)
        out[:, self.outputs] = 1.0 / (1.0 + np.exp(-np.clip(h, -30.0, 30.0)))
        return out
