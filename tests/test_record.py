"""Recording: GLB (validated by the Khronos glTF-Validator), OBJ, NPZ, crash recovery, disk errors.

The clip is reconstructed once per module; every recording below is built from that one pass.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from face3d_live.errors import ConfigError, RecordError
from face3d_live.record import RecordConfig, SequenceWriter, read_journal, recover
from face3d_live.record.coords import base_shape, node_apply, scene_to_image
from face3d_live.record.glb import POSITION_STEP_M, accessor_array, read_glb
from face3d_live.record.journal import FRAMES, RECORD
from face3d_live.training.data import default_data_dir

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO / "node_modules" / "gltf-validator"
CLIP = "WolfgangLanger_Pexels.mp4"
TEXTURE_EVERY = 12  # bake from every 12th frame only: keeps the fixture's memory and time small


def _clip_path() -> Path:
    path = default_data_dir() / "videos" / CLIP
    if not path.exists():
        pytest.skip(f"{CLIP} not found under {default_data_dir()}")
    return path


@pytest.fixture(scope="module")
def clip():
    """Every frame of the clip reconstructed once: (fps, [(index, t, faces, rgb or None)])."""
    from face3d_live import Reconstructor
    from face3d_live.capture import open_source

    frames = []
    with open_source(str(_clip_path())) as source, Reconstructor("mediapipe") as rec:
        fps = source.fps
        for frame in source:
            faces = rec.track(frame.image, frame.timestamp_s)
            rgb = frame.image if frame.frame_id % TEXTURE_EVERY == 0 else None
            frames.append((frame.frame_id, frame.timestamp_s, faces, rgb))
    return fps, frames


@pytest.fixture(scope="module")
def recorded(clip, tmp_path_factory):
    """The clip written once through SequenceWriter (float GLB); the journal is kept for re-exports."""
    fps, frames = clip
    out = tmp_path_factory.mktemp("rec") / "take.glb"
    with SequenceWriter(
        out, RecordConfig(texture_size=1024, texture_every=1), fps=fps, keep_journal=True
    ) as w:
        for index, t, faces, rgb in frames:
            w.write(index, t, faces, image=rgb)
    return out, w.journal_dir, w.summary


def _validate(path: Path) -> dict:
    if shutil.which("node") is None or not VALIDATOR.exists():
        pytest.skip("node or npm package gltf-validator missing (run `npm install` in the repo root)")
    script = (
        "const v=require(process.argv[1]);const fs=require('fs');"
        "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])),{maxIssues:20})"
        ".then(r=>console.log(JSON.stringify(r.issues))).catch(e=>{console.error(e);process.exit(1)});"
    )
    res = subprocess.run(
        ["node", "-e", script, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _assert_valid(path: Path) -> None:
    issues = _validate(path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]


def _decode_frames(path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every animation key as the engine sees it: (gltf, times (K,), image-px vertices (K, 468, 3))."""
    gltf, binary = read_glb(path)
    prim = gltf["meshes"][0]["primitives"][0]
    base = accessor_array(gltf, binary, prim["attributes"]["POSITION"])
    targets = [accessor_array(gltf, binary, t["POSITION"]) for t in prim["targets"]]
    anim = gltf["animations"][0]
    by_path = {c["target"]["path"]: anim["samplers"][c["sampler"]] for c in anim["channels"]}
    times = accessor_array(gltf, binary, by_path["translation"]["input"])
    tr = accessor_array(gltf, binary, by_path["translation"]["output"])
    rot = accessor_array(gltf, binary, by_path["rotation"]["output"])
    sc = accessor_array(gltf, binary, by_path["scale"]["output"])
    weights = accessor_array(gltf, binary, by_path["weights"]["output"]).reshape(len(times), len(targets))
    extras = gltf["nodes"][0]["extras"]["face3d_live"]
    out = np.empty((len(times), base.shape[0], 3))
    for k in range(len(times)):
        shape = base + np.einsum("t,tvc->vc", weights[k], np.asarray(targets))
        world = node_apply(shape, rot[k], tr[k], sc[k, 0])
        out[k] = scene_to_image(world, extras["metres_per_pixel"], extras["origin_px"])
    return gltf, times, out


def _faces_px(frames) -> np.ndarray:
    return np.stack([faces[0].vertices for _, _, faces, _ in frames]).astype(np.float64)


