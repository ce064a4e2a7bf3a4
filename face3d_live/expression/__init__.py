"""Facial expression: ARKit blendshapes from the face mesh, neutral-face calibration."""

from __future__ import annotations

from typing import TYPE_CHECKING

from face3d_live.expression.arkit import ARKIT_BLENDSHAPES, MEDIAPIPE_BLENDSHAPES

if TYPE_CHECKING:
    from face3d_live.expression.blendshapes import BlendshapeModel
    from face3d_live.expression.calibration import BlendshapeCalibration

__all__ = ["ARKIT_BLENDSHAPES", "MEDIAPIPE_BLENDSHAPES", "BlendshapeCalibration", "BlendshapeModel"]


def __getattr__(name: str):  # lazy: the names list must stay importable without loading any weights
    if name == "BlendshapeModel":
        from face3d_live.expression.blendshapes import BlendshapeModel

        return BlendshapeModel
    if name == "BlendshapeCalibration":
        from face3d_live.expression.calibration import BlendshapeCalibration

        return BlendshapeCalibration
    raise AttributeError(name)
