"""ModernGL rendering, GPU UV texture baking and texture accumulation.

Every class takes a ``moderngl.Context`` (a headless EGL one from :func:`create_context`, or the Qt
widget's) and draws into a framebuffer it is given; nothing here opens a window.

- :class:`FaceRenderer`: lit, textured face mesh; :class:`ImageView` (the photo's own camera, so the
  render overlays the photo) or :class:`OrbitCamera` (yaw/pitch/distance, mouse-drivable).
- :class:`TextureAccumulator`: GPU UV bake of each frame, blended by how frontally each texel was seen,
  with mirror + diffusion fill. :func:`bake_texture` is the one-photo shortcut.
- :class:`ShaderLibrary`: ``shaders/<name>.glsl`` by name; :class:`ShaderError` names file and line.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "create_context": "context",
    "RenderError": "context",
    "OffscreenTarget": "context",
    "ShaderLibrary": "shaders",
    "ShaderError": "shaders",
    "OrbitCamera": "camera",
    "ImageView": "camera",
    "FaceRenderer": "renderer",
    "RenderConfig": "renderer",
    "render_image": "renderer",
    "composite": "renderer",
    "UVBaker": "baker",
    "BakeConfig": "baker",
    "TextureAccumulator": "accumulator",
    "AccumulatorConfig": "accumulator",
    "bake_texture": "accumulator",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # lazy: importing face3d_live.render must not pull moderngl until something is used
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
