"""ARKit blendshape names and the map from the MediaPipe Face Landmarker's blendshape output.

``ARKIT_BLENDSHAPES`` is Apple's ``ARFaceAnchor.BlendShapeLocation`` order (left eye, right eye, jaw,
mouth, brows, cheeks, nose, tongue), the order Unreal's ``EARFaceBlendShape`` / Live Link Face uses, so
index i of a ``Face.blendshapes`` vector is curve i of a Live Link stream. ``MEDIAPIPE_BLENDSHAPES`` is
the Face Landmarker's ``face_blendshapes.tflite`` output order (``kBlendshapeNames`` in MediaPipe's
``face_blendshapes_graph.cc``): ``_neutral`` then the other 51 ARKit names alphabetically, no tongueOut.
"""

from __future__ import annotations

import numpy as np

ARKIT_BLENDSHAPES: tuple[str, ...] = (
    # left eye
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    # right eye
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    # jaw
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    # mouth
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    # brows
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    # cheeks
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    # nose
    "noseSneerLeft", "noseSneerRight",
    # tongue
    "tongueOut",
)  # fmt: skip

MEDIAPIPE_BLENDSHAPES: tuple[str, ...] = (
    "_neutral",
    *sorted(n for n in ARKIT_BLENDSHAPES if n != "tongueOut"),
)

ARKIT_INDEX: dict[str, int] = {n: i for i, n in enumerate(ARKIT_BLENDSHAPES)}

# MEDIAPIPE_TO_ARKIT[j] = ARKit index of MediaPipe output j (-1 for _neutral, which has no ARKit curve)
MEDIAPIPE_TO_ARKIT: np.ndarray = np.array([ARKIT_INDEX.get(n, -1) for n in MEDIAPIPE_BLENDSHAPES], np.int64)
# ARKIT_FROM_MEDIAPIPE[i] = MediaPipe output index feeding ARKit curve i (-1 for tongueOut)
ARKIT_FROM_MEDIAPIPE: np.ndarray = np.array(
    [MEDIAPIPE_BLENDSHAPES.index(n) if n in MEDIAPIPE_BLENDSHAPES else -1 for n in ARKIT_BLENDSHAPES],
    np.int64,
)


def mediapipe_to_arkit(scores: np.ndarray) -> np.ndarray:
    """(..., 52) MediaPipe-order scores → (..., 52) float32 ARKit order; tongueOut = 0, _neutral dropped."""
    scores = np.asarray(scores, np.float32)
    out = np.zeros(scores.shape[:-1] + (len(ARKIT_BLENDSHAPES),), np.float32)
    have = ARKIT_FROM_MEDIAPIPE >= 0
    out[..., have] = scores[..., ARKIT_FROM_MEDIAPIPE[have]]
    return out


def mirror_shapes() -> np.ndarray:
    """ARKit index permutation swapping each ...Left shape with its ...Right partner."""

    def partner(n: str) -> str:  # jawLeft/jawRight and mouthLeft/mouthRight swap too
        if n.endswith("Left"):
            return n[:-4] + "Right"
        if n.endswith("Right"):
            return n[:-5] + "Left"
        return n

    return np.array([ARKIT_INDEX[partner(n)] for n in ARKIT_BLENDSHAPES], np.int64)
