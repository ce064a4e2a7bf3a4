"""FaceRenderer: the face mesh, textured and lit, with optional wireframe and landmark overlay.

It draws into a framebuffer it is given (an :class:`OffscreenTarget`'s ``fbo`` headless, or
``ctx.detect_framebuffer(widget.defaultFramebufferObject())`` in a QOpenGLWidget), so the same code
serves tests, benchmarks, recording and the app. Create, use and close it with the context current.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from face3d_live.lifetime import Closeable
from face3d_live.render.camera import ImageView, OrbitCamera, ViewMatrices, gl_bytes
from face3d_live.render.context import RenderError
from face3d_live.render.gpu_mesh import A_NORMAL, A_POSITION, A_UV, MeshBuffers, VaoCache
from face3d_live.render.shaders import ShaderLibrary
from face3d_live.render.shaders import set_uniform as _set
from face3d_live.types import Face

log = logging.getLogger(__name__)

RGBA = tuple[float, float, float, float]


@dataclass(frozen=True)
class RenderConfig:
    """How the face is drawn. Replace it (``dataclasses.replace``) to toggle overlays at run time."""

    background: RGBA = (0.07, 0.07, 0.09, 1.0)
    albedo: tuple[float, float, float] = (0.78, 0.62, 0.54)  # untextured skin tone
    lit: bool = True  # False: the texture as is (alpha = its valid mask)
    textured: bool = True  # use the texture when one is set
    light_dir: tuple[float, float, float] = (-0.35, 0.45, 1.0)  # view space, towards the light
    ambient: float = 0.4
    diffuse: float = 0.7
    specular: float = 0.12
    shininess: float = 24.0
    wireframe: bool = False
    wireframe_color: RGBA = (0.2, 1.0, 0.5, 0.9)
    landmarks: bool = False
    landmark_color: RGBA = (1.0, 0.25, 0.2, 1.0)
    landmark_size: float = 5.0  # pixels


class FaceRenderer(Closeable):
    """Draw one face. ``set_face`` each frame, ``set_texture`` when the texture changes, ``render`` to draw.

    Owns its buffers, vertex arrays and (when it made it) its ShaderLibrary and uploaded texture; a
    moderngl.Texture passed to ``set_texture`` stays the caller's.
    """

    def __init__(
        self, ctx, config: RenderConfig = RenderConfig(), shaders: ShaderLibrary | None = None
    ) -> None:
        self.ctx = ctx
        self.config = config
        self._own_shaders = shaders is None
        self.shaders = shaders or ShaderLibrary(ctx)
        self.shaders.program("face")  # compile now: a broken shader fails at start, not mid-frame
        self.shaders.program("lines")
        self.mesh = MeshBuffers(ctx)
        self._vaos = VaoCache(self.mesh, self.shaders)
        self._face: Face | None = None
        self._texture = None
        self._own_texture = None
        self._closed = False

    # ---- state ----------------------------------------------------------------------------------------
    def set_face(self, face: Face | None) -> None:
        """The face to draw (None draws nothing). Uploads its vertices and smooth normals."""
        self._face = face
        if face is not None:
            self.mesh.update(face)

    def set_texture(self, texture) -> None:
        """A UV texture: moderngl.Texture (borrowed, e.g. ``TextureAccumulator.gpu_texture()``), an
        (S, S, 3|4) uint8 array (uploaded, owned), or None for the plain albedo."""
        import moderngl

        if texture is None or isinstance(texture, moderngl.Texture):
            self._texture = texture
            return
        arr = np.asarray(texture)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise RenderError(f"texture must be an (H, W, 3|4) uint8 array, got {arr.shape} {arr.dtype}")
        if arr.shape[2] == 3:
            arr = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
        size = (arr.shape[1], arr.shape[0])
        if self._own_texture is None or self._own_texture.size != size:
            if self._own_texture is not None:
                self._own_texture.release()
            self._own_texture = self.ctx.texture(size, 4)
        self._own_texture.write(np.ascontiguousarray(arr).tobytes())
        self._own_texture.build_mipmaps()
        self._own_texture.filter = (self.ctx.LINEAR_MIPMAP_LINEAR, self.ctx.LINEAR)
        self._texture = self._own_texture

    # ---- drawing -------------------------------------------------------------------------------------
    def render(self, fbo, view: ImageView | OrbitCamera, *, clear: bool = True) -> None:
        """Draw the current face into ``fbo`` (which needs a depth buffer) over its whole viewport."""
        if self._closed:
            raise RenderError("renderer is closed")
        ctx, cfg = self.ctx, self.config
        with ctx.scope(fbo, enable_only=ctx.DEPTH_TEST | ctx.PROGRAM_POINT_SIZE):
            fbo.viewport = (0, 0, *fbo.size)
            if clear:
                fbo.clear(*cfg.background, depth=1.0)
            if self._face is None:
                return
            m = view.matrices(self.mesh.vertices, self._face.pose, fbo.size)
            self._draw_surface(m)
            if cfg.wireframe:
                self._draw_lines(m, "edges", ctx.LINES, cfg.wireframe_color, 2e-4)
            if cfg.landmarks:
                self._draw_lines(m, "landmarks", ctx.POINTS, cfg.landmark_color, 1e-3)

    def _draw_surface(self, m: ViewMatrices) -> None:
        cfg = self.config
        prog = self.shaders.program("face")
        textured = cfg.textured and self._texture is not None
        _set(prog, "u_mvp", gl_bytes(m.mvp))
        _set(prog, "u_modelview", gl_bytes(m.modelview))
        _set(prog, "u_normal_matrix", gl_bytes(m.normal_matrix))
        _set(prog, "u_textured", textured)
        _set(prog, "u_lit", cfg.lit)
        _set(prog, "u_ortho", m.ortho)
        _set(prog, "u_albedo", cfg.albedo)
        _set(prog, "u_light_dir", cfg.light_dir)
        _set(prog, "u_ambient", cfg.ambient)
        _set(prog, "u_diffuse", cfg.diffuse)
        _set(prog, "u_specular", cfg.specular)
        _set(prog, "u_shininess", cfg.shininess)
        if textured:
            self._texture.use(0)
            _set(prog, "u_texture", 0)
        self._vaos.get("face", (A_POSITION, A_NORMAL, A_UV)).render(self.ctx.TRIANGLES)

    def _draw_lines(self, m: ViewMatrices, index: str, mode: int, color: RGBA, depth_offset: float) -> None:
        ctx, cfg = self.ctx, self.config
        prog = self.shaders.program("lines")
        _set(prog, "u_mvp", gl_bytes(m.mvp))
        _set(prog, "u_color", color)
        _set(prog, "u_depth_offset", depth_offset)
        _set(prog, "u_point_size", cfg.landmark_size)
        _set(prog, "u_round", mode == ctx.POINTS)
        ctx.enable(ctx.BLEND)
        ctx.blend_func = ctx.SRC_ALPHA, ctx.ONE_MINUS_SRC_ALPHA
        self._vaos.get("lines", (A_POSITION,), index).render(mode)
        ctx.disable(ctx.BLEND)

    # ---- lifetime ------------------------------------------------------------------------------------
    def _close(self) -> None:
        self._vaos.close()
        self.mesh.close()
        if self._own_texture is not None:
            self._own_texture.release()
            self._own_texture = None
        self._texture = None
        if self._own_shaders:
            self.shaders.close()


def render_image(
    ctx,
    face: Face,
    view: ImageView | OrbitCamera,
    size: tuple[int, int],
    texture=None,
    config: RenderConfig = RenderConfig(),
    samples: int = 0,
) -> np.ndarray:
    """One-off offscreen render → (h, w, 4) uint8 RGBA, row 0 = top. For repeated frames keep a
    FaceRenderer and an OffscreenTarget instead (this makes and frees both)."""
    from face3d_live.render.context import OffscreenTarget

    with FaceRenderer(ctx, config) as renderer, OffscreenTarget(ctx, size, samples) as target:
        renderer.set_face(face)
        renderer.set_texture(texture)
        renderer.render(target.fbo, view)
        return target.read()


def composite(image: np.ndarray, rgba: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    """Blend an ImageView render (alpha = coverage, render with a transparent background) over the photo."""
    if rgba.shape[:2] != image.shape[:2]:
        raise RenderError(f"render {rgba.shape[:2]} and image {image.shape[:2]} differ in size")
    a = rgba[..., 3:4].astype(np.float32) * (opacity / 255.0)
    return (image.astype(np.float32) * (1 - a) + rgba[..., :3].astype(np.float32) * a + 0.5).astype(np.uint8)
