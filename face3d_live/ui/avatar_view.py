"""The avatar view: the rigged head driven by the tracked face's blendshapes, gaze and head rotation only
(what a VMC / Live Link receiver shows), drawn by ``render.avatar.AvatarRenderer`` in Qt's GL context."""

from __future__ import annotations

import logging

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtOpenGLWidgets import QOpenGLWidget
from PyQt6.QtWidgets import QWidget

from face3d_live.render.avatar import AvatarConfig
from face3d_live.types import Face, Frame
from face3d_live.ui.views import FrameSink, SinkTarget, create_gl_context, hint_label

log = logging.getLogger(__name__)


class AvatarGLView(QOpenGLWidget):
    """``show_frame(frame, seq)`` takes the largest face (the last one stays while no face is seen);
    ``shown(seq)`` once that frame is composited. ``sink``: while set, each painted frame is also
    rendered at ``sink.size`` and handed to it (the virtual camera). ``failed``: why there is no avatar (no GL 3.3, rig asset missing)."""

    shown = pyqtSignal(int)

    def __init__(self, config: AvatarConfig = AvatarConfig(), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(300, 300)
        self.config = config
        self.renderer = None
        self.ctx = None
        self.failed: str | None = None
        self.sink: FrameSink | None = None
        self._sink_target = SinkTarget()
        self.face: Face | None = None
        self._pending_seq = -1
        self._painted_seq = -1
        self._hint = hint_label(self)
        self._init_retries = 1  # see paintGL
        self.frameSwapped.connect(self._swapped)
        self.setToolTip(
            "the avatar: driven only by the blendshapes, gaze and head rotation that are streamed"
        )

    @property
    def ready(self) -> bool:
        """The renderer exists (it may still have failed since: see ``failed``)."""
        return self.renderer is not None

    @property
    def timings_ns(self) -> dict[str, int]:
        return self.renderer.timings_ns if self.renderer is not None else {}

    def show_frame(self, frame: Frame, seq: int) -> None:
        if frame.faces:
            self.face = frame.faces[0]
            if self.renderer is not None:
                self.renderer.set_face(self.face)
            if self.failed is None:
                self._hint.hide()
        self._pending_seq = seq
        self.update()

    def _say(self, text: str) -> None:
        self.failed = text
        log.warning("%s", text)
        self._hint.setText(text)
        self._hint.setWordWrap(True)
        self._hint.resize(max(self.width() - 16, 200), 80)
        self._hint.show()

    def initializeGL(self) -> None:  # noqa: N802 - Qt API
        try:
            from face3d_live.render.avatar import AvatarRenderer

            self.ctx = create_gl_context()
            self.renderer = AvatarRenderer(self.ctx, config=self.config)  # loads the ARKit rig
            if self.face is not None:
                self.renderer.set_face(self.face)
        except Exception as exc:  # no GL or no rig: the rest of the app still works
            self._say(f"avatar unavailable: {exc}")
            return
        if self.failed is not None:  # a retry worked (paintGL)
            log.info("avatar view: GL set up on the second try")
            self.failed = None
            self._hint.setText("waiting for a face…")
            self._hint.setVisible(self.face is None)
        self.context().aboutToBeDestroyed.connect(self.release_gl)

    def paintGL(self) -> None:  # noqa: N802 - Qt API
        if self.renderer is None and self._init_retries > 0:
            # once more with the context current again: under Xvfb the first set-up once failed to create a
            # shader program ("cannot create program") where the next run of the same test did not
            self._init_retries -= 1
            self.initializeGL()
        if self.renderer is None:
            return
        fbo = self.ctx.detect_framebuffer(self.defaultFramebufferObject())
        try:
            sink = self.sink
            if sink is not None:  # first, so the widget's framebuffer is the one bound at the end
                self.renderer.render(self._sink_target.fbo(self.ctx, sink.size))
                sink.process(self._sink_target.read_rgb())
            self.renderer.render(fbo)
        except Exception as exc:  # a GL error must not take the window down; say it once
            if self.failed is None:
                log.exception("avatar view")
                self._say(f"avatar view error: {exc}")
        self._painted_seq, self._pending_seq = self._pending_seq, -1

    def _swapped(self) -> None:
        if self._painted_seq >= 0:
            seq, self._painted_seq = self._painted_seq, -1
            self.shown.emit(seq)

    def release_gl(self) -> None:
        """Free the GL objects with this widget's context current (idempotent)."""
        if self.renderer is None:
            return
        self.makeCurrent()
        try:
            self._sink_target.close()
            self.renderer.close()
        finally:
            self.renderer = None
            self.doneCurrent()
