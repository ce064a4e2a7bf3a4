"""The two views: the camera frame with the tracked mesh + HUD (QPainter), and the live textured 3D
face (QOpenGLWidget + ModernGL, orbit with the mouse)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Protocol

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QMouseEvent, QPainter, QWheelEvent
from PyQt6.QtOpenGLWidgets import QOpenGLWidget
from PyQt6.QtWidgets import QLabel, QWidget

from face3d_live.errors import Face3DError
from face3d_live.types import Frame
from face3d_live.ui.overlay import OverlayOptions, annotate, frame_qimage, paint_frame, paint_hud
from face3d_live.ui.scene import DEFAULT_DISTANCE, FaceScene, SceneConfig

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    """Where a GL view sends an extra render of each painted frame (the virtual camera)."""

    size: tuple[int, int]

    def process(self, rgb: np.ndarray) -> None: ...


def create_gl_context():
    """A ModernGL context on Qt's current one (GLX on X11, else EGL); Face3DError below OpenGL 3.3."""
    import moderngl

    try:
        ctx = moderngl.create_context()
    except Exception:  # Wayland / EGL platforms: attach to the current EGL context instead
        ctx = moderngl.create_context(backend="egl")
    if ctx.version_code < 330:
        raise Face3DError(f"OpenGL {ctx.version_code / 100:.1f}; 3.3 or newer is needed")
    return ctx


def hint_label(parent: QWidget) -> QLabel:
    """The "waiting for a face…" note in a GL view's corner (also where it says why it cannot draw)."""
    label = QLabel("waiting for a face…", parent)
    label.setStyleSheet("color: #b8b8c0; background: transparent; padding: 8px;")
    label.move(8, 8)
    label.adjustSize()
    return label


class SinkTarget:
    """An offscreen target of the sink's size, made and freed on the GL thread with the context current:
    a view renders its frame a second time into it, so the sink gets its own size and aspect (not the
    widget's) and the on-screen framebuffer is never read back."""

    def __init__(self) -> None:
        self._target = None

    def fbo(self, ctx, size: tuple[int, int]):
        from face3d_live.render import OffscreenTarget

        if self._target is None or self._target.size != tuple(size):
            self.close()
            self._target = OffscreenTarget(ctx, size)
        return self._target.fbo

    def read_rgb(self) -> np.ndarray:
        return np.ascontiguousarray(self._target.read()[..., :3])

    def close(self) -> None:
        if self._target is not None:
            self._target.close()
            self._target = None


class CameraView(QWidget):
    """The frame letterboxed, the tracked mesh and landmarks over it, the HUD in the corner.

    ``painted(seq)`` is emitted after a paint that showed frame ``seq``; ``annotate_ns`` / ``paint_ns``
    time drawing the overlay on the frame and painting the widget.
    """

    painted = pyqtSignal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(480, 300)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.options = OverlayOptions()
        self._frame: Frame | None = None
        self._image: QImage | None = None
        self._seq = -1
        self._hud: list[str] = []
        self._hud_warn = False
        self._placeholder = "starting…"
        self.paint_ns = 0
        self.annotate_ns = 0

    def set_frame(self, frame: Frame, seq: int, annotated: np.ndarray | None = None) -> None:
        """``annotated``: the frame with the overlay already drawn (by the pipeline worker); else drawn here."""
        t0 = time.perf_counter_ns()
        self._frame, self._seq = frame, seq
        if annotated is None:
            annotated = annotate(frame.image, frame.faces, self.options)
        self._image = frame_qimage(annotated)
        self.annotate_ns = time.perf_counter_ns() - t0
        self.update()

    @property
    def hud(self) -> list[str]:
        return list(self._hud)

    def set_hud(self, lines: list[str], warn: bool = False) -> None:
        self._hud, self._hud_warn = lines, warn
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        t0 = time.perf_counter_ns()
        painter = QPainter(self)
        target = QRectF(self.rect())
        if self._image is None:
            painter.fillRect(target, QColor(16, 16, 20))
            painter.setPen(QColor(170, 170, 180))
            flags = Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap
            painter.drawText(target.adjusted(24, 24, -24, -24), int(flags.value), self._placeholder)
        else:
            paint_frame(painter, target, self._image)
        if self._hud:
            paint_hud(painter, QPointF(8, 8), self._hud, self._hud_warn)
        painter.end()
        self.paint_ns = time.perf_counter_ns() - t0
        if self._seq >= 0:
            seq, self._seq = self._seq, -1
            self.painted.emit(seq)


