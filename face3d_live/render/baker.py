"""UVBaker: rasterise the mesh in UV space and sample the frame where each texel's surface point projects.

Two passes per bake: a depth map of the face in its camera view (frame resolution), then the UV pass
(``shaders/bake.glsl`` rasterised, or ``shaders/bake_compute.glsl`` over a texel map) writing premultiplied ``(rgb * w, w)`` into the caller's target, where w is the
texel's frontal weight ``facing ** weight_power`` and 0 for texels facing away, hidden or off-frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face3d_live.lifetime import Closeable
from face3d_live.render.context import RenderError, check_image
from face3d_live.render.gpu_mesh import A_NORMAL, A_POSITION, A_UV, MeshBuffers, VaoCache
from face3d_live.render.profile import PassTimer, timed
from face3d_live.render.shaders import ShaderLibrary
from face3d_live.render.shaders import set_uniform as _set
from face3d_live.render.texel_map import TexelMap
from face3d_live.types import Face

MAX_TEXTURE_SIZE = 4096


@dataclass(frozen=True)
class BakeConfig:
    """min_facing: texels whose normal·view is below this are invalid (0.2 ≈ 78° from the camera).
    weight_power: frontal weight = facing ** weight_power (higher favours frontal views more).
    depth_bias: occlusion tolerance as a fraction of the face's depth range."""

    min_facing: float = 0.2
    weight_power: float = 3.0
    depth_bias: float = 0.04


def check_size(ctx, size: int) -> int:
    limit = min(MAX_TEXTURE_SIZE, ctx.info["GL_MAX_TEXTURE_SIZE"])
    if not isinstance(size, (int, np.integer)) or not 16 <= size <= limit:
        raise RenderError(f"texture size must be an integer in [16, {limit}], got {size!r}")
    return int(size)


