"""The live app: the real Qt window with real OpenGL (Mesa llvmpipe) under Xvfb, on a real video.

Screenshots are saved to $FACE3D_TEST_SHOTS (default: the system temp folder) for a human look.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PyQt6.QtOpenGLWidgets")
pytest.importorskip("moderngl")

from PyQt6.QtCore import Qt  # noqa: E402

from face3d_live.training.data import default_data_dir  # noqa: E402

VIDEO = default_data_dir() / "videos" / "single_face.mp4"
SHOTS = Path(os.environ.get("FACE3D_TEST_SHOTS", tempfile.gettempdir()))


@pytest.fixture(scope="module")
def xvfb():
    """A private X server (display number chosen by Xvfb itself); stopped after the module."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        pytest.skip("Xvfb did not start")
    saved = {k: os.environ.get(k) for k in ("DISPLAY", "QT_QPA_PLATFORM")}
    os.environ["DISPLAY"] = f":{number}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    yield os.environ["DISPLAY"]
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=5)


@pytest.fixture(scope="module")
def qapp(xvfb):
    from face3d_live.ui.app import setup_qt

    # An EGL context made earlier in this process (the render tests) stays bound to the thread after
    # moderngl releases it, and Qt then cannot make its GLX context current: unbind it first.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libEGL.so.1").eglReleaseThread()
    app = setup_qt()
    if app.platformName() != "xcb":
        pytest.skip(f"a QApplication on platform {app.platformName()!r} exists already in this process")
    yield app
    # disconnect from the X server before it goes away (else Qt aborts the process at exit)
    from PyQt6 import sip

    app.closeAllWindows()
    app.processEvents()
    sip.delete(app)


def wait_until(condition, timeout: float) -> bool:
    """Run the Qt event loop until ``condition()`` holds or ``timeout`` s pass."""
    from PyQt6.QtTest import QTest

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        QTest.qWait(20)
    return True


def region(image, widget, window) -> np.ndarray:
    """(h, w, 3) uint8 RGB of ``widget``'s area in a grab of ``window``."""
    from PyQt6.QtCore import QPoint
    from PyQt6.QtGui import QImage

    img = image.convertToFormat(QImage.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits().asstring(img.sizeInBytes()), np.uint8)
    arr = arr.reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3].reshape(
        img.height(), img.width(), 3
    )
    ratio = image.width() / window.width()
    p = widget.mapTo(window, QPoint(0, 0))
    x0, y0 = int(p.x() * ratio), int(p.y() * ratio)
    return arr[y0 : y0 + int(widget.height() * ratio), x0 : x0 + int(widget.width() * ratio)]


@pytest.fixture(autouse=True)
def _destroy_closed_windows(qapp):
    """Destroy each test's closed window here, between tests. Left to Python's garbage collector it was
    destroyed whenever a collection ran: once in the middle of the next window's first paint, where its
    QOpenGLWidgets' teardown left no GL context current under the widget being painted and Qt crashed
    (QOpenGLContext::functions() in QOpenGLWidget::paintEvent, under gdb): 10 runs in 10 of this file without
    pytest-rerunfailures, whose protocol happens to collect between tests, none with a collection here; the
    segfaults on the switch to the 3D view in 2 of 6 full runs that day look like the same thing)."""
    yield
    gc.collect()
    qapp.processEvents()


def make_window(**kw):
    from face3d_live.ui.config import AppConfig
    from face3d_live.ui.main_window import MainWindow

    window = MainWindow(AppConfig(window_size=(1200, 700), **kw))
    window.show()
    return window


def close_timed(window) -> float:
    t0 = time.perf_counter()
    window.close()
    return time.perf_counter() - t0


