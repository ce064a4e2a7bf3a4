"""The 3D face view's GL side, without Qt: texture accumulation + the textured face under an orbit camera.

Used by the Qt widget (inside ``paintGL``, with the widget's context current) and by the headless
benchmark (a standalone EGL context), so both run the same GL work. Create, use and close it on the
thread whose GL context is current.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from face3d_live.types import Face, Frame

log = logging.getLogger(__name__)

TEXTURE_SIZES = (256, 512, 1024, 2048)
DEFAULT_DISTANCE = 3.1  # face widths: the whole face stays in view when orbiting


@dataclass(frozen=True)
class SceneConfig:
    """texture_size: side of the accumulated UV texture. texture_hz: how often a frame is baked into it
    (the texture converges in a few views; baking every frame would only cost time). None = by device:
    1024 at 15 Hz on a GPU, 512 at 4 Hz on a CPU rasteriser (llvmpipe resolves a 1024² texture in
    ~100 ms). textured: draw the accumulated texture (else the plain skin albedo). wireframe: edges on top."""

    texture_size: int | None = None
    texture_hz: float | None = None
    textured: bool = True
    wireframe: bool = False

    def __post_init__(self) -> None:
        if self.texture_size is not None and self.texture_size not in TEXTURE_SIZES:
            raise ValueError(f"texture size must be one of {TEXTURE_SIZES}, got {self.texture_size}")
        if self.texture_hz is not None and self.texture_hz <= 0:
            raise ValueError(f"texture_hz must be > 0, got {self.texture_hz}")

    def for_context(self, ctx) -> SceneConfig:
        """Automatic values filled in for this GL context's renderer."""
        software = is_software_renderer(ctx)
        return replace(
            self,
            texture_size=self.texture_size or (512 if software else 1024),
            texture_hz=self.texture_hz or (4.0 if software else 15.0),
        )


def is_software_renderer(ctx) -> bool:
    name = str(ctx.info.get("GL_RENDERER", "")).lower()
    return any(s in name for s in ("llvmpipe", "softpipe", "swiftshader", "software"))


class FaceScene:
    """``show(frame, face)`` queues what to draw; ``draw(fbo)`` bakes (when due) and renders it.

    ``timings_ns`` holds the last draw's ``texture`` and ``render`` durations. Owns its renderer and
    accumulator (GL objects of ``ctx``): ``close()`` with the context current.
    """

    def __init__(self, ctx, config: SceneConfig = SceneConfig()) -> None:
        from face3d_live.render import FaceRenderer, OrbitCamera, RenderConfig, ShaderLibrary

        self.ctx = ctx
        self.config = config.for_context(ctx)
        self.shaders = ShaderLibrary(ctx)
        self.camera = OrbitCamera(distance=DEFAULT_DISTANCE)
        self.renderer = FaceRenderer(ctx, RenderConfig(wireframe=self.config.wireframe), shaders=self.shaders)
        self._accumulator = None
        self._pending: tuple[np.ndarray, Face] | None = None
        self._face: Face | None = None
        self._last_bake_ns = 0
        self._rebuild = False
        self.timings_ns: dict[str, int] = {}
        self._closed = False

    # ---- state (any time, cheap) -------------------------------------------------------------------------
    def show(self, frame: Frame | None, face: Face | None) -> None:
        """The face to draw next (None: keep the last one on screen, e.g. while the face is lost)."""
        if face is not None and frame is not None:
            self._pending = (frame.image, face)

    def set_texture_size(self, size: int) -> None:
        """A new, empty texture of this size (made on the next draw, with the context current)."""
        if size != self.config.texture_size:
            self.config = replace(self.config, texture_size=size)
            self._rebuild = True

    def set_wireframe(self, on: bool) -> None:
        self.config = replace(self.config, wireframe=on)
        self.renderer.config = replace(self.renderer.config, wireframe=on)

    def reset_texture(self) -> None:
        """Start the texture afresh (new person, new source); applied on the next draw."""
        self._rebuild = True

    @property
    def has_face(self) -> bool:
        return self._face is not None

    # ---- GL work (context current) -------------------------------------------------------------------------
    def draw(self, fbo) -> None:
        """Bake the pending frame into the texture if one is due, then render the face into ``fbo``.

        A bake and the resolve of its result run on consecutive frames: each costs ~5-10 ms on a CPU
        rasteriser, so spreading them halves the worst frame time; the frame in between shows the
        previous texture.
        """
        t0 = time.perf_counter_ns()
        if self._rebuild:
            self._rebuild = False
            self._drop_accumulator()
        baked = False
        if self._pending is not None:
            image, face = self._pending
            self._pending = None
            self._face = face
            self.renderer.set_face(face)
            due = t0 - self._last_bake_ns >= 1e9 / self.config.texture_hz
            if self.config.textured and due:
                self._accumulator_for().update(image, face)
                self._last_bake_ns = t0
                baked = True
        acc = self._accumulator
        if not (self.config.textured and acc is not None and acc.frames):
            self.renderer.set_texture(None)
        elif not baked:
            self.renderer.set_texture(acc.gpu_texture())  # resolves the last bake if not done yet
        t1 = time.perf_counter_ns()
        self.renderer.render(fbo, self.camera)
        self.timings_ns = {"texture": t1 - t0, "render": time.perf_counter_ns() - t1}

    def texture_rgb(self) -> np.ndarray | None:
        """The accumulated texture, (S, S, 3) uint8 (for recordings), or None before any bake."""
        if self._accumulator is None or not self._accumulator.frames:
            return None
        return np.ascontiguousarray(self._accumulator.texture()[..., :3])

    def _accumulator_for(self):
        if self._accumulator is None:
            from face3d_live.render import TextureAccumulator

            self._accumulator = TextureAccumulator(self.ctx, self.config.texture_size, shaders=self.shaders)
        return self._accumulator

    def _drop_accumulator(self) -> None:
        if self._accumulator is not None:
            self.renderer.set_texture(None)
            self._accumulator.close()
            self._accumulator = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_accumulator()
        self.renderer.close()
        self.shaders.close()

    def __enter__(self) -> FaceScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