class FaceGLView(QOpenGLWidget):
    """The reconstructed face, textured from the video, under an orbit camera.

    Drag: orbit; wheel: zoom; double-click: front view. ``shown(seq)`` is emitted once the frame
    painted for result ``seq`` has been composited to the window (``frameSwapped``). ``failed`` holds
    the reason when no OpenGL 3.3 context could be made (the view then says so and stays empty).
    ``sink``: while set, each painted frame is also rendered at ``sink.size`` and handed to it.
    """

    shown = pyqtSignal(int)
    configured = pyqtSignal()  # the GL context exists and the scene settings are final

    def __init__(self, config: SceneConfig, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(360, 300)
        self.config = config
        self.scene: FaceScene | None = None
        self.ctx = None
        self.failed: str | None = None
        self.sink: FrameSink | None = None
        self._sink_target = SinkTarget()
        self._pending_seq = -1
        self._painted_seq = -1
        self._drag: QPointF | None = None
        self._hint = hint_label(self)
        self.frameSwapped.connect(self._swapped)

    @property
    def ready(self) -> bool:
        """The GL scene exists (it may still have failed since: see ``failed``)."""
        return self.scene is not None

    @property
    def timings_ns(self) -> dict[str, int]:
        return self.scene.timings_ns if self.scene is not None else {}

    # ---- data ---------------------------------------------------------------------------------------
    def show_frame(self, frame: Frame, seq: int) -> None:
        if self.scene is not None:
            self.scene.show(frame, frame.faces[0] if frame.faces else None)
            self._hint.setVisible(not self.scene.has_face and not frame.faces)
        self._pending_seq = seq
        self.update()

    def set_texture_size(self, size: int) -> None:
        self.config = replace(self.config, texture_size=size)
        if self.scene is not None:
            self.scene.set_texture_size(size)

    @property
    def texture_size(self) -> int | None:
        return self.scene.config.texture_size if self.scene is not None else self.config.texture_size

    def reset_view(self) -> None:
        if self.scene is not None:
            cam = self.scene.camera
            cam.yaw = cam.pitch = 0.0
            cam.distance = DEFAULT_DISTANCE
            self.update()

    def reset_texture(self) -> None:
        if self.scene is not None:
            self.scene.reset_texture()

    def texture_rgb(self) -> np.ndarray | None:
        """The accumulated texture (S, S, 3) uint8, read back with the context current."""
        if self.scene is None:
            return None
        self.makeCurrent()
        try:
            return self.scene.texture_rgb()
        finally:
            self.doneCurrent()

    # ---- GL -----------------------------------------------------------------------------------------
    def initializeGL(self) -> None:  # noqa: N802 - Qt API
        try:
            self.ctx = create_gl_context()
            self.scene = FaceScene(self.ctx, self.config)
            self.config = self.scene.config  # automatic texture size/rate resolved for this GPU
            self.configured.emit()
            log.info("3D view: %s, GL %d", self.ctx.info["GL_RENDERER"], self.ctx.version_code)
        except Exception as exc:  # no usable OpenGL: the rest of the app still works
            self.failed = f"3D view unavailable: {exc}"
            log.warning("%s", self.failed)
            self._hint.setText(self.failed)
            self._hint.adjustSize()
            return
        self.context().aboutToBeDestroyed.connect(self.release_gl)

    def paintGL(self) -> None:  # noqa: N802 - Qt API
        if self.scene is None:
            return
        fbo = self.ctx.detect_framebuffer(self.defaultFramebufferObject())
        try:
            self.scene.draw(fbo)
            sink = self.sink
            if sink is not None:
                self.scene.renderer.render(self._sink_target.fbo(self.ctx, sink.size), self.scene.camera)
                sink.process(self._sink_target.read_rgb())
                fbo.use()
        except Exception as exc:  # a GL error must not take the window down; say it once
            if self.failed is None:
                self.failed = f"3D view error: {exc}"
                log.exception("3D view")
                self._hint.setText(self.failed)
                self._hint.adjustSize()
                self._hint.show()
        self._painted_seq = self._pending_seq
        self._pending_seq = -1

    def _swapped(self) -> None:
        if self._painted_seq >= 0:
            seq, self._painted_seq = self._painted_seq, -1
            self.shown.emit(seq)

    def release_gl(self) -> None:
        """Free the GL objects with this widget's context current (idempotent)."""
        if self.scene is None:
            return
        self.makeCurrent()
        try:
            self._sink_target.close()
            self.scene.close()
        finally:
            self.scene = None
            self.doneCurrent()

    # ---- mouse --------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag = event.position()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        if self._drag is not None and self.scene is not None:
            d = event.position() - self._drag
            self._drag = event.position()
            self.scene.camera.orbit(d.x(), d.y())
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self._drag = None

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        self.reset_view()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt API
        if self.scene is not None:
            self.scene.camera.zoom(event.angleDelta().y() / 120.0)
            self.update()