# ---- GLB ------------------------------------------------------------------------------------------


def test_glb_float_validates_and_round_trips(clip, recorded):
    fps, frames = clip
    out, _, summary = recorded
    assert summary["frames"] == len(frames) == 472 and summary["targets"] == 472
    assert all(faces for _, _, faces, _ in frames), "the clip has a face in every frame"
    gltf, times, px = _decode_frames(out)
    # animation: a key per frame plus one holding the last frame to the end of the clip
    assert len(times) == len(frames) + 1
    assert times[-1] == pytest.approx(len(frames) / fps, abs=1e-4)
    np.testing.assert_allclose(times[:-1], [t for _, t, _, _ in frames], atol=1e-4)
    # float: only float32 rounding separates the asset from the reconstruction
    err = np.abs(px[:-1] - _faces_px(frames)).max()
    assert err < 2e-3, f"float round trip off by {err} px"
    _assert_valid(out)  # last: skips where node is missing


def test_glb_quantized_validates_round_trips_and_is_small(clip, recorded, tmp_path):
    fps, frames = clip
    _, journal, _ = recorded
    cfg = RecordConfig(quantize=True, texture_size=2048)
    summary = recover(journal, tmp_path / "q.glb", cfg)
    gltf, _, px = _decode_frames(tmp_path / "q.glb")
    assert "KHR_mesh_quantization" in gltf["extensionsRequired"]
    # error bound: half an int16 step per coordinate of the delta, scaled by the node and to pixels
    extras = gltf["nodes"][0]["extras"]["face3d_live"]
    scale = np.array([f[0].pose.scale for _, _, f, _ in frames]) / np.median(
        [f[0].pose.scale for _, _, f, _ in frames]
    )
    bound = 0.5 * POSITION_STEP_M * np.sqrt(3) * scale.max() / extras["metres_per_pixel"] + 2e-3
    err = np.abs(px[:-1] - _faces_px(frames)).max()
    assert err <= bound, f"quantised round trip off by {err} px (bound {bound})"
    # the target: 20 s at 30 fps with a 2048² texture in ≤ 10 MB; scale this 19.7 s, 24 fps clip up
    per_frame = (summary["bytes"] - summary["texture_bytes"]) / len(frames)
    assert per_frame * 600 + summary["texture_bytes"] <= 10e6
    _assert_valid(tmp_path / "q.glb")  # last: skips where node is missing


def test_glb_loads_in_trimesh_and_pygltflib(recorded):
    trimesh = pytest.importorskip("trimesh")
    import pygltflib

    out, _, _ = recorded
    scene = trimesh.load(out, force="scene")
    geoms = list(scene.geometry.values())
    assert len(geoms) == 1 and geoms[0].vertices.shape == (468, 3) and len(geoms[0].faces) == 852
    g = pygltflib.GLTF2().load(str(out))
    assert len(g.meshes[0].primitives[0].targets) == 472 and g.images[0].mimeType == "image/jpeg"
    # the base mesh is the canonical face in metres, front (+Z) towards the viewer
    verts = np.asarray(geoms[0].vertices)
    np.testing.assert_allclose(verts, base_shape(), atol=1e-6)
    assert np.linalg.norm(verts[33] - verts[263]) == pytest.approx(0.09, abs=1e-6)  # eye corners 9 cm apart
    assert verts[4, 2] > verts[10, 2] + 0.02 and verts[10, 1] > verts[152, 1] + 0.1  # nose out, forehead up
    assert np.asarray(geoms[0].vertex_normals)[:, 2].mean() > 0.5  # counter-clockwise fronts face +Z


def test_keyframe_tolerance_drops_near_duplicates(clip, recorded, tmp_path):
    _, frames = clip
    _, journal, _ = recorded
    tol_mm = 1.0
    summary = recover(
        journal, tmp_path / "k.glb", RecordConfig(keyframe_tolerance_mm=tol_mm, texture_size=64)
    )
    assert 1 < summary["targets"] < len(frames)
    gltf, _, px = _decode_frames(tmp_path / "k.glb")
    # each frame shows a target within the tolerance of its own pose-free shape (mm → px via the pose)
    extras = gltf["nodes"][0]["extras"]["face3d_live"]
    scale = max(f[0].pose.scale for _, _, f, _ in frames) / np.median(
        [f[0].pose.scale for _, _, f, _ in frames]
    )
    bound = tol_mm / 1000 * scale / extras["metres_per_pixel"] + 2e-3
    assert np.linalg.norm(px[:-1] - _faces_px(frames), axis=-1).max() <= bound

    _assert_valid(tmp_path / "k.glb")  # last: skips where node is missing


