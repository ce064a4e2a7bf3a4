"""TexelMap: which mesh triangle covers each texel of a UV layout, and where in it (compute passes).

The UV layout is fixed per topology, so it is rasterised once (``shaders/uv_map.glsl``) into an RGBA32F
texture of (b1, b2, triangle, 1); the compute bake and resolve then interpolate the frame's vertex data
per texel themselves. That moves the per-texel work off the rasteriser onto compute, which on GPUs with
few graphics units (the H100 runs fragment shaders on 2 of its 66 TPCs) is many times faster.
"""

from __future__ import annotations

import numpy as np

from face3d_live.lifetime import Closeable
from face3d_live.render.context import is_software
from face3d_live.render.gpu_mesh import MeshBuffers

COMPUTE_GL_VERSION = 430


def compute_available(ctx) -> bool:
    """Compute shaders and image load/store: OpenGL 4.3."""
    return ctx.version_code >= COMPUTE_GL_VERSION


def prefer_compute(ctx) -> bool:
    """Compute passes where they pay: a hardware GPU with GL 4.3. llvmpipe has them too, but its
    rasteriser is far faster than its compute (bake 4.7x slower at 2048²), so it keeps rasterising."""
    return compute_available(ctx) and not is_software(ctx)


class TexelMap(Closeable):
    """A (size × size) RGBA32F texel map of ``mesh``'s UV layout, rebuilt when its topology changes."""

    def __init__(self, ctx, shaders, size: int) -> None:
        self.ctx, self.shaders, self.size = ctx, shaders, size
        self.texture = ctx.texture((size, size), 4, dtype="f4")
        self.texture.filter = (ctx.NEAREST, ctx.NEAREST)
        self._fbo = ctx.framebuffer(color_attachments=[self.texture])
        self._generation = -1
        self._closed = False

    def update(self, mesh: MeshBuffers) -> None:
        """Re-rasterise the map if ``mesh``'s topology changed since the last call."""
        if mesh.generation == self._generation:
            return
        ctx = self.ctx
        tris, uv = mesh.triangles_np, mesh.uv_np
        # de-indexed corners: gl_PrimitiveID is the triangle, in_bary the corner's barycentric basis
        corners = np.concatenate(
            [uv[tris.reshape(-1)], np.tile(np.eye(3, dtype=np.float32), (len(tris), 1))], axis=1
        )
        vbo = ctx.buffer(np.ascontiguousarray(corners, np.float32).tobytes())
        vao = ctx.vertex_array(self.shaders.program("uv_map"), [(vbo, "2f 3f", "in_uv", "in_bary")])
        try:
            with ctx.scope(self._fbo, enable_only=0):
                self._fbo.viewport = (0, 0, self.size, self.size)
                self._fbo.clear(0.0, 0.0, 0.0, 0.0)
                vao.render(ctx.TRIANGLES)
        finally:
            vao.release()
            vbo.release()
        self._generation = mesh.generation

    def _close(self) -> None:
        self._fbo.release()
        self.texture.release()
