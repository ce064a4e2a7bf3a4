"""GL context creation (headless EGL) and an offscreen render target that reads back to numpy."""

from __future__ import annotations

import logging

import numpy as np

from face3d_live.errors import BackendUnavailable, Face3DError

log = logging.getLogger(__name__)

MIN_GL_VERSION = 330


class RenderError(Face3DError):
    """Bad input to the renderer or baker (wrong image/mesh shape, texture size out of range)."""


def create_context(backend: str = "egl"):
    """A standalone (windowless) OpenGL ≥ 3.3 context. ``backend``: "egl" (headless) or "default".

    Raises BackendUnavailable (with the fix) when no such context can be made.
    """
    import moderngl

    if backend not in ("egl", "default"):
        raise BackendUnavailable(f"unknown GL backend {backend!r}; use 'egl' (headless) or 'default'")
    try:
        ctx = moderngl.create_standalone_context(**({"backend": "egl"} if backend == "egl" else {}))
    except Exception as exc:  # moderngl/glcontext raise plain Exceptions for a missing libEGL
        raise BackendUnavailable(
            f"cannot create an OpenGL context ({backend}): {exc}; "
            "install the Mesa EGL driver (apt install libegl1 libgl1-mesa-dri libegl-mesa0)"
        ) from None
    if ctx.version_code < MIN_GL_VERSION:
        version = ctx.version_code
        ctx.release()
        raise BackendUnavailable(f"OpenGL {version / 100:.1f} found, 3.3 core or newer is needed")
    log.info("GL context: %s (%s), GL %d", ctx.info["GL_RENDERER"], backend, ctx.version_code)
    return ctx


def check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise RenderError(
            f"expected an HxWx3 uint8 RGB image, got shape {shape} dtype {getattr(image, 'dtype', '?')}"
        )
    return np.ascontiguousarray(image)


class OffscreenTarget:
    """An RGBA8 + depth framebuffer of ``size`` (w, h), optionally multisampled; ``read()`` → numpy.

    ``fbo`` is what to render into. Rows of ``read()`` are top-first (image order).
    """

    def __init__(self, ctx, size: tuple[int, int], samples: int = 0) -> None:
        w, h = int(size[0]), int(size[1])
        if w < 1 or h < 1:
            raise RenderError(f"render target size must be positive, got {size}")
        self.ctx, self.size = ctx, (w, h)
        samples = min(samples, ctx.max_samples) if samples > 1 else 0
        self._color = ctx.renderbuffer((w, h), 4, samples=samples)
        self._depth = ctx.depth_renderbuffer((w, h), samples=samples)
        self.fbo = ctx.framebuffer(color_attachments=[self._color], depth_attachment=self._depth)
        self._resolve = None
        if samples:
            self._resolve_rb = ctx.renderbuffer((w, h), 4)
            self._resolve = ctx.framebuffer(color_attachments=[self._resolve_rb])
        self._buf = bytearray(w * h * 4)
        self._closed = False

    def read(self) -> np.ndarray:
        """(h, w, 4) uint8 RGBA, row 0 = top."""
        src = self.fbo
        if self._resolve is not None:
            self.ctx.copy_framebuffer(self._resolve, self.fbo)
            src = self._resolve
        src.read_into(self._buf, components=4)
        w, h = self.size
        return np.frombuffer(self._buf, np.uint8).reshape(h, w, 4)[::-1].copy()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for obj in (self._resolve, getattr(self, "_resolve_rb", None), self.fbo, self._depth, self._color):
            if obj is not None:
                obj.release()

    def __enter__(self) -> OffscreenTarget:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