# ---- OBJ / NPZ ------------------------------------------------------------------------------------


def test_npz_is_exact(clip, recorded, tmp_path):
    _, frames = clip
    _, journal, _ = recorded
    recover(journal, tmp_path / "take.npz", RecordConfig(format="npz", texture_size=256))
    with np.load(tmp_path / "take.npz") as z:
        np.testing.assert_array_equal(z["vertices"], np.stack([f[0].vertices for _, _, f, _ in frames]))
        np.testing.assert_array_equal(z["landmarks68"], np.stack([f[0].landmarks68 for _, _, f, _ in frames]))
        np.testing.assert_array_equal(z["rotation"], np.stack([f[0].pose.rotation for _, _, f, _ in frames]))
        np.testing.assert_array_equal(z["timestamps"], [t for _, t, _, _ in frames])
        assert z["texture"].shape == (256, 256, 3) and z["triangles"].shape == (852, 3)


def test_obj_sequence(clip, recorded, tmp_path):
    trimesh = pytest.importorskip("trimesh")
    _, frames = clip
    _, journal, _ = recorded
    out = tmp_path / "objs"
    summary = recover(journal, out, RecordConfig(format="obj", texture_size=256))
    objs = sorted(out.glob("frame_*.obj"))
    assert summary["frames"] == len(objs) == len(frames)
    assert (out / "face.mtl").exists() and (out / "face_albedo.png").exists()
    m = trimesh.load(objs[100], process=False, force="mesh")
    assert m.vertices.shape == (468, 3) and len(m.faces) == 852
    # the same scene coordinates as the GLB's posed mesh
    gltf, _ = read_glb(recorded[0])
    extras = gltf["nodes"][0]["extras"]["face3d_live"]
    px = scene_to_image(np.asarray(m.vertices), extras["metres_per_pixel"], extras["origin_px"])
    assert np.abs(px - frames[100][2][0].vertices).max() < 1e-2  # 6 decimals of metres in the text


# ---- crash safety and errors ----------------------------------------------------------------------


def test_sigkill_mid_recording_recovers_every_written_frame(clip, tmp_path):
    _, frames = clip
    out = tmp_path / "killed.glb"
    journal = tmp_path / "killed.glb.journal"
    cmd = [sys.executable, "-c", "import sys; from face3d_live.cli import main; sys.exit(main())"]
    cmd += ["record", str(_clip_path()), "--out", str(out), "--no-progress", "--texture-size", "256"]
    cmd += ["--model", "mediapipe"]  # the frames it is compared with
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:  # wait until a good part of the clip is on disk
            size = (journal / FRAMES).stat().st_size if (journal / FRAMES).exists() else 0
            if size >= 150 * RECORD.itemsize or proc.poll() is not None:
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"exited by itself before the kill: {log.read_text()[-2000:]}"
    written = (journal / FRAMES).stat().st_size // RECORD.itemsize
    assert 150 <= written < len(frames)
    assert not out.exists()

    from face3d_live.cli import main

    assert main(["record", "--recover", str(journal)]) == 0
    rec = read_journal(journal)
    assert len(rec) == written
    gltf, times, px = _decode_frames(out)
    assert len(gltf["meshes"][0]["primitives"][0]["targets"]) == written
    np.testing.assert_allclose(px[:-1], _faces_px(frames[:written]), atol=2e-3)
    _assert_valid(out)  # last: skips where node is missing


def test_torn_last_record_is_dropped(clip, tmp_path):
    fps, frames = clip
    out = tmp_path / "torn.glb"
    w = SequenceWriter(out, RecordConfig(texture_size=0), fps=fps).open()
    for index, t, faces, _ in frames[:10]:
        w.write(index, t, faces)
    w.abort()
    with open(w.journal_dir / FRAMES, "ab") as f:  # a frame cut off mid-write
        f.write(b"F3DR" + b"\x07" * 100)
    rec = read_journal(w.journal_dir)
    assert len(rec) == 10
    raw = bytearray((w.journal_dir / FRAMES).read_bytes())  # a flipped bit in frame 7 ends the journal there
    raw[7 * RECORD.itemsize + 500] ^= 0x10
    (w.journal_dir / FRAMES).write_bytes(bytes(raw))
    assert len(read_journal(w.journal_dir)) == 7


