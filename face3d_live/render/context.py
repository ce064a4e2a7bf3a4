"""GL context creation (headless EGL) and an offscreen render target that reads back to numpy."""

from __future__ import annotations

import logging

import numpy as np

from face3d_live.errors import BackendUnavailable, Face3DError

log = logging.getLogger(__name__)

MIN_GL_VERSION = 330


class RenderError(Face3DError):
    """Bad input to the renderer or baker (wrong image/mesh shape, texture size out of range)."""


SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swiftshader", "software")


def is_software(ctx) -> bool:
    """True for CPU rasterisers (Mesa llvmpipe and friends)."""
    name = str(ctx.info.get("GL_RENDERER", "")).lower()
    return any(s in name for s in SOFTWARE_RENDERERS)


def create_context(backend: str = "egl", device_index: int | None = None):
    """A standalone (windowless) OpenGL ≥ 3.3 context. ``backend``: "egl" (headless) or "default".

    With EGL and no ``device_index``, the first hardware device is taken when there is one (a GPU
    machine may list Mesa's software device first). Raises BackendUnavailable (with the fix) when no
    context can be made.
    """
    import moderngl

    if backend not in ("egl", "default"):
        raise BackendUnavailable(f"unknown GL backend {backend!r}; use 'egl' (headless) or 'default'")

    def make(index: int | None):
        kwargs = {"backend": "egl", "device_index": index or 0} if backend == "egl" else {}
        try:  # 4.3 where the driver has it: compute shaders (NVIDIA's EGL gives exactly what is asked for)
            return moderngl.create_standalone_context(require=430, **kwargs)
        except Exception:
            return moderngl.create_standalone_context(**kwargs)

    try:
        ctx = make(device_index)
    except Exception as exc:  # moderngl/glcontext raise plain Exceptions for a missing libEGL
        fix = (
            "pick another --gl-device"
            if device_index
            else "install the Mesa EGL driver (apt install libegl1 libgl1-mesa-dri libegl-mesa0)"
        )
        where = f"{backend}, device {device_index}" if device_index is not None else backend
        raise BackendUnavailable(f"cannot create an OpenGL context ({where}): {exc}; {fix}") from None
    if backend == "egl" and device_index is None and is_software(ctx):
        for index in range(1, 8):
            try:
                other = make(index)
            except Exception:  # no more devices
                break
            if not is_software(other):
                ctx.release()
                ctx = other
                break
            other.release()
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
