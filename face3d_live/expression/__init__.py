"""Facial expression: ARKit blendshapes from the face mesh, neutral-face calibration."""

from face3d_live.expression.arkit import ARKIT_BLENDSHAPES, MEDIAPIPE_BLENDSHAPES

__all__ = ["ARKIT_BLENDSHAPES", "MEDIAPIPE_BLENDSHAPES"]
