"""TextureAccumulator: a face's UV texture built up over video frames, plus ``bake_texture`` for one photo.

Each ``update`` bakes the frame (UVBaker) with additive blending into a float target holding
``(Σ rgb·w, Σ w)``, w = how frontally the camera saw the texel, so well-seen views dominate and regions
hidden in one frame fill in as the head turns. ``texture()`` resolves it: weighted mean where seen,
the mirror partner's colour where only the other side was seen, and a smooth pull-push diffusion
elsewhere (never black). Alpha of the result is the valid mask: texels actually seen.

With GL 4.3 the per-texel passes (bake, final resolve) run as compute shaders over a texel map of the
UV layout instead of rasterising it: same results, but they run on every SM (the H100 rasterises and
shades fragments on 2 TPCs only) and touch only the layout's texels, with no blending or clears.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from face3d_live.lifetime import Closeable
from face3d_live.render.baker import BakeConfig, UVBaker, check_size
from face3d_live.render.context import RenderError
from face3d_live.render.gpu_mesh import A_MIRROR_UV, A_UV, VaoCache
from face3d_live.render.profile import PassTimer, timed
from face3d_live.render.shaders import ShaderLibrary
from face3d_live.render.shaders import set_uniform as _set
from face3d_live.render.texel_map import TexelMap, compute_available, prefer_compute
from face3d_live.types import Face

log = logging.getLogger(__name__)

MIN_WEIGHT = 1e-6
PYRAMID_DIVISOR = 8  # the pull-push pyramid starts at size / 8: holes get smooth, not sharp, colour


def _num_levels(size: int) -> int:
    return max(int(np.log2(max(size // PYRAMID_DIVISOR, 1))), 0) + 1


class _Level:
    """One pyramid level: premultiplied coverage texture (pull) and its filled colour (push)."""

    def __init__(self, ctx, size: int) -> None:
        self.size = size
        self.tex = ctx.texture((size, size), 4, dtype="f4")  # premultiplied: needs float precision
        self.up = ctx.texture((size, size), 4)  # plain colour: 8 bits do, and llvmpipe samples them fastest
        for t in (self.tex, self.up):
            t.filter = (ctx.LINEAR, ctx.LINEAR)
            t.repeat_x = t.repeat_y = False
        self.fbo = ctx.framebuffer(color_attachments=[self.tex])
        self.up_fbo = ctx.framebuffer(color_attachments=[self.up])

    def release(self) -> None:
        for obj in (self.fbo, self.up_fbo, self.tex, self.up):
            obj.release()


@dataclass(frozen=True)
class AccumulatorConfig:
    """bake: per-frame baking (validity thresholds, frontal weighting).
    mirror: fill unseen texels from the mirror-symmetric side. diffuse: fill what is left by pull-push.
    memory_frames: 0 = every frame counts for ever (weighted mean of all views); N > 0 = exponential
        moving average in which a frontal view replaces about 1/N of the texel (old expressions and
        lighting fade; texels seen once stay valid).
    reset_on_new_track: a face with another ``track_id`` than the last one starts a new texture.
    default_color: RGB in [0, 1] where nothing at all has been seen yet.
    mipmaps: ``gpu_texture()`` builds mipmaps of the output (for rendering it minified).
    compute: run bake and resolve as compute shaders; None = on a hardware GPU with GL 4.3."""

    bake: BakeConfig = field(default_factory=BakeConfig)
    mirror: bool = True
    diffuse: bool = True
    memory_frames: float = 0.0
    reset_on_new_track: bool = True
    default_color: tuple[float, float, float] = (0.62, 0.5, 0.44)
    mipmaps: bool = True
    compute: bool | None = None


class TextureAccumulator(Closeable):
    """A (size × size) UV texture accumulated over frames, on the GPU.

    ``update(image, face)`` each frame; ``texture()`` → (S, S, 4) uint8 RGBA (alpha 255 = seen);
    ``mask()`` → (S, S) bool; ``gpu_texture()`` → the moderngl.Texture for FaceRenderer.set_texture
    (no read-back); ``coverage()`` → fraction of the UV layout's texels seen; ``reset()``.
    Create, use and close it with its context current. Owns all its GL objects.
    """

    def __init__(
        self,
        ctx,
        size: int = 2048,
        config: AccumulatorConfig = AccumulatorConfig(),
        shaders: ShaderLibrary | None = None,
    ) -> None:
        self.ctx, self.config = ctx, config
        self.size = check_size(ctx, size)
        if config.memory_frames < 0:
            raise RenderError(f"memory_frames must be >= 0, got {config.memory_frames}")
        self._own_shaders = shaders is None
        self.shaders = shaders or ShaderLibrary(ctx)
        self.compute = prefer_compute(ctx) if config.compute is None else config.compute
        if self.compute and not compute_available(ctx):
            raise RenderError(
                f"compute passes need OpenGL 4.3, this context has {ctx.version_code / 100:.1f}"
            )
        names = ("mirror", "pull_push", "flat") + (
            ("uv_map", "bake_compute", "resolve_compute") if self.compute else ()
        )
        for name in names:
            self.shaders.program(name)
        self.baker = UVBaker(ctx, config.bake, self.shaders)
        self._vaos = VaoCache(self.baker.mesh, self.shaders)
        s = (self.size, self.size)
        self._accum = ctx.texture(s, 4, dtype="f4")
        self._accum.filter = (ctx.LINEAR, ctx.LINEAR)
        self._accum.repeat_x = self._accum.repeat_y = False
        self._accum_fbo = ctx.framebuffer(color_attachments=[self._accum])
        self._out = ctx.texture(s, 4)
        self._out.repeat_x = self._out.repeat_y = False
        # depth lets the full-screen fill skip the texels the mesh pass already wrote (early-z)
        self._out_depth = None if self.compute else ctx.depth_renderbuffer(s)
        self._out_fbo = ctx.framebuffer(color_attachments=[self._out], depth_attachment=self._out_depth)
        self._texel_map = TexelMap(ctx, self.shaders, self.size) if self.compute else None
        self.timer: PassTimer | None = None  # set by `bench render` to time each pass (and the baker's)
        # pull-push pyramid for the diffusion fill: small (base = size / 8), so it is cheap everywhere
        self._pyramid = [
            _Level(ctx, max(self.size // PYRAMID_DIVISOR, 1) >> k) for k in range(_num_levels(self.size))
        ]
        self._quad = ctx.buffer(np.array([-1, -1, 1, -1, -1, 1, 1, 1], np.float32).tobytes())
        self._quad_vao = None
        self._quad_generation = -1
        self._readback = bytearray(self.size * self.size * 4)
        self._rgba: np.ndarray | None = None
        self._island_texels: int | None = None
        self._track_id: int | None = None
        self.frames = 0
        self._dirty = True
        self._mipmapped = False
        self._closed = False
        self.reset()

    # ---- accumulation --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything seen (new face, new video)."""
        self._check_open()
        self._accum_fbo.clear(0.0, 0.0, 0.0, 0.0)
        self.frames = 0
        self._track_id = None
        self._dirty = True

    def update(self, image: np.ndarray, face: Face) -> None:
        """Bake ``face`` as seen in ``image`` (HxWx3 uint8 RGB) into the running texture."""
        self._check_open()
        tid = getattr(face, "track_id", -1)
        if self.config.reset_on_new_track and self._track_id is not None and tid != self._track_id:
            log.info("texture: new face (track %s → %s), starting a new texture", self._track_id, tid)
            self.reset()
        self._track_id = tid
        ctx = self.ctx
        self.frames += 1
        self._dirty = True
        if self.compute:
            ema = self.config.memory_frames > 0
            gain = 1.0 / max(self.config.memory_frames, 1.0) if ema else 1.0
            self.baker.bake_compute(image, face, self._accum, self._texel_map, gain, moving_average=ema)
            return
        with ctx.scope(self._accum_fbo, enable_only=ctx.BLEND):
            ctx.blend_equation = ctx.FUNC_ADD
            if self.config.memory_frames > 0:
                ctx.blend_func = ctx.ONE, ctx.ONE_MINUS_SRC_ALPHA
                self.baker.bake(image, face, self._accum_fbo, gain=1.0 / max(self.config.memory_frames, 1.0))
            else:
                ctx.blend_func = ctx.ONE, ctx.ONE
                self.baker.bake(image, face, self._accum_fbo)
            ctx.blend_func = ctx.DEFAULT_BLENDING

    # ---- results -------------------------------------------------------------------------------------
    def gpu_texture(self):
        """The resolved RGBA8 moderngl.Texture, mipmapped when ``config.mipmaps`` (for FaceRenderer).

        Stays the same object for the accumulator's life; its content is current after this call."""
        self._check_open()
        if self._dirty:
            self._resolve()
        if self.config.mipmaps and not self._mipmapped:
            self._out.build_mipmaps()
            self._out.filter = (self.ctx.LINEAR_MIPMAP_LINEAR, self.ctx.LINEAR)
            self._mipmapped = True
        return self._out

    def texture(self) -> np.ndarray:
        """(S, S, 4) uint8 RGBA, row 0 = v 0 (glTF/image order): RGB filled everywhere, A = 255 where seen."""
        self._check_open()
        if self._dirty:
            self._resolve()
        if self._rgba is None:
            self._out.read_into(self._readback)
            self._rgba = np.frombuffer(self._readback, np.uint8).reshape(self.size, self.size, 4).copy()
        return self._rgba

    def mask(self) -> np.ndarray:
        """(S, S) bool: texels actually seen in some frame (not mirrored or diffused)."""
        return self.texture()[..., 3] > 127

    def coverage(self) -> float:
        """Fraction of the UV layout's texels that have been seen."""
        if self._island_texels is None:
            self._island_texels = int(self.uv_layout_mask().sum())
        return float(self.mask().sum()) / max(self._island_texels, 1)

    def uv_layout_mask(self) -> np.ndarray:
        """(S, S) bool: texels covered by the mesh's UV layout."""
        self._check_open()
        if not self.baker.mesh.ready:
            raise RenderError("no face seen yet: the UV layout comes with the first update")
        ctx = self.ctx
        tex = ctx.texture((self.size, self.size), 1)
        fbo = ctx.framebuffer(color_attachments=[tex])
        try:
            with ctx.scope(fbo, enable_only=0):
                fbo.viewport = (0, 0, self.size, self.size)
                fbo.clear(0.0, 0.0, 0.0, 0.0)
                self._vaos.get("flat", (A_UV,)).render(ctx.TRIANGLES)
            out = np.frombuffer(fbo.read(components=1, alignment=1), np.uint8)
        finally:
            fbo.release()
            tex.release()
        return out.reshape(self.size, self.size) > 127

    def _resolve(self) -> None:
        ctx, cfg = self.ctx, self.config
        self._rgba = None
        diffuse = cfg.diffuse and self.baker.mesh.ready
        if diffuse:
            with timed(self.timer, "resolve.pull_push"):
                self._pull_push()
        if self.compute and self.baker.mesh.ready:
            with timed(self.timer, "resolve.final"):
                self._resolve_compute(diffuse)
            self._mipmapped = False
            self._dirty = False
            return
        with timed(self.timer, "resolve.final"), ctx.scope(self._out_fbo, enable_only=ctx.DEPTH_TEST):
            self._out_fbo.viewport = (0, 0, self.size, self.size)
            self._out_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            if self.baker.mesh.ready:  # the UV layout, at depth 0.5
                self._mirror_pass(final=True)
            if diffuse:  # the rest at depth 1 - ε, outside the layout too: mips and seams stay clean
                self._full_screen(2, src=self._pyramid[0].up)
        self._mipmapped = False
        self._dirty = False

    def _resolve_compute(self, diffuse: bool) -> None:
        """The final resolve in one compute pass over every texel: no clear, no depth, no quad."""
        cfg, mesh = self.config, self.baker.mesh
        self._texel_map.update(mesh)
        prog = self.shaders.program("resolve_compute")
        _set(prog, "u_map", 0)
        _set(prog, "u_accum", 1)
        _set(prog, "u_coarse", 2)
        _set(prog, "u_min_weight", MIN_WEIGHT)
        _set(prog, "u_mirror", cfg.mirror)
        _set(prog, "u_diffuse", diffuse)
        self._texel_map.texture.use(0)
        self._accum.use(1)
        self._pyramid[0].up.use(2)
        self._out.bind_to_image(0, read=False, write=True)
        mesh.triangles.bind_to_storage_buffer(0)
        mesh.mirror_uv.bind_to_storage_buffer(1)
        prog.run((self.size + 7) // 8, (self.size + 7) // 8)
        self.ctx.memory_barrier()  # before mipmaps, read-back or the renderer sample _out

    def _mirror_pass(self, final: bool) -> None:
        cfg = self.config
        prog = self.shaders.program("mirror")
        _set(prog, "u_accum", 0)
        _set(prog, "u_coarse", 1)
        _set(prog, "u_min_weight", MIN_WEIGHT)
        _set(prog, "u_mirror", cfg.mirror)
        _set(prog, "u_diffuse", cfg.diffuse)
        _set(prog, "u_final", final)
        self._accum.use(0)
        self._pyramid[0].up.use(1)
        self._vaos.get("mirror", (A_UV, A_MIRROR_UV)).render(self.ctx.TRIANGLES)

    def _pull_push(self) -> None:
        ctx = self.ctx
        base = self._pyramid[0]
        with ctx.scope(base.fbo, enable_only=0):
            base.fbo.viewport = (0, 0, base.size, base.size)
            base.fbo.clear(0.0, 0.0, 0.0, 0.0)
            self._mirror_pass(final=False)
        for fine, coarse in zip(self._pyramid, self._pyramid[1:]):  # pull: average down
            with ctx.scope(coarse.fbo, enable_only=0):
                coarse.fbo.viewport = (0, 0, coarse.size, coarse.size)
                self._full_screen(0, src=fine.tex)
        coarser = None
        for level in reversed(self._pyramid):  # push: fill each level's holes from the coarser one
            with ctx.scope(level.up_fbo, enable_only=0):
                level.up_fbo.viewport = (0, 0, level.size, level.size)
                self._full_screen(1, src=coarser, level=level.tex)
            coarser = level.up

    def _full_screen(self, mode: int, src=None, level=None) -> None:
        prog = self.shaders.program("pull_push")
        _set(prog, "u_mode", mode)
        _set(prog, "u_src", 0)
        _set(prog, "u_level", 1)
        _set(prog, "u_has_coarse", src is not None)
        _set(prog, "u_default", tuple(self.config.default_color))
        (src or self._pyramid[-1].tex).use(0)
        (level or self._pyramid[-1].tex).use(1)
        if self._quad_generation != self.shaders.generation:  # new program after a shader reload
            if self._quad_vao is not None:
                self._quad_vao.release()
            self._quad_vao = self.ctx.vertex_array(prog, [(self._quad, "2f", "in_vert")])
            self._quad_generation = self.shaders.generation
        self._quad_vao.render(self.ctx.TRIANGLE_STRIP)

    # ---- lifetime ------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RenderError("texture accumulator is closed")

    def _close(self) -> None:
        self._vaos.close()
        if self._quad_vao is not None:
            self._quad_vao.release()
        for obj in (self._quad, self._out_fbo, self._out_depth, self._out, self._accum_fbo, self._accum):
            if obj is not None:
                obj.release()
        if self._texel_map is not None:
            self._texel_map.close()
        for level in self._pyramid:
            level.release()
        self.baker.close()
        if self._own_shaders:
            self.shaders.close()


def bake_texture(
    ctx,
    image: np.ndarray,
    face: Face,
    size: int = 2048,
    *,
    fill: bool = True,
    config: BakeConfig = BakeConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """One photo → ``(texture (S, S, 4) uint8 RGBA, valid mask (S, S) bool)``.

    RGB is the photo where the texel was seen; with ``fill`` the rest is mirrored/diffused, else black.
    Alpha = 255 × mask. For video, keep a TextureAccumulator instead (it re-uses its GPU objects).
    """
    cfg = AccumulatorConfig(bake=config, mirror=fill, diffuse=fill, mipmaps=False)
    with TextureAccumulator(ctx, size, cfg) as acc:
        acc.update(image, face)
        rgba = acc.texture()
        return rgba, rgba[..., 3] > 127
