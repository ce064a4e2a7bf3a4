"""The r50 family's output layout (torch-free: the numpy runtimes decode with it too).

(N, 1639), coordinates in crop pixels / 224: 478 × 3 points (468 mesh vertices, then 10 iris points in
MediaPipe's order), 68 × 3 iBUG-68 points in the 3D convention, then the presence logit.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

INPUT_SIZE = 224
# ImageNet normalisation, inside every r50-family graph (the QAT rung uses these exact float32 values)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_VERTICES = 468
NUM_IRIS = 10
NUM_POINTS = NUM_VERTICES + NUM_IRIS  # 478
NUM_LM68 = 68
OUTPUT_DIM = (NUM_POINTS + NUM_LM68) * 3 + 1  # 1639
NO_FACE_LOGIT = 60.0  # |presence logit| clip: exp(60) fits float32; sigmoid(-60) ≈ 1e-26
V1_OUTPUT_DIM = NUM_VERTICES * 3 + 1  # the first release: mesh + presence only (1405)
V1_HINT = (
    "it is a v1 file (468 vertices + presence, no iris or 68-point head); use the v2 weights that ship "
    "with face3d_live or retrain with `face3d-live train`"
)


def split_output(out, size: float = INPUT_SIZE):
    """(N, 1639) torch tensor or numpy array → points (N, 478, 3) and landmarks68 (N, 68, 3) in crop pixels
    of ``size``, presence logit (N,)."""
    n3 = NUM_POINTS * 3
    points = out[:, :n3].reshape(-1, NUM_POINTS, 3) * size
    lm68 = out[:, n3:-1].reshape(-1, NUM_LM68, 3) * size
    return points, lm68, out[:, -1]


def decode(out, size: float = INPUT_SIZE):
    """(N, 1639) float32 numpy network output → ModelOutput in crop pixels of ``size`` (sigmoid presence)."""
    import numpy as np

    from face3d_live.models.output import ModelOutput

    out = np.asarray(out, np.float32)
    if out.ndim != 2 or out.shape[1] != OUTPUT_DIM:
        raise ValueError(f"expected (N, {OUTPUT_DIM}) r50 outputs, got {out.shape}")
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():  # a broken backend or kernel: those crops read as "no face", never NaN geometry downstream
        log.warning("model output not finite for %d of %d crop(s): treated as no face", bad.sum(), len(out))
        out = out.copy()
        out[bad] = 0.0
        out[bad, -1] = -NO_FACE_LOGIT
    points, lm68, logit = split_output(out, np.float32(size))
    logit = np.clip(logit, -NO_FACE_LOGIT, NO_FACE_LOGIT)  # exp() stays finite, the sigmoid is unchanged
    return ModelOutput(
        vertices=np.ascontiguousarray(points[:, :NUM_VERTICES]),
        iris=np.ascontiguousarray(points[:, NUM_VERTICES:]),
        landmarks68=np.ascontiguousarray(lm68),
        scores=(1.0 / (1.0 + np.exp(-logit))).astype(np.float32),
    )


def check_head(head_rows: int, path) -> None:
    """ModelError for weights whose head is not the v2 layout (a v1 file, or something else)."""
    from face3d_live.errors import ModelError

    if head_rows == OUTPUT_DIM:
        return
    if head_rows == V1_OUTPUT_DIM:
        raise ModelError(f"weights file {path}: {V1_HINT}")
    raise ModelError(
        f"weights file {path}: head has {head_rows} outputs, expected {OUTPUT_DIM} (r50 v2 layout)"
    )
