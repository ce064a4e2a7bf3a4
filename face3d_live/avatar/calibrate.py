"""Someone's own neutral face from a take: the pose-free mesh of their least expressive frames.

The less expressive half of the frames (lowest sum of the ARKit weights, eye-look shapes left out: looking
around is not an expression) is averaged, and the expression those frames still carry is taken off with the
rig (``mean(mesh - weights @ deltas)``), so that the personalised rig with zero weights gives the face at
rest and with each frame's weights comes closest to what was seen. Half the take, not only its very calmest
frames: measured on clips left out of the rig's fit (training/arkit_rig.py), the calmest fifth (at most 30
frames) left 2.45 mm mean vertex error, the calmer half 2.0 mm, all frames 1.9 mm; the calmer half keeps the
neutral from absorbing strong expressions where the learned offsets fit this face less well.
"""

from __future__ import annotations

import numpy as np

from face3d_live.avatar.rig import ArkitRig
from face3d_live.expression.arkit import ARKIT_BLENDSHAPES

NEUTRAL_FRACTION = 0.5  # the less expressive half of the take
EXPRESSION = np.array([not n.startswith("eyeLook") for n in ARKIT_BLENDSHAPES])


def neutral_frames(weights: np.ndarray, fraction: float = NEUTRAL_FRACTION) -> np.ndarray:
    """Indices of the ``fraction`` least expressive frames of (F, 52) weights (at least one), in order."""
    w = np.asarray(weights, np.float64)
    k = max(1, round(fraction * len(w)))
    activity = w[:, EXPRESSION].sum(1)
    return np.sort(np.argsort(activity, kind="stable")[:k])


def personal_rig(meshes: np.ndarray, weights: np.ndarray, rig: ArkitRig) -> tuple[ArkitRig, np.ndarray]:
    """(F, 468, 3) pose-free meshes (canonical frame, ``rig.pose_free``) and their (F, 52) weights → (the rig
    on this person's neutral face, the frames the neutral came from)."""
    meshes = np.asarray(meshes, np.float64)
    weights = np.asarray(weights, np.float64)
    if meshes.ndim != 3 or meshes.shape[1:] != rig.neutral.shape or weights.shape != (len(meshes), 52):
        raise ValueError(
            f"expected (F, 468, 3) meshes and (F, 52) weights, got {meshes.shape}, {weights.shape}"
        )
    idx = neutral_frames(weights)
    seen = meshes[idx].mean(0)
    rest = weights[idx].mean(0)  # the mean is linear: mean(mesh - w @ D) = mean(mesh) - mean(w) @ D
    personal = rig
    for _ in range(2):  # the offsets to remove depend (a little) on the neutral they are carried to
        personal = rig.personalised(seen - np.einsum("k,kvc->vc", rest, personal.deltas))
    return personal, idx