@pytest.mark.skipif(not VIDEO.exists(), reason="shared test video not found")
def test_app_on_video_renders_face_hud_alerts_and_shuts_down(qapp, tmp_path):
    window = make_window(source=str(VIDEO), snapshot_dir=tmp_path, record_dir=tmp_path)
    try:
        assert wait_until(lambda: window.stats.frames_total >= 40, 60), window.messages
        assert window.pipeline.state == "running" and not window.banner.isVisible()

        # the HUD shows numbers, and they move
        assert wait_until(lambda: "end-to-end" in window.hud_text(), 2)
        hud1 = window.hud_text()
        wait_until(lambda: False, 1.0)
        hud2 = window.hud_text()
        assert hud1 != hud2
        m = re.search(r"FPS\s+([\d.]+)\s+end-to-end ms\s+p50 ([\d.]+)\s+p95 ([\d.]+)", hud2)
        assert m and float(m[1]) > 0 and 0 < float(m[2]) <= float(m[3])
        assert "mediapipe · litert (cpu, fp32)" in hud2 and "GPU" in hud2
        assert re.search(r"infer [\d.]+", hud2) and re.search(r"render [\d.]+", hud2)

        # a screenshot: the 3D view shows a rendered, textured face; the camera view shows video
        shot = window.grab().toImage()
        assert shot.save(str(SHOTS / "face3d_app_window.png"))
        gl = region(shot, window.gl_view, window).astype(np.int32)
        r, g, b = gl[..., 0], gl[..., 1], gl[..., 2]
        background = np.abs(gl - np.array([18, 18, 23])).max(-1) <= 12
        skin = (r > 90) & (r > g + 10) & (g > b) & (r - b > 25)
        assert background.mean() > 0.2, "the 3D view has no background around the face"
        assert skin.mean() > 0.08, f"only {skin.mean():.1%} skin-coloured pixels in the 3D view"
        cam = region(shot, window.camera_view, window)
        assert cam.std() > 20  # a real picture, not a flat placeholder
        assert (window.gl_view.scene.timings_ns.get("render", 0)) > 0

        # orbit with the mouse: the camera turns and the view changes; a new texture size rebuilds it
        from PyQt6.QtCore import QPoint
        from PyQt6.QtTest import QTest

        view = window.gl_view
        c = view.rect().center()
        QTest.mousePress(view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c)
        QTest.mouseMove(view, c + QPoint(60, 10))
        QTest.mouseRelease(
            view, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, c + QPoint(60, 10)
        )
        assert abs(view.scene.camera.yaw) > 10
        window.texture_box.setCurrentText("256")
        window.texture_box.activated.emit(window.texture_box.currentIndex())
        assert wait_until(
            lambda: view.scene.config.texture_size == 256 and view.scene._accumulator is not None, 10
        )
        wait_until(lambda: False, 0.5)
        turned = window.grab().toImage()
        turned.save(str(SHOTS / "face3d_app_orbit.png"))
        gl2 = region(turned, view, window).astype(np.int32)
        assert np.abs(gl2 - gl).mean() > 5  # the face is seen from another side
        view.reset_view()

        snap = window.snapshot()
        assert snap is not None and snap.stat().st_size > 10_000

        # an injected latency spike: exactly one alert, cleared once frames are fast again
        assert wait_until(lambda: not window.alerts.is_active("latency"), 10)
        before = window.alerts.raised_count.get("latency", 0)
        window.pipeline.inject_delay(0.25, 5)
        assert wait_until(lambda: window.alerts.is_active("latency"), 10), "spike raised no alert"
        alert = next(a for a in window.alerts.active() if a.key == "latency")
        assert wait_until(lambda: not alert.active, 15), "the latency alert did not clear"
        assert window.alerts.raised_count["latency"] == before + 1
        wait_until(lambda: False, 0.4)  # a HUD/alerts tick
        items = [window.alert_list.item(i).text() for i in range(window.alert_list.count())]
        assert any("latency spike" in t and "cleared" in t for t in items), items
        shot = window.grab().toImage()
        shot.save(str(SHOTS / "face3d_app_after_spike.png"))

        # record about a second of the performance: a GLB with the live texture
        window.record_button.setChecked(True)
        recorded = window.stats.frames_total
        assert wait_until(lambda: window.stats.frames_total >= recorded + 10, 10)
        window.record_button.setChecked(False)
        assert wait_until(
            lambda: any(
                "Saved recording" in window.alert_list.item(i).text()
                for i in range(window.alert_list.count())
            ),
            30,
        )
        takes = list(tmp_path.glob("take_*.glb"))
        assert len(takes) == 1 and takes[0].stat().st_size > 50_000

        # a bad source: a visible message, and the running source goes on
        running = window.pipeline
        frames = window.stats.frames_total
        assert window.start_source("/no/such/video.mp4") is False
        assert window.banner.isVisible() and "no such file" in window.banner.text()
        assert window.pipeline is running
        assert wait_until(lambda: window.stats.frames_total > frames + 5, 10)
        threads = list(running._threads)
    finally:
        elapsed = close_timed(window)
    assert elapsed < 1.0 and window.shutdown_s < 1.0
    assert not any(t.is_alive() for t in threads)
    assert running.state == "stopped"