class UVBaker(Closeable):
    """Bakes frames into a UV-space framebuffer. Owns its frame texture, depth map and mesh buffers."""

    def __init__(self, ctx, config: BakeConfig = BakeConfig(), shaders: ShaderLibrary | None = None) -> None:
        self.ctx, self.config = ctx, config
        self._own_shaders = shaders is None
        self.shaders = shaders or ShaderLibrary(ctx)
        self.shaders.program("depth")
        self.shaders.program("bake")
        self.mesh = MeshBuffers(ctx)
        self._vaos = VaoCache(self.mesh, self.shaders)
        self._frame = self._depth = self._depth_fbo = None
        self.timer: PassTimer | None = None  # set by `bench render` to time each pass
        self._closed = False

    def upload(self, image: np.ndarray) -> None:
        """Copy the frame to the GPU (re-allocating only when its size changes)."""
        image = check_image(image)
        h, w = image.shape[:2]
        if self._frame is None or self._frame.size != (w, h):
            self._release_frame()
            self._frame = self.ctx.texture((w, h), 3, alignment=1)
            self._frame.filter = (self.ctx.LINEAR, self.ctx.LINEAR)
            self._frame.repeat_x = self._frame.repeat_y = False
            self._depth = self.ctx.depth_texture((w, h))
            self._depth.compare_func = ""  # sample depth values, not a shadow comparison
            self._depth.filter = (self.ctx.NEAREST, self.ctx.NEAREST)
            self._depth.repeat_x = self._depth.repeat_y = False
            self._depth_fbo = self.ctx.framebuffer(depth_attachment=self._depth)
        self._frame.write(image)

    def bake(self, image: np.ndarray | None, face: Face, target, gain: float = 1.0) -> None:
        """Bake ``face`` as seen in ``image`` into framebuffer ``target`` (UV space, any size).

        ``image`` None re-uses the last uploaded frame (several faces in one frame). The caller sets
        blending on ``target`` (additive for accumulation) and clears it. ``gain`` scales the output.
        """
        frame_size, depth_range = self._prepare(image, face)
        prog = self.shaders.program("bake")
        self._set_weighting(prog, frame_size, depth_range, gain)
        with timed(self.timer, "bake.uv"):
            target.use()
            target.viewport = (0, 0, *target.size)
            self._vaos.get("bake", (A_POSITION, A_NORMAL, A_UV)).render(self.ctx.TRIANGLES)

    def bake_compute(
        self,
        image: np.ndarray | None,
        face: Face,
        accum,
        texel_map: TexelMap,
        gain: float = 1.0,
        moving_average: bool = False,
    ) -> None:
        """``bake`` by a compute pass (GL 4.3) straight into the RGBA32F texture ``accum``, in place:
        ``accum += (rgb·w, w)·gain``, or with ``moving_average`` the blend (ONE, ONE_MINUS_SRC_ALPHA).
        ``texel_map`` is brought up to date with the face's topology. No framebuffer state is touched."""
        frame_size, depth_range = self._prepare(image, face)
        with timed(self.timer, "bake.texel_map"):
            texel_map.update(self.mesh)
        prog = self.shaders.program("bake_compute")
        self._set_weighting(prog, frame_size, depth_range, gain)
        _set(prog, "u_map", 2)
        _set(prog, "u_moving_average", moving_average)
        with timed(self.timer, "bake.uv"):
            texel_map.texture.use(2)
            accum.bind_to_image(0, read=True, write=True)
            self.mesh.positions.bind_to_storage_buffer(0)
            self.mesh.normals.bind_to_storage_buffer(1)
            self.mesh.triangles.bind_to_storage_buffer(2)
            groups = (accum.size[0] + 7) // 8, (accum.size[1] + 7) // 8
            prog.run(*groups)
            # the image writes must be visible to whatever samples, reads back or rebakes accum next
            self.ctx.memory_barrier()

    def _prepare(
        self, image: np.ndarray | None, face: Face
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """Upload the frame and mesh and draw the depth map; → (frame size, depth range) uniforms."""
        if self._closed:
            raise RenderError("baker is closed")
        with timed(self.timer, "bake.upload"):
            if image is not None:
                self.upload(image)
            if self._frame is None:
                raise RenderError("no frame uploaded to bake from")
            self.mesh.update(face)
        ctx = self.ctx
        v = self.mesh.vertices
        z0, z1 = float(v[:, 2].min()), float(v[:, 2].max())
        pad = 0.05 * (z1 - z0) + 1.0
        z0, z1 = z0 - pad, z1 + pad
        depth_range = (z0, 1.0 / (z1 - z0))
        frame_size = (float(self._frame.size[0]), float(self._frame.size[1]))

        prog = self.shaders.program("depth")
        _set(prog, "u_frame_size", frame_size)
        _set(prog, "u_depth_range", depth_range)
        with timed(self.timer, "bake.depth"), ctx.scope(self._depth_fbo, enable_only=ctx.DEPTH_TEST):
            self._depth_fbo.viewport = (0, 0, *self._frame.size)
            self._depth_fbo.clear(depth=1.0)
            self._vaos.get("depth", (A_POSITION,)).render(ctx.TRIANGLES)
        return frame_size, depth_range

    def _set_weighting(self, prog, frame_size, depth_range, gain: float) -> None:
        """Uniforms and textures shared by bake.glsl and bake_compute.glsl."""
        cfg = self.config
        _set(prog, "u_frame", 0)
        _set(prog, "u_depth", 1)
        _set(prog, "u_frame_size", frame_size)
        _set(prog, "u_depth_range", depth_range)
        _set(prog, "u_depth_bias", cfg.depth_bias)
        _set(prog, "u_min_facing", cfg.min_facing)
        _set(prog, "u_weight_power", cfg.weight_power)
        _set(prog, "u_gain", gain)
        self._frame.use(0)
        self._depth.use(1)

    def _release_frame(self) -> None:
        for obj in (self._depth_fbo, self._depth, self._frame):
            if obj is not None:
                obj.release()
        self._frame = self._depth = self._depth_fbo = None

    def _close(self) -> None:
        self._vaos.close()
        self.mesh.close()
        self._release_frame()
        if self._own_shaders:
            self.shaders.close()
