"""The live app: the real Qt window with real OpenGL (Mesa llvmpipe) under Xvfb, on a real video.

Screenshots are saved to $FACE3D_TEST_SHOTS (default: the system temp folder) for a human look.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import tempfile
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
