"""The avatar (render/avatar.py) on a headless EGL context, driven by a real face's result, and the
virtual-camera sink (ui/vcam.py). Images are saved to $FACE3D_TEST_SHOTS (default: the temp folder)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_live.errors import BackendUnavailable, ModelError
from face3d_live.expression.arkit import ARKIT_INDEX

SHOTS = Path(os.environ.get("FACE3D_TEST_SHOTS", tempfile.gettempdir()))
SIZE = (240, 300)


@pytest.fixture(scope="module")
def avatar(ctx):
    from face3d_live.render.avatar import AvatarRenderer

    try:
        renderer = AvatarRenderer(ctx)  # the shipped ARKit rig
    except ModelError as exc:
        pytest.skip(f"no ARKit rig: {exc}")
    with renderer:
        yield renderer


@pytest.fixture(scope="module")
def real_face(video_path, reconstructor):
    """The tracked face of frame 30 of single_face.mp4 (blendshapes, gaze and pose from the real model)."""
    cap = cv2.VideoCapture(str(video_path("single_face.mp4")))
    for _ in range(30):
        ok, frame = cap.read()
        assert ok
    cap.release()
    faces = reconstructor.reconstruct(np.ascontiguousarray(frame[..., ::-1]))
    assert faces and faces[0].blendshapes is not None and faces[0].gaze is not None
    return faces[0]


def _background(avatar) -> np.ndarray:
    return np.round(np.array(avatar.config.background[:3]) * 255)


def _weights(**named: float) -> np.ndarray:
    w = np.zeros(52, np.float32)
    for name, v in named.items():
        w[ARKIT_INDEX[name]] = v
    return w


def _box(image: np.ndarray, centre, half: int) -> np.ndarray:
    x, y = (int(round(c)) for c in centre)
    return image[y - half : y + half + 1, x - half : x + half + 1]


def _yaw(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_head_is_closed_around_the_rig():
    """Face + skull + pockets form one closed surface (after merging the pockets' rim copies with the
    rims): a head, not a mask, seen from any side."""
    from face3d_live.avatar.rig import ArkitRig
    from face3d_live.render.avatar import AvatarMesh, boundary_loops

    try:
        rig = ArkitRig.load()
    except ModelError as exc:
        pytest.skip(f"no ARKit rig: {exc}")
    loops = sorted(len(lp) for lp in boundary_loops(rig.triangles))
    assert loops == [16, 16, 20, 36]  # two eyes, the mouth, the face's outer edge
    m = AvatarMesh(rig.neutral, rig.triangles)
    pts = m.positions(rig.shape(_weights(jawOpen=1.0)))
    _, merged = np.unique(np.round(pts, 5), axis=0, return_inverse=True)
    tris = merged.reshape(-1)[m.triangles]
    tris = tris[(tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 2] != tris[:, 0])]
    directed = Counter(
        map(tuple, np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]).tolist())
    )
    assert max(directed.values()) == 1, "inconsistent winding"
    assert all((b, a) in directed for a, b in directed), "the head has a hole"
    assert m.colors.shape == (m.num_vertices, 3) and np.isfinite(pts).all()


def test_real_face_renders_a_head_with_eyes(avatar, real_face):
    avatar.set_face(real_face)
    image = avatar.render_rgb(SIZE)
    cv2.imwrite(str(SHOTS / "face3d_avatar_real_face.png"), image[..., ::-1])
    assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8
    foreground = np.abs(image.astype(int) - _background(avatar)).max(-1) > 6
    assert 0.2 < foreground.mean() < 0.8, f"{foreground.mean():.0%} of the view is the avatar"
    assert foreground[:, : SIZE[0] // 10].mean() < 0.05, "the head is centred, not at the image position"
    skin = (image[..., 0] > 120) & (image[..., 0] > image[..., 2] + 25)
    assert skin.mean() > 0.1
    # each eye: white sclera and a dark iris/pupil where the eyeball sits
    centres = avatar.project(np.stack([e.centre for e in avatar.mesh.eyes]), SIZE)
    for centre in centres:
        box = _box(image, centre, 7).astype(int)
        assert (box.max(-1) < 70).sum() >= 10, "no dark iris pixels in the eye"
        assert (box.min(-1) > 170).sum() >= 5, "no white of the eye"
    assert avatar.timings_ns["avatar"] > 0


def test_open_jaw_shows_the_dark_mouth_inside(avatar):
    images = {}
    for jaw in (0.0, 1.0):
        avatar.set_state(_weights(jawOpen=jaw))
        images[jaw] = avatar.render_rgb(SIZE).astype(int)
    cv2.imwrite(
        str(SHOTS / "face3d_avatar_jaw.png"),
        np.concatenate([images[0.0], images[1.0]], 1)[..., ::-1].astype(np.uint8),
    )
    lips = avatar.rig.shape(_weights(jawOpen=1.0))[[13, 14, 78, 308]]  # inner lip: top, bottom, corners
    corners = avatar.project(lips, SIZE)
    x0, y0 = corners.min(0).astype(int) - 4
    x1, y1 = corners.max(0).astype(int) + 4
    dark = {jaw: int((img[y0:y1, x0:x1].max(-1) < 60).sum()) for jaw, img in images.items()}
    bg = _background(avatar)
    for img in images.values():  # the inside is the cavity, never the background showing through
        assert not (np.abs(img[y0:y1, x0:x1] - bg).max(-1) <= 2).any()
    assert dark[1.0] > dark[0.0] + 100, dark


def test_head_pose_and_gaze_move_the_image(avatar):
    avatar.set_state(_weights())
    front = avatar.render_rgb(SIZE).astype(int)
    avatar.set_state(_weights(), _yaw(30.0))
    turned = avatar.render_rgb(SIZE).astype(int)
    assert np.abs(turned - front).mean() > 5

    # looking to the subject's left (+x of the head frame): each iris moves that way on screen
    shots = {}
    for yaw in (-25.0, 25.0):
        avatar.set_state(_weights(), None, np.full((2, 2), (yaw, 0.0), np.float32))
        shots[yaw] = avatar.render_rgb(SIZE).astype(int)
    left_of_subject = np.sign(np.diff(avatar.project(np.array([[-1.0, 0, 0], [1.0, 0, 0]]), SIZE)[:, 0])[0])
    for eye in avatar.mesh.eyes:
        c = avatar.project(eye.centre[None], SIZE)[0]
        xs = {}
        for yaw, img in shots.items():
            box = _box(img, c, 9)
            ys, xx = np.nonzero(box.max(-1) < 70)
            assert len(xx) >= 10
            xs[yaw] = xx.mean()
        assert (xs[25.0] - xs[-25.0]) * left_of_subject > 1.5, xs
    # without gaze angles the eyeLook shapes turn the eyes (what a receiver of the 52 weights does)
    avatar.set_state(_weights(eyeLookOutLeft=1.0, eyeLookInRight=1.0))
    assert avatar.gaze[0, 0] > 20 and avatar.gaze[1, 0] > 20


class _RecordingDevice:
    """A camera device that keeps what it is sent (the sink under test is VirtualCamera, not the device)."""

    device = "/dev/null-cam"

    def __init__(self, width: int, height: int, fps: float) -> None:
        self.frames: list[tuple[float, np.ndarray]] = []
        self.closed = False

    def send(self, frame: np.ndarray) -> None:
        self.frames.append((time.perf_counter(), frame.copy()))

    def close(self) -> None:
        self.closed = True


def test_virtual_camera_paces_letterboxes_and_drops_stale_frames():
    from face3d_live.ui.vcam import VirtualCamera

    devices = []

    def factory(w, h, fps):
        devices.append(_RecordingDevice(w, h, fps))
        return devices[-1]

    with VirtualCamera(64, 48, 50.0, device_factory=factory) as cam:
        burst = threading.Thread(
            target=lambda: [cam.process(np.full((30, 20, 3), i, np.uint8)) for i in range(1, 200)]
        )
        burst.start()
        burst.join()
        time.sleep(0.5)
    dev = devices[0]
    assert dev.closed and cam.status.startswith("virtual camera /dev/null-cam: 64×48 @ 50 fps")
    times = np.array([t for t, _ in dev.frames])
    assert 15 <= len(times) <= 35, len(times)  # ~0.5 s at 50 frames/s
    assert 0.015 < np.median(np.diff(times)) < 0.025
    assert cam.dropped >= 150  # a burst of 199 frames: only the newest ones were sent
    last = dev.frames[-1][1]
    assert last.shape == (48, 64, 3)
    # a 20x30 portrait frame letterboxed into 64x48: centred, black bars left and right
    assert (last[:, :10] == 0).all() and (last[:, -10:] == 0).all() and (last[:, 32] == 199).all()


def test_virtual_camera_without_backend_says_how_to_get_one():
    pytest.importorskip("pyvirtualcam")
    from face3d_live.ui.vcam import VirtualCamera

    try:
        cam = VirtualCamera(640, 480, 30.0)
    except BackendUnavailable as exc:
        text = str(exc)
        assert text.startswith("virtual camera unavailable: ") and "v4l2loopback" in text and "\n" not in text
    else:  # a machine with a loopback device
        cam.close()
        pytest.skip("a virtual camera backend exists here")


def test_app_output_options_are_checked_up_front():
    """`face3d-live app --vmc/--livelink/--virtual-camera/--view` map to AppConfig; a bad value is one line."""
    import argparse

    from face3d_live.cli import app as app_cli
    from face3d_live.errors import ConfigError
    from face3d_live.ui.config import AppConfig, OutputConfig

    parser = argparse.ArgumentParser()
    app_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "app",
            "--view",
            "avatar",
            "--vmc",
            "127.0.0.1:39539",
            "--livelink",
            "[::1]:11111",
            "--virtual-camera",
        ]
    )
    cfg = app_cli.config_from_args(args)
    assert cfg.view == "avatar" and cfg.output == OutputConfig(
        vmc="127.0.0.1:39539", livelink="[::1]:11111", virtual_camera=True
    )
    for bad in (dict(vmc="localhost"), dict(livelink="host:99999"), dict(vcam_size=(641, 480))):
        with pytest.raises(ConfigError) as err:
            OutputConfig(**bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown view"):
        AppConfig(view="mask")
