"""Rendering, UV baking and texture accumulation on a headless EGL context (Mesa llvmpipe in CI)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_live.errors import Face3DError


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data

    from face3d_live.reconstructor import Reconstructor

    image = skimage.data.astronaut()
    with Reconstructor("mediapipe") as rec:
        faces = rec.reconstruct(image)
    assert faces, "the reconstructor finds the astronaut's face"
    return image, faces[0]


@pytest.fixture(scope="module")
def astronaut_texture(ctx, astronaut):
    from face3d_live.render import bake_texture

    image, face = astronaut
    return bake_texture(ctx, image, face, 1024)


def _mesh_mask(face, shape) -> np.ndarray:
    """Reference silhouette: the mesh's triangles filled on the CPU."""
    mask = np.zeros(shape, np.uint8)
    pts = np.round(face.vertices[:, :2] * 16).astype(np.int32)  # 4 fractional bits
    for tri in face.triangles:
        cv2.fillConvexPoly(mask, pts[tri], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _render(ctx, face, view, size, texture=None, **config):
    from face3d_live.render import RenderConfig, render_image

    cfg = dataclasses.replace(RenderConfig(background=(0.0, 0.0, 0.0, 0.0)), **config)
    return render_image(ctx, face, view, size, texture, cfg)


def _is_skin(rgb: np.ndarray) -> np.ndarray:
    """A loose skin-colour rule (Kovac et al. 2003, uniform daylight) per pixel."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    spread = rgb.max(-1).astype(int) - rgb.min(-1).astype(int)
    return (r > 95) & (g > 40) & (b > 20) & (spread > 15) & (abs(r - g) > 15) & (r > g) & (r > b)


# ---- shaders ---------------------------------------------------------------------------------------


def test_every_project_shader_compiles(ctx):
    from face3d_live.render.shaders import SHADER_DIR, ShaderLibrary

    names = sorted(p.stem for p in SHADER_DIR.glob("*.glsl"))
    assert {"face", "lines", "depth", "bake", "mirror", "pull_push"} <= set(names)
    with ShaderLibrary(ctx) as lib:
        for name in names:
            assert lib.program(name) is not None
        lib.reload()  # dev hot-reload recompiles in place
        assert lib.generation == 1


def test_shader_compile_error_names_file_and_line(ctx, tmp_path: Path):
    from face3d_live.render import ShaderError, ShaderLibrary

    broken = tmp_path / "broken.glsl"
    broken.write_text(
        "#version 330 core\n"
        "#if defined VERTEX_SHADER\n"
        "in vec3 in_position;\n"
        "void main() {\n"
        "    gl_Position = vec4(in_position, 1.0)\n"  # line 5: missing semicolon
        "}\n"
        "#elif defined FRAGMENT_SHADER\n"
        "out vec4 f;\n"
        "void main() { f = vec4(1.0); }\n"
        "#endif\n"
    )
    frag_broken = tmp_path / "frag_broken.glsl"
    frag_broken.write_text(
        "#version 330 core\n"
        "#if defined VERTEX_SHADER\n"
        "void main() { gl_Position = vec4(0.0); }\n"
        "#elif defined FRAGMENT_SHADER\n"
        "out vec4 f;\n"
        "void main() {\n"
        "    f = undefined_name;\n"  # line 7
        "}\n"
        "#endif\n"
    )
    with ShaderLibrary(ctx, dirs=[tmp_path]) as lib:
        with pytest.raises(ShaderError) as err:
            lib.program("broken")
        assert err.value.path == broken
        assert err.value.line in (5, 6)  # the parser reports the statement or the token after it
        assert f"broken.glsl:{err.value.line}:" in str(err.value) and "vertex" in str(err.value)
        assert "\n" not in str(err.value)  # one line for the CLI
        with pytest.raises(ShaderError) as err:
            lib.program("frag_broken")
        assert err.value.line == 7 and err.value.stage == "FRAGMENT_SHADER"
        assert "frag_broken.glsl:7:" in str(err.value)
        with pytest.raises(ShaderError, match="not found"):
            lib.program("no_such_shader")
    assert issubclass(ShaderError, Face3DError)


# ---- renderer ----------------------------------------------------------------------------------------


def test_image_view_render_overlays_the_face(ctx, astronaut, astronaut_texture):
    from face3d_live.render import ImageView

    image, face = astronaut
    h, w = image.shape[:2]
    rgba = _render(ctx, face, ImageView(w, h), (w, h), astronaut_texture[0])
    drawn = rgba[..., 3] > 0
    # the astronaut's face: around (225, 122) in the 512² photo, ~95 px wide
    ys, xs = np.nonzero(drawn)
    assert 200 < xs.mean() < 250 and 95 < ys.mean() < 150
    assert 70 < xs.max() - xs.min() < 130 and 80 < ys.max() - ys.min() < 140
    # exactly where the mesh projects (the render is pixel-aligned with the photo)
    ref = _mesh_mask(face, (h, w))
    iou = (drawn & ref).sum() / (drawn | ref).sum()
    assert iou > 0.95
    # lit, textured: skin colours over most of the face
    assert _is_skin(rgba[..., :3][drawn]).mean() > 0.6
    # untextured: the plain albedo, lit (shading varies, all warm)
    plain = _render(ctx, face, ImageView(w, h), (w, h), None)
    shade = plain[..., :3][plain[..., 3] > 0].astype(int)
    assert (shade[:, 0] > shade[:, 2]).all() and shade[:, 0].std() > 5


def test_orbit_views_wireframe_and_landmarks(ctx, astronaut, astronaut_texture):
    from face3d_live.render import OrbitCamera

    _, face = astronaut
    size = (320, 240)
    front = _render(ctx, face, OrbitCamera(), size, astronaut_texture[0])
    drawn = front[..., 3] > 0
    ys, xs = np.nonzero(drawn)
    assert abs(xs.mean() - 160) < 25 and abs(ys.mean() - 120) < 25  # centred
    assert 0.15 < drawn.mean() < 0.6
    assert _is_skin(front[..., :3][drawn]).mean() > 0.5
    # turning the camera turns the face: another silhouette, still the textured face
    side = _render(ctx, face, OrbitCamera(yaw=70, canonical=True), size, astronaut_texture[0])
    side_drawn = side[..., 3] > 0
    assert (side_drawn & drawn).sum() / (side_drawn | drawn).sum() < 0.7
    assert _is_skin(side[..., :3][side_drawn]).mean() > 0.3
    # overlays draw in their colours
    lm = _render(ctx, face, OrbitCamera(), size, astronaut_texture[0], landmarks=True,
                 landmark_color=(0.0, 0.0, 1.0, 1.0))  # fmt: skip
    assert ((lm[..., 2] > 200) & (lm[..., 0] < 50)).sum() > 30
    wire = _render(ctx, face, OrbitCamera(), size, None, wireframe=True, wireframe_color=(0.0, 1.0, 0.0, 1.0))
    assert ((wire[..., 1] > 200) & (wire[..., 0] < 60)).sum() > 500


def test_renderer_survives_shader_reload_and_close(ctx, astronaut, astronaut_texture):
    from face3d_live.render import FaceRenderer, ImageView, OffscreenTarget, RenderError, composite

    image, face = astronaut
    h, w = image.shape[:2]
    with FaceRenderer(ctx) as renderer, OffscreenTarget(ctx, (w, h), samples=4) as target:
        renderer.set_face(face)
        renderer.set_texture(astronaut_texture[0])
        renderer.render(target.fbo, ImageView(w, h))
        before = target.read()
        renderer.shaders.reload()  # dev hot-reload: vertex arrays are rebuilt for the new programs
        renderer.render(target.fbo, ImageView(w, h))
        assert np.array_equal(before, target.read())
    renderer.close()  # idempotent
    with pytest.raises(RenderError, match="closed"):
        renderer.render(target.fbo, ImageView(w, h))
    over = composite(image, _render(ctx, face, ImageView(w, h), (w, h), astronaut_texture[0]), 0.5)
    assert over.shape == image.shape and not np.array_equal(over, image)


def test_orbit_camera_mouse_controls():
    from face3d_live.render import OrbitCamera

    cam = OrbitCamera()
    cam.orbit(100, 50)
    assert cam.yaw == pytest.approx(-40.0) and cam.pitch == pytest.approx(20.0)
    cam.orbit(0, 1000)
    assert cam.pitch == 89.0
    d = cam.distance
    cam.zoom(2)
    assert cam.distance < d


# ---- baking ------------------------------------------------------------------------------------------


def test_baked_texture_reprojects_onto_the_photo(ctx, astronaut, astronaut_texture):
    from face3d_live.render import ImageView

    image, face = astronaut
    texture, mask = astronaut_texture
    assert texture.shape == (1024, 1024, 4) and mask.shape == (1024, 1024)
    assert np.array_equal(texture[..., 3] > 127, mask)
    h, w = image.shape[:2]
    unlit = _render(ctx, face, ImageView(w, h), (w, h), texture, lit=False)
    valid = cv2.erode((unlit[..., 3] > 127).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    face_px = _mesh_mask(face, (h, w))
    assert valid.sum() > 0.8 * face_px.sum()  # almost all of a near-frontal face is seen
    err = unlit[..., :3][valid].astype(float) - image[valid].astype(float)
    psnr = 10 * np.log10(255.0**2 / np.mean(err**2))
    assert psnr >= 28.0, psnr


def test_bake_marks_back_facing_and_occluded_texels_invalid(ctx, astronaut):
    from face3d_live.geometry.pose import apply_pose
    from face3d_live.render import bake_texture
    from face3d_live.render.baker import BakeConfig
    from face3d_live.types import Pose

    image, face = astronaut
    # the same mesh turned 55° to one side about its centre: the far cheek faces away, the nose hides some
    c = face.vertices.mean(0)
    a = np.radians(55)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    turned = dataclasses.replace(
        face, vertices=(apply_pose(Pose(rot, c - rot @ c, 1.0), face.vertices)).astype(np.float32)
    )
    _, mask = bake_texture(ctx, image, turned, 512, fill=False)
    _, no_occlusion = bake_texture(ctx, image, turned, 512, fill=False, config=BakeConfig(depth_bias=10.0))
    left, right = mask[:, :256].sum(), mask[:, 256:].sum()
    assert min(left, right) < 0.5 * max(left, right)  # one half largely unseen
    hidden = no_occlusion & ~mask  # facing the camera but behind the nose: invalid only with the depth test
    assert hidden.sum() > 200 and not (mask & ~no_occlusion).any()


def test_fill_is_plausible_not_black(ctx, astronaut, astronaut_texture):
    from face3d_live.render import bake_texture

    image, face = astronaut
    texture, mask = astronaut_texture
    rgb = texture[..., :3].astype(int)
    assert (rgb.sum(-1) < 30)[~mask].mean() < 0.01  # nothing unseen left black
    assert _is_skin(texture[..., :3][~mask]).mean() > 0.5  # unseen texels get skin-like colour
    raw, raw_mask = bake_texture(ctx, image, face, 1024, fill=False)
    assert np.array_equal(raw_mask, mask)
    assert (raw[~raw_mask][:, :3] == 0).all()  # without fill: black where unseen
    assert np.abs(raw[mask].astype(int) - texture[mask].astype(int)).max() <= 1  # same seen texels


def test_bad_inputs_raise_one_line_errors(ctx, astronaut):
    from face3d_live.render import RenderError, TextureAccumulator, bake_texture

    image, face = astronaut
    with pytest.raises(RenderError, match="texture size"):
        bake_texture(ctx, image, face, 8192)
    with pytest.raises(RenderError, match="uint8"):
        bake_texture(ctx, image.astype(np.float32), face, 64)
    with pytest.raises(RenderError, match="vertices"):
        bake_texture(ctx, image, dataclasses.replace(face, vertices=face.vertices[:, :2]), 64)
    acc = TextureAccumulator(ctx, 64)
    acc.close()
    acc.close()  # idempotent
    with pytest.raises(RenderError, match="closed"):
        acc.update(image, face)


def test_compute_bake_and_resolve_match_the_rasterised_ones(ctx, astronaut):
    from face3d_live.render import AccumulatorConfig, TextureAccumulator
    from face3d_live.render.texel_map import compute_available

    if not compute_available(ctx):
        pytest.skip("compute passes need GL 4.3")
    image, face = astronaut
    for memory_frames in (0.0, 3.0):  # plain sum and moving average
        out = {}
        for compute in (False, True):
            cfg = AccumulatorConfig(compute=compute, memory_frames=memory_frames)
            with TextureAccumulator(ctx, 512, cfg) as acc:
                assert acc.compute == compute
                acc.update(image, face)
                acc.update(image, face)
                out[compute] = acc.texture().astype(int)
        raster, comp = out[False], out[True]
        # the same texels seen, the same colours (UV triangles that overlap keep one surface point, not
        # the sum of both: a handful of texels at the eye and lip folds)
        assert (raster[..., 3] > 127).sum() > 0.3 * 512 * 512
        assert ((raster[..., 3] > 127) != (comp[..., 3] > 127)).mean() < 1e-3
        assert (np.abs(raster - comp).max(-1) > 2).mean() < 2e-3
        assert np.abs(raster[..., :3] - comp[..., :3]).mean() < 0.2


# ---- accumulation ------------------------------------------------------------------------------------


def _video_frames(name: str, stop: int):
    from face3d_live.training.data import default_data_dir

    path = default_data_dir() / "videos" / name
    if not path.is_file():
        pytest.skip(f"{path} not found (shared data absent)")
    cap = cv2.VideoCapture(str(path))
    try:
        for i in range(stop):
            ok, frame = cap.read()
            if not ok:
                return
            yield i, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def test_accumulation_over_a_head_turn_increases_coverage(ctx):
    from face3d_live.reconstructor import Reconstructor
    from face3d_live.render import AccumulatorConfig, TextureAccumulator, bake_texture

    # WolfgangLanger: the head turns from ~13° yaw (frames ~150) to ~-12° (frames ~360-400)
    coverage, yaws = [], []
    recent = TextureAccumulator(ctx, 512, AccumulatorConfig(memory_frames=2))
    with Reconstructor("mediapipe") as rec, TextureAccumulator(ctx, 512) as acc, recent:
        for i, rgb in _video_frames("WolfgangLanger_Pexels.mp4", 410):
            faces = rec.track(rgb, i / 24.0)
            if i < 144 or i % 16 or not faces:
                continue
            acc.update(rgb, faces[0])
            recent.update(rgb, faces[0])
            coverage.append(acc.coverage())
            yaws.append(faces[0].pose.euler_degrees()[0])
            if len(coverage) == 1:
                first_texture = acc.texture().copy()
        assert max(yaws) - min(yaws) > 15
        assert len(coverage) >= 12
        assert all(b >= a - 1e-9 for a, b in zip(coverage, coverage[1:]))  # seen stays seen
        assert coverage[-1] > coverage[0] + 0.08, coverage
        assert acc.frames == len(coverage)
        # the texture changed where new views arrived; unseen texels are filled, not black
        tex = acc.texture()[..., :3].astype(int)
        dark = tex.sum(-1) < 30
        # no more near-black texels among the filled ones than the face itself has (hair, brows)
        assert dark[~acc.mask()].mean() < max(0.01, 1.5 * dark[acc.mask()].mean())
        assert np.abs(acc.texture()[..., :3].astype(int) - first_texture[..., :3]).mean() > 1
        # with a short memory the texture follows the latest frames more closely than the all-time mean
        last, last_mask = bake_texture(ctx, rgb, faces[0], 512)
        err_all = np.abs(acc.texture()[last_mask, :3].astype(int) - last[last_mask, :3]).mean()
        err_recent = np.abs(recent.texture()[last_mask, :3].astype(int) - last[last_mask, :3]).mean()
        assert err_recent < 0.9 * err_all, (err_recent, err_all)
        assert recent.coverage() == pytest.approx(acc.coverage(), abs=0.01)  # seen once stays valid
        # a shader reload (dev key) keeps the accumulator working with the new programs
        before = acc.texture().copy()
        acc.shaders.reload()
        acc._dirty = True
        assert np.array_equal(acc.texture(), before)
        # a different track is a new face: the texture starts over
        face = faces[0]
        acc.update(rgb, dataclasses.replace(face, track_id=face.track_id + 1))
        assert acc.frames == 1 and acc.coverage() < coverage[-1]
        acc.reset()
        assert acc.frames == 0 and acc.coverage() == 0.0