def test_no_camera_opens_on_demo_and_says_why(qapp, tmp_path):
    window = make_window(source="0", snapshot_dir=tmp_path)
    try:
        assert window.banner.isVisible()
        text = window.banner.text()
        assert "No camera" in text and "demo" in text
        assert window.pipeline.source_name == "demo"
        assert wait_until(lambda: window.stats.frames_total >= 10, 60), window.messages
        shot = window.grab().toImage()
        shot.save(str(SHOTS / "face3d_app_demo_fallback.png"))
    finally:
        elapsed = close_timed(window)
    assert elapsed < 1.0


@contextlib.contextmanager
def osc_server():
    """A real OSC/UDP server (python-osc) on a free loopback port; yields (port, received addresses)."""
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import ThreadingOSCUDPServer

    received: list[tuple[str, tuple]] = []
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: received.append((address, args)))
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not VIDEO.exists(), reason="shared test video not found")
def test_avatar_view_bars_neutral_streaming_and_virtual_camera(qapp, tmp_path):
    pytest.importorskip("pythonosc")
    from PyQt6.QtTest import QTest

    from face3d_live.expression.arkit import ARKIT_INDEX
    from face3d_live.ui.config import OutputConfig

    livelink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a Live Link receiver (plain UDP)
    livelink.bind(("127.0.0.1", 0))
    livelink.setblocking(False)
    ll_port = livelink.getsockname()[1]
    window = make_window(
        source=str(VIDEO),
        snapshot_dir=tmp_path,
        view="avatar",
        output=OutputConfig(livelink=f"127.0.0.1:{ll_port}"),
    )
    outputs = window.outputs
    try:
        assert window.view == "avatar"
        assert wait_until(lambda: window.stats.frames_total >= 30, 60), window.messages
        assert window.avatar_view.failed is None and window.avatar_view.renderer is not None
        assert not window.banner.isVisible()

        # the avatar view shows a head: skin and dark eye/mouth pixels on the background, and its time is in the HUD
        wait_until(lambda: False, 0.5)
        shot = window.grab().toImage()
        assert shot.save(str(SHOTS / "face3d_app_avatar.png"))
        assert (SHOTS / "face3d_app_avatar.png").stat().st_size > 20_000
        av = region(shot, window.avatar_view, window).astype(np.int32)
        background = np.abs(av - np.array([18, 18, 23])).max(-1) <= 8
        skin = (av[..., 0] > 120) & (av[..., 0] > av[..., 2] + 25)
        assert background.mean() > 0.2 and skin.mean() > 0.08, (background.mean(), skin.mean())
        assert "avatar" in window.stats.snapshot(time.perf_counter_ns()).stages
        snap = window.snapshot()
        assert snap is not None and snap.stat().st_size > 20_000

        # the bars show the last face's calibrated blendshapes, repainted at most 30 times a second
        face = window.avatar_view.face
        assert face is not None and np.allclose(window.bars.values, np.clip(face.blendshapes, 0, 1))
        paints = window.bars.paints
        wait_until(lambda: False, 1.0)
        assert 5 <= window.bars.paints - paints <= 32
        row = int(np.argmax(window.bars.values))
        value = float(window.bars.values[row])
        bars_img = window.bars.grab().toImage()
        track = window.bars.bar_rect(row)
        pixels = region(bars_img, window.bars, window.bars)[int(track.center().y())]
        filled = np.abs(pixels.astype(int) - [45, 47, 54]).max(-1) > 30  # not the empty track colour
        x0, x1 = int(track.left()), int(track.right())
        assert abs(filled[x0:x1].mean() - value) < 0.2, (filled[x0:x1].mean(), value)

        # Neutral: a message while the resting face is captured on the pipeline's reconstructor, then calibrated
        rec = window.pipeline.reconstructor
        assert not rec.calibration.captured
        QTest.mouseClick(outputs.neutral_button, Qt.MouseButton.LeftButton)
        assert window.banner.isVisible() and "neutral face" in window.banner.text()
        assert wait_until(lambda: rec.calibration.captured, 20)
        assert rec.calibration.neutral.max() > 0.05
        assert wait_until(lambda: not window.banner.isVisible(), 5)
        assert outputs.calibration_label.text() == "neutral captured"
        outputs.set_gain("jawOpen", 2.0)
        assert wait_until(lambda: window.bars.gains[ARKIT_INDEX["jawOpen"]] == 2.0, 5)
        assert rec.calibration.gain("jawOpen") == 2.0
        QTest.mouseClick(outputs.reset_button, Qt.MouseButton.LeftButton)
        assert wait_until(lambda: not rec.calibration.captured and rec.calibration.gain("jawOpen") == 1.0, 5)

        # Live Link from the configuration (--livelink): ticked at start, packets arrive
        assert outputs.livelink_check.isChecked() and not outputs.vmc_check.isChecked()
        packets = []

        def drain() -> int:
            with contextlib.suppress(BlockingIOError):
                while True:
                    packets.append(livelink.recv(65536))
            return len(packets)

        assert wait_until(lambda: drain() >= 5, 10)
        assert b"face3d" in packets[-1]  # the subject name travels in each packet

        # VMC: real OSC packets on loopback while ticked, none after unticking
        with osc_server() as (port, received):
            outputs.vmc_addr.setText(f"127.0.0.1:{port}")
            outputs.vmc_check.setChecked(True)
            assert wait_until(lambda: sum(a == "/VMC/Ext/Blend/Apply" for a, _ in received) >= 5, 10)
            blend = {args[0]: args[1] for a, args in received if a == "/VMC/Ext/Blend/Val"}
            assert "jawOpen" in blend and len(blend) == 52
            wait_until(lambda: False, 0.5)
            assert f"VMC → 127.0.0.1:{port}" in outputs.status.text()
            assert f"Live Link → 127.0.0.1:{ll_port}" in outputs.status.text()  # both targets, one streamer
            outputs.vmc_check.setChecked(False)
            wait_until(lambda: False, 0.3)
            n = len(received)
            wait_until(lambda: False, 0.5)
            assert len(received) == n
        outputs.livelink_check.setChecked(False)
        assert window.worker_side.streamer is None and outputs.status.text() == "not streaming"
        # a bad address: a visible message, the box unticked, the app goes on
        outputs.vmc_addr.setText("no-port-here")
        outputs.vmc_check.setChecked(True)
        assert not outputs.vmc_check.isChecked()
        assert window.banner.isVisible() and "Cannot stream" in window.banner.text()

        # the virtual camera path: the shown (avatar) view's painted image, upright, from the sender thread
        sent: list[np.ndarray] = []

        class Device:  # stands in for the v4l2loopback / OBS device this machine lacks
            device = "test-device"
            send = staticmethod(lambda frame: sent.append(frame.copy()))
            close = staticmethod(lambda: None)

        assert outputs.start_virtual_camera(lambda w, h, fps: Device())
        assert outputs.vcam_check.isChecked() and window.avatar_view.sink is outputs.vcam
        assert wait_until(lambda: len(sent) >= 10 and sent[-1].any(), 10)
        avatar_frame = sent[-1]
        window.set_view("3d")  # the camera follows the view on screen: now the textured 3D face
        assert wait_until(lambda: window.gl_view.scene is not None, 10)
        n = len(sent)
        assert wait_until(lambda: len(sent) > n + 10, 10)
        face3d = sent[-1].astype(np.int32)
        assert face3d.shape == (720, 1280, 3) and np.abs(face3d - avatar_frame).mean() > 5
        assert ((face3d[..., 0] > 90) & (face3d[..., 0] > face3d[..., 2] + 25)).mean() > 0.05
        window.set_view("avatar")
        outputs.vcam_check.setChecked(False)
        assert outputs.vcam is None and window.avatar_view.sink is None
        import cv2

        cv2.imwrite(str(SHOTS / "face3d_app_vcam_frame.png"), avatar_frame[..., ::-1])
        cv2.imwrite(str(SHOTS / "face3d_app_vcam_frame_3d.png"), face3d[..., ::-1].astype(np.uint8))
        frame = avatar_frame.astype(np.int32)
        assert frame.shape == (720, 1280, 3)
        cols = frame[:, 640 - 150 : 640 + 150]  # the avatar rendered at the camera's size: head, neck below
        skin = (cols[..., 0] > 120) & (cols[..., 0] > cols[..., 2] + 25)
        assert skin.mean() > 0.1 and skin[-40:].mean() > skin[:40].mean() + 0.1, "not upright"
        assert frame[:, :100].min() > 0, "letterboxed: not rendered at the camera's size"
        wait_until(lambda: False, 0.3)  # the on-screen view is unharmed by the second render
        av = region(window.grab().toImage(), window.avatar_view, window).astype(np.int32)
        assert ((av[..., 0] > 120) & (av[..., 0] > av[..., 2] + 25)).mean() > 0.08

        # the virtual camera with no backend here: one clear message, unticked, frames keep coming
        frames = window.stats.frames_total
        outputs.vcam_check.setChecked(True)
        if outputs.vcam is not None:  # a machine with v4l2loopback: it runs; switch it off again
            outputs.vcam_check.setChecked(False)
        else:
            assert not outputs.vcam_check.isChecked()
            assert window.banner.text().startswith("virtual camera unavailable: ")
            # no device (v4l2loopback), or no pyvirtualcam at all: either way the message says how to get one
            assert "v4l2loopback" in window.banner.text() or "face3d-live[vcam]" in window.banner.text()
        assert wait_until(lambda: window.stats.frames_total > frames + 10, 10)
        assert window.pipeline.state == "running"
    finally:
        elapsed = close_timed(window)
        livelink.close()
    assert elapsed < 1.0


@pytest.mark.skipif(not VIDEO.exists(), reason="shared test video not found")
def test_avatar_view_sets_up_gl_again_when_the_first_try_fails(qapp, tmp_path, monkeypatch):
    """The first set-up failing (as "cannot create program" did once under Xvfb) leaves a message, then the
    next paint tries again with the context current and the real renderer draws the head."""
    from face3d_live.render import avatar

    real, calls = avatar.AvatarRenderer, []

    def first_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("compile error: cannot create program")
        return real(*args, **kwargs)

    monkeypatch.setattr(avatar, "AvatarRenderer", first_fails)
    window = make_window(source=str(VIDEO), snapshot_dir=tmp_path, view="avatar")
    try:
        view = window.avatar_view
        assert wait_until(lambda: view.renderer is not None, 30), view.failed
        assert len(calls) == 2 and view.failed is None
        assert wait_until(lambda: window.stats.frames_total >= 10, 60), window.messages
        wait_until(lambda: False, 0.3)
        av = region(window.grab().toImage(), view, window).astype(np.int32)
        skin = (av[..., 0] > 120) & (av[..., 0] > av[..., 2] + 25)
        assert skin.mean() > 0.05  # the head is drawn
    finally:
        close_timed(window)