def test_disk_full_is_one_clear_error(clip, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full missing")
    _, frames = clip
    _, t, faces, _ = frames[0]
    journal = tmp_path / "full.journal"
    journal.mkdir()
    (journal / FRAMES).write_bytes(b"x" * 10)
    with pytest.raises(RecordError, match="already holds"):
        SequenceWriter(tmp_path / "full.glb", RecordConfig(), journal_dir=journal).open()
    (journal / FRAMES).unlink()
    (journal / FRAMES).symlink_to("/dev/full")  # every write to the frame file fails with ENOSPC
    w = SequenceWriter(tmp_path / "full.glb", RecordConfig(), journal_dir=journal).open()
    with pytest.raises(RecordError, match="disk full") as err:
        w.write(0, t, faces)
    assert "\n" not in str(err.value) and "--recover" in str(err.value)
    w.abort()


def test_unwritable_paths_are_one_line_errors(tmp_path, capsys):
    from face3d_live.cli import main

    video = str(_clip_path())
    assert main(["record", video, "--out", str(tmp_path / "no" / "such" / "dir" / "x.glb")]) == 2
    assert "does not exist" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["record", video, "--out", str(tmp_path / "x.glb"), "--journal", str(blocker / "j")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot" in err
    assert main(["record", "--recover", str(tmp_path)]) == 2
    assert "not a recording journal" in capsys.readouterr().err
    assert main(["record", video, "--out", str(tmp_path / "y.glb"), "--texture-size", "8192"]) == 2
    assert "texture size" in capsys.readouterr().err


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError):
        RecordConfig(format="fbx")
    with pytest.raises(ConfigError):
        RecordConfig(keyframe_tolerance_mm=-1)
    with pytest.raises(ConfigError):
        RecordConfig.from_dict({"quantise": True})


def test_record_still_image_cli(tmp_path, capsys):
    """A single photo becomes a one-frame asset (reconstruct, not track)."""
    import cv2
    from skimage import data

    from face3d_live.cli import main

    img = tmp_path / "astronaut.png"
    cv2.imwrite(str(img), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "astronaut.glb"
    assert (
        main(
            [
                "record",
                str(img),
                "--out",
                str(out),
                "--texture-size",
                "512",
                "--no-progress",
                "--model",
                "mediapipe",
            ]
        )
        == 0
    )
    assert "recorded 1 frames" in capsys.readouterr().out
    assert not (tmp_path / "astronaut.glb.journal").exists()
    _assert_valid(out)  # last: skips where node is missing


@pytest.mark.parametrize("baker", ["cpu", "gl"])
def test_texture_bakers_reproduce_the_photo(clip, baker):
    """Sampled at each front-facing vertex's UV, the accumulated texture shows the frame's colour there."""
    import cv2

    from face3d_live.errors import BackendUnavailable
    from face3d_live.geometry import mesh
    from face3d_live.record.writer import make_texture_accumulator

    _, frames = clip
    try:
        acc = make_texture_accumulator(512, baker)
    except BackendUnavailable as exc:
        pytest.skip(f"no GL context: {exc}")
    baked = [(rgb, faces[0]) for _, _, faces, rgb in frames if rgb is not None]
    try:
        for rgb, face in baked[:4]:
            acc.update(rgb, face)
        early = acc.coverage()
        for rgb, face in baked[4:]:
            acc.update(rgb, face)
        assert acc.coverage() >= early > 0.3
        tex = acc.texture()
    finally:
        acc.close()
    assert tex.shape == (512, 512, 3) and tex.dtype == np.uint8
    rgb, face = baked[0]  # a near-frontal frame of the clip
    uv = mesh.uv_coords() * 512 - 0.5
    from_tex = cv2.remap(
        tex, uv[None, :, 0].astype(np.float32), uv[None, :, 1].astype(np.float32), cv2.INTER_LINEAR
    )[0]
    xy = face.vertices[:, :2].astype(np.float32)
    from_img = cv2.remap(rgb, xy[None, :, 0], xy[None, :, 1], cv2.INTER_LINEAR)[0]
    v = face.vertices.astype(np.float64)
    tris = mesh.triangles()
    n = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    facing = np.zeros(len(v))
    np.maximum.at(facing, tris.reshape(-1), np.repeat(-n[:, 2] / np.linalg.norm(n, axis=1), 3))
    front = facing > 0.7
    diff = np.abs(from_tex[front].astype(float) - from_img[front].astype(float)).mean(axis=1)
    assert front.sum() > 150 and np.median(diff) < 20, np.median(diff)


def test_frames_without_a_face_hold_the_last_one(clip, tmp_path):
    fps, frames = clip
    out = tmp_path / "gaps.glb"
    with SequenceWriter(out, RecordConfig(texture_size=0), fps=fps) as w:
        for index, t, faces, _ in frames[:20]:
            w.write(index, t, [] if index < 3 or 5 <= index < 10 else faces)
    assert w.summary["frames"] == 20 and w.summary["targets"] == 12
    _, times, px = _decode_frames(out)
    assert times[-1] == pytest.approx(20 / fps, abs=1e-5)
    np.testing.assert_allclose(px[5:10], np.repeat(px[4:5], 5, axis=0), atol=1e-6)
    np.testing.assert_allclose(px[0:3], np.repeat(px[3:4], 3, axis=0), atol=1e-6)  # before the first face
    np.testing.assert_allclose(px[10], frames[10][2][0].vertices, atol=2e-3)
    with pytest.raises(RecordError, match="no face"), SequenceWriter(tmp_path / "none.glb", fps=fps) as w:
        w.write(0, 0.0, [])
    assert not (tmp_path / "none.glb.journal").exists() and not (tmp_path / "none.glb").exists()
    _assert_valid(out)  # last: skips where node is missing


def test_disk_full_at_export_keeps_the_journal(clip, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full missing")
    fps, frames = clip
    out = tmp_path / "late.glb"
    (tmp_path / ".late.glb.tmp").symlink_to("/dev/full")  # the GLB's temp file: writes fail with ENOSPC
    w = SequenceWriter(out, RecordConfig(texture_size=0), fps=fps)
    with pytest.raises(RecordError, match="disk full") as err, w:
        for index, t, faces, _ in frames[:10]:
            w.write(index, t, faces)
    assert "--recover" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and len(read_journal(w.journal_dir)) == 10
    assert recover(w.journal_dir)["frames"] == 10  # the temp link was removed: now it writes
    _assert_valid(out)  # last: skips where node is missing


@pytest.mark.parametrize("quantize", [False, True])
def test_long_takes_get_sparse_weights(clip, recorded, tmp_path, monkeypatch, quantize):
    """Dense weights grow as frames²; past the limit they are a sparse accessor, same animation."""
    from face3d_live.record import glb

    _, frames = clip
    _, journal, _ = recorded
    monkeypatch.setattr(glb, "DENSE_WEIGHTS_MAX", 1000)  # the clip stands in for a long take
    out = tmp_path / "sparse.glb"
    recover(journal, out, RecordConfig(quantize=quantize, texture_size=64))
    gltf, _, px = _decode_frames(out)
    weights = gltf["animations"][0]["samplers"][3]["output"]
    assert "sparse" in gltf["accessors"][weights]
    assert np.abs(px[:-1] - _faces_px(frames)).max() < (0.05 if quantize else 2e-3)
    _assert_valid(out)  # last: skips where node is missing


def test_pipeline_stage_and_given_texture(clip, tmp_path):
    """The live app's way in: frames through ``process`` and its own accumulated (RGBA) texture."""
    from face3d_live.types import Frame

    fps, frames = clip
    texture = np.zeros((128, 128, 4), np.uint8)
    texture[..., 0], texture[..., 3] = 200, 255
    out = tmp_path / "live.npz"
    with SequenceWriter(out, RecordConfig(format="npz", texture_size=128)) as w:  # no fps: a camera
        for index, t, faces, rgb in frames[:24]:
            image = rgb if rgb is not None else np.zeros((360, 640, 3), np.uint8)
            frame = w.process(Frame(index, image, time.perf_counter_ns(), t, faces=faces))
            assert frame.timings_ns["record"] > 0
        w.set_texture(texture)
    with np.load(out) as z:
        assert len(z["vertices"]) == 24 and (z["texture"][..., 0] == 200).all()
