"""face3d_live: real-time 3D face reconstruction from one camera.

Public API (stable)::

    from face3d_live import Reconstructor
    rec = Reconstructor(model="mediapipe", backend="auto")
    faces = rec.reconstruct(image_rgb)          # list[Face], largest first
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["ARKIT_BLENDSHAPES", "Face", "Pose", "Reconstructor", "__version__"]

if TYPE_CHECKING:
    from face3d_live.expression.arkit import ARKIT_BLENDSHAPES
    from face3d_live.reconstructor import Reconstructor
    from face3d_live.types import Face, Pose


def __getattr__(name: str):  # lazy: importing the package must not load mediapipe or torch
    if name == "Reconstructor":
        from face3d_live.reconstructor import Reconstructor

        return Reconstructor
    if name == "ARKIT_BLENDSHAPES":  # names only: arkit.py imports numpy and nothing heavier
        from face3d_live.expression.arkit import ARKIT_BLENDSHAPES

        return ARKIT_BLENDSHAPES
    if name in ("Face", "Pose"):
        from face3d_live import types

        return getattr(types, name)
    raise AttributeError(name)
