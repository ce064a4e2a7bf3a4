"""The main window: camera view + HUD, the live 3D face or the avatar (tabs), controls, avatar output,
alerts panel.

The pipeline runs on its own threads (pipeline/live.py); its worker signals "result ready" through a
queued Qt signal, the window takes the newest result, paints the views and, when the frame has been
composited (``shown`` of the 3D or avatar view, whichever is on screen), records its end-to-end latency
in the monitor. The worker also runs ``WorkerSide`` after each frame: queued calibration changes, the
stream sends, the mesh overlay. A 4 Hz timer refreshes the HUD, evaluates the alerts, reads the GPU
state and the output status. Closing stops everything within ~1 s.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QKeySequence, QPainter, QShortcut
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from face3d_live.errors import CaptureError, Face3DError
from face3d_live.expression.arkit import ARKIT_INDEX
from face3d_live.monitor.alerts import CRITICAL, Alert, AlertEngine
from face3d_live.monitor.gpu import GpuMonitor
from face3d_live.monitor.stats import FrameRecord, RollingStats
from face3d_live.pipeline.channels import Closed
from face3d_live.pipeline.live import LiveConfig, LivePipeline, LiveResult, PipelineEvent
from face3d_live.ui.avatar_view import AvatarGLView
from face3d_live.ui.bars import BlendshapeBars, scrollable
from face3d_live.ui.config import BACKEND_CHOICES, AppConfig
from face3d_live.ui.hud import hud_lines
from face3d_live.ui.output_panel import OutputPanel
from face3d_live.ui.scene import TEXTURE_SIZES
from face3d_live.ui.views import CameraView, FaceGLView
from face3d_live.ui.worker_side import WorkerDisplay, WorkerSide

log = logging.getLogger(__name__)

TICK_MS = 250


class _Bridge(QObject):
    """Signals emitted from pipeline threads; Qt queues them onto the UI thread."""

    result = pyqtSignal(object)  # the pipeline that has a result
    event = pyqtSignal(object, object)  # (pipeline, PipelineEvent)
    saved = pyqtSignal(str, bool)  # (message, ok) from the recording finisher


def source_label(spec: str) -> str:
    return f"camera {spec}" if spec.isdigit() else spec


def short_source(spec: str) -> str:
    return source_label(spec) if spec.isdigit() or spec == "demo" else Path(spec).name


def parse_source(text: str) -> str:
    """Combo text → open_source spec: "camera 1" → "1"; anything else as typed."""
    text = text.strip()
    if text.lower().startswith("camera "):
        return text.split()[-1]
    return text


class MainWindow(QMainWindow):
    def __init__(self, config: AppConfig) -> None:
        super().__init__()
        self.config = config
        self.setWindowTitle("face3d-live")
        self.resize(*config.window_size)
        self.stats = RollingStats()
        self.alerts = AlertEngine(config.alerts)
        self.gpu = GpuMonitor()
        self.gpu_state = None
        self.pipeline: LivePipeline | None = None
        self.source_spec = ""
        self.messages: list[str] = []  # every message shown in the banner, oldest first (tests read it)
        self.shutdown_s: float | None = None
        self.fatal: str | None = None  # why the pipeline stopped, if it did
        self._bridge = _Bridge()
        self._bridge.result.connect(self._on_result)
        self._bridge.event.connect(self._on_event)
        self._bridge.saved.connect(self._on_saved)
        self._seq = 0
        self._inflight: dict[int, LiveResult] = {}
        self._writer = None
        self._record_t0_ns = 0
        self._alert_items: dict[int, QListWidgetItem] = {}
        self._closing = False
        self.worker_side = WorkerSide(lambda: self.camera_view.options)
        self._build()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._tick)
        self._timer.start(TICK_MS)
        self.start_source(config.source, initial=True)
        self.outputs.start()

    # ---- layout -------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.camera_view = CameraView()
        self.gl_view = FaceGLView(self.config.scene)
        self.avatar_view = AvatarGLView()
        self.bars = BlendshapeBars()
        self.bars.gain_requested.connect(self._ask_gain)
        self.camera_view.painted.connect(self._on_camera_painted)
        self.gl_view.shown.connect(self._on_shown)
        self.avatar_view.shown.connect(self._on_shown)
        avatar_page = QWidget()
        avatar_row = QHBoxLayout(avatar_page)
        avatar_row.setContentsMargins(0, 0, 0, 0)
        avatar_row.setSpacing(4)
        avatar_row.addWidget(self.avatar_view, 1)
        self.bars_area = scrollable(self.bars)
        avatar_row.addWidget(self.bars_area)
        self.view_tabs = QTabWidget()
        self.view_tabs.addTab(self.gl_view, "3D face")
        self.view_tabs.addTab(avatar_page, "Avatar")
        self.view_tabs.setCurrentIndex(1 if self.config.view == "avatar" else 0)
        views = QSplitter(Qt.Orientation.Horizontal)
        views.addWidget(self.camera_view)
        views.addWidget(self.view_tabs)
        views.setStretchFactor(0, 3)
        views.setStretchFactor(1, 2)

        side = QWidget()
        side.setFixedWidth(330)
        col = QVBoxLayout(side)
        col.setContentsMargins(6, 0, 0, 0)
        col.addWidget(self._build_controls())
        self.outputs = OutputPanel(
            self.worker_side, self.config.output, lambda: self.pipeline.source_fps if self.pipeline else 30.0
        )
        self.outputs.message.connect(
            lambda text, error: self.show_message(text, error) if text else self.clear_message()
        )
        self.outputs.vcam_changed.connect(self._vcam_changed)
        col.addWidget(self.outputs)
        alerts_box = QGroupBox("Alerts")
        alerts_layout = QVBoxLayout(alerts_box)
        self.alert_list = QListWidget()
        self.alert_list.setWordWrap(True)
        alerts_layout.addWidget(self.alert_list)
        col.addWidget(alerts_box, 1)

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.addWidget(self.banner)
        row = QHBoxLayout()
        row.addWidget(views, 1)
        row.addWidget(side)
        outer.addLayout(row, 1)
        self.setCentralWidget(central)
        self.statusBar().showMessage("starting…")
        self.gl_view.setToolTip("drag: orbit · wheel: zoom · double-click: front view")
        for keys, slot in (
            ("Ctrl+S", lambda: self.snapshot()),
            ("Ctrl+R", self.record_button.toggle),
            ("Ctrl+Q", self.close),
            ("Home", self._reset_view),
            ("Ctrl+1", lambda: self.set_view("3d")),
            ("Ctrl+2", lambda: self.set_view("avatar")),
            ("Ctrl+N", lambda: self.outputs.capture_neutral()),
        ):
            QShortcut(QKeySequence(keys), self, activated=slot)

    def _build_controls(self) -> QGroupBox:
        from face3d_live.models.registry import MODELS

        box = QGroupBox("Controls")
        form = QFormLayout(box)
        self.source_box = QComboBox()
        self.source_box.setEditable(True)
        self.source_box.addItems(["demo", "camera 0", "camera 1"])
        self.source_box.setToolTip("demo, camera N, or a video / image / folder path (Enter to switch)")
        self.source_box.lineEdit().returnPressed.connect(self._source_entered)
        self.source_box.activated.connect(lambda _i: self._source_entered())
        open_button = QPushButton("Open…")
        open_button.clicked.connect(self._open_file)
        src_row = QHBoxLayout()
        src_row.addWidget(self.source_box, 1)
        src_row.addWidget(open_button)
        form.addRow("Source", src_row)

        self.model_box = QComboBox()
        self.model_box.addItems(sorted(MODELS))
        self.model_box.setCurrentText(self.config.model)
        self.backend_box = QComboBox()
        self.backend_box.addItems(BACKEND_CHOICES)
        self.backend_box.setCurrentText(self.config.backend)
        self.model_box.activated.connect(lambda _i: self._model_changed())
        self.backend_box.activated.connect(lambda _i: self._model_changed())
        form.addRow("Model", self.model_box)
        form.addRow("Backend", self.backend_box)

        self.smooth_check = QCheckBox("One Euro smoothing")
        self.smooth_check.setChecked(self.config.smoothing is not None)
        self.smooth_check.toggled.connect(self._smoothing_toggled)
        self.mesh_check = QCheckBox("Mesh + landmarks on video")
        self.mesh_check.setChecked(True)
        self.mesh_check.toggled.connect(self._mesh_toggled)
        form.addRow(self.smooth_check)
        form.addRow(self.mesh_check)

        self.texture_box = QComboBox()
        self.texture_box.addItems([str(s) for s in TEXTURE_SIZES])
        self.texture_box.setCurrentText(str(self.config.scene.texture_size or 1024))
        self.gl_view.configured.connect(
            lambda: self.texture_box.setCurrentText(str(self.gl_view.texture_size))
        )
        self.texture_box.activated.connect(
            lambda _i: self.gl_view.set_texture_size(int(self.texture_box.currentText()))
        )
        form.addRow("Texture", self.texture_box)

        self.record_button = QPushButton("● Record")
        self.record_button.setCheckable(True)
        self.record_button.toggled.connect(self._record_toggled)
        self.record_button.setToolTip("record the tracked face to a GLB/NPZ/OBJ take (Ctrl+R)")
        snap = QPushButton("Snapshot")
        snap.setToolTip("save both views as one PNG (Ctrl+S)")
        snap.clicked.connect(lambda: self.snapshot())
        reset = QPushButton("Reset view")
        reset.clicked.connect(self._reset_view)
        buttons = QHBoxLayout()
        for b in (self.record_button, snap, reset):
            buttons.addWidget(b)
        form.addRow(buttons)
        return box

    # ---- pipeline lifecycle -------------------------------------------------------------------------
    def _reconstructor_factory(self):
        cfg = self.config

        def make():
            from face3d_live.reconstructor import Reconstructor

            return Reconstructor(cfg.model, cfg.backend, tracker=cfg.tracker, smoothing=cfg.smoothing)

        return make

    def start_source(self, spec: str, initial: bool = False, fallback: bool = False) -> bool:
        """Switch to source ``spec``; on failure keep what runs and say why (a missing camera at start
        falls back to the demo). True when the new source runs."""
        from face3d_live.capture import open_source

        spec = parse_source(spec)
        pipeline = LivePipeline(
            lambda: open_source(spec, realtime_demo=True),
            self._reconstructor_factory(),
            LiveConfig(pace_fps=self.config.pace_fps),
            on_result=lambda: self._bridge.result.emit(pipeline),
            on_event=lambda e: self._bridge.event.emit(pipeline, e),
            prepare=lambda frame: self.worker_side.process(frame, pipeline.reconstructor),
        )
        try:
            pipeline.start()
        except Face3DError as exc:
            if initial and (isinstance(exc, CaptureError) or self.pipeline is None) and spec != "demo":
                why = "No camera found" if isinstance(exc, CaptureError) else "Cannot open the source"
                self.show_message(f"{why} ({exc}). Showing the built-in demo instead.", error=True)
                return self.start_source("demo", fallback=True)
            self.show_message(f"Cannot switch to {source_label(spec)!r}: {exc}", error=True)
            self._sync_source_box()
            return False
        self._swap_pipeline(pipeline, spec)
        if not (initial or fallback):
            self.clear_message()
        return True

    def _swap_pipeline(self, pipeline: LivePipeline, spec: str) -> None:
        old, self.pipeline = self.pipeline, pipeline
        if old is not None:
            self._stop_recording()
            old.stop()
        self.source_spec = spec
        self._inflight.clear()
        now = time.perf_counter_ns()
        self.stats.reset()
        self.alerts.reset(now)
        self.gl_view.reset_texture()
        self.camera_view.set_placeholder("loading model…")
        self._sync_source_box()
        self.statusBar().showMessage(
            f"{source_label(spec)} · {pipeline.source_name} · {pipeline.source_fps:.0f} frames/s"
        )

    def _sync_source_box(self) -> None:
        if self.source_spec:
            self.source_box.setCurrentText(source_label(self.source_spec))

    def _source_entered(self) -> None:
        spec = parse_source(self.source_box.currentText())
        stopped = self.pipeline is None or self.pipeline.state in ("failed", "ended", "stopped")
        if spec and (spec != self.source_spec or stopped):
            self.start_source(spec)

    def _open_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open a video or image",
            "",
            "Media (*.mp4 *.avi *.mov *.mkv *.webm *.jpg *.jpeg *.png *.bmp);;All files (*)",
        )
        if path:
            self.start_source(path)

    def _model_changed(self) -> None:
        model, backend = self.model_box.currentText(), self.backend_box.currentText()
        if (model, backend) == (self.config.model, self.config.backend):
            return
        self.config = replace(self.config, model=model, backend=backend)
        self.start_source(self.source_spec or "demo")

    def _smoothing_toggled(self, on: bool) -> None:
        if self.pipeline is not None:
            self.pipeline.set_smoothing(on)

    def _mesh_toggled(self, on: bool) -> None:
        self.camera_view.options = replace(self.camera_view.options, mesh=on, landmarks=on)
        self.camera_view.update()

    def _reset_view(self) -> None:
        self.gl_view.reset_view()
        self.gl_view.reset_texture()

    # ---- avatar -------------------------------------------------------------------------------------
    @property
    def view(self) -> str:
        """The right-hand pane: "3d" or "avatar"."""
        return "avatar" if self.view_tabs.currentIndex() == 1 else "3d"

    def set_view(self, view: str) -> None:
        self.view_tabs.setCurrentIndex(1 if view == "avatar" else 0)

    def _shown_view(self) -> AvatarGLView | FaceGLView:
        """The GL view of the selected tab."""
        return self.avatar_view if self.view == "avatar" else self.gl_view

    def _display_view(self):
        """The GL view on screen when it can draw, else None (the camera view then marks frames shown)."""
        view = self._shown_view()
        return view if view.ready and not view.failed else None

    def _ask_gain(self, name: str) -> None:
        cal = self.outputs.calibration
        current = float(cal.gains[ARKIT_INDEX[name]]) if cal is not None else 1.0
        gain, ok = QInputDialog.getDouble(self, "Blendshape gain", f"gain for {name}", current, 0.0, 5.0, 2)
        if ok:
            self.outputs.set_gain(name, gain)

    def _vcam_changed(self, sink) -> None:
        """The shown view also renders each frame for the virtual camera (both get it: only one paints)."""
        self.gl_view.sink = self.avatar_view.sink = sink

    # ---- frames -------------------------------------------------------------------------------------
    def _on_result(self, pipeline: LivePipeline) -> None:
        if pipeline is not self.pipeline or self._closing:
            return  # a result of a pipeline already replaced
        try:
            result = pipeline.results.get(timeout=0)
        except Closed:
            return
        if result is None:  # an earlier signal already took it
            return
        self._seq += 1
        seq = self._seq
        self._inflight = {s: r for s, r in self._inflight.items() if s > seq - 8}
        self._inflight[seq] = result
        frame = result.frame
        display = result.display if isinstance(result.display, WorkerDisplay) else None
        self.gl_view.show_frame(frame, seq)  # first: its GL work overlaps the camera view's painting
        self.avatar_view.show_frame(frame, seq)
        self.camera_view.set_frame(frame, seq, display.image if display is not None else None)
        self.bars.set_values(frame.faces[0].blendshapes if frame.faces else None)
        if display is not None and display.calibration is not None:
            self.outputs.on_calibration(display.calibration)
            self.bars.set_gains(display.calibration.gains)
        if self._writer is not None:
            self._record(result)

    def _on_camera_painted(self, seq: int) -> None:
        if self._display_view() is None:  # no GL: the camera view is the display
            self._on_shown(seq)

    def _on_shown(self, seq: int) -> None:
        result = self._inflight.pop(seq, None)
        if result is None:
            return
        now = time.perf_counter_ns()
        frame = result.frame
        stages = dict(frame.timings_ns)
        stages.update(self._shown_view().timings_ns)
        stages["overlay"] = self.camera_view.annotate_ns + self.camera_view.paint_ns
        stages["display"] = now - result.t_ready_ns
        e2e = now - frame.t_capture_ns
        self.stats.add(FrameRecord(now, e2e, stages, len(frame.faces)))
        self.alerts.observe_frame(e2e, len(frame.faces), now)
        quit_after = self.config.quit_after_frames
        if quit_after is not None and self.stats.frames_total >= quit_after and not self._closing:
            if self.config.screenshot is not None:
                self.snapshot(self.config.screenshot)
            QTimer.singleShot(0, self.close)

    def _on_event(self, pipeline: LivePipeline, event: PipelineEvent) -> None:
        if pipeline is not self.pipeline:
            return
        if event.kind in ("error", "fatal"):
            self.show_message(event.message, error=True)
            self._add_list_item(f"{time.strftime('%H:%M:%S')}  {event.message}", QColor(255, 110, 100))
            if event.kind == "fatal":
                self.camera_view.set_placeholder(f"stopped: {event.message}")
                self.fatal = event.message
                if self.config.quit_after_frames is not None:  # a scripted run cannot go on
                    QTimer.singleShot(0, self.close)
        else:
            self.statusBar().showMessage(event.message, 5000)

    # ---- monitor tick -------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.perf_counter_ns()
        pipeline = self.pipeline
        if pipeline is not None:
            self.stats.set_dropped(pipeline.dropped, now)
        snap = self.stats.snapshot(now)
        self.gpu_state = self.gpu.read()
        expected = pipeline.source_fps if pipeline is not None and pipeline.state == "running" else None
        self.alerts.observe(snap, self.gpu_state, now, expected)
        for ev in self.alerts.drain():
            self._show_alert_event(ev.kind, ev.alert)
        description = pipeline.description if pipeline is not None else {}
        lines = hud_lines(
            snap,
            description,
            self.gpu_state,
            self.gpu.reason or "no GPU",
            short_source(self.source_spec),
            status="pipeline stopped"
            if pipeline is not None and pipeline.state == "failed"
            else "loading model…",
        )
        if self._writer is not None:
            lines.append(f"● recording {self._writer.frames} frames")
        self.camera_view.set_hud(lines, warn=bool(self.alerts.active()))
        self.outputs.refresh()

    def hud_text(self) -> str:
        """The HUD as shown now, one line per row."""
        return "\n".join(self.camera_view.hud)

    def _show_alert_event(self, kind: str, alert: Alert) -> None:
        item = self._alert_items.get(id(alert))
        if kind == "raised" or item is None:
            color = QColor(255, 90, 80) if alert.severity == CRITICAL else QColor(255, 190, 80)
            item = self._add_list_item(("▲ " if kind == "raised" else "") + alert.line(), color)
            self._alert_items[id(alert)] = item
        if kind == "cleared":
            item.setText("✓ " + alert.line())
            item.setForeground(QColor(140, 150, 140))

    def _add_list_item(self, text: str, color: QColor) -> QListWidgetItem:
        item = QListWidgetItem(text)
        item.setForeground(color)
        self.alert_list.insertItem(0, item)
        while self.alert_list.count() > 200:
            self.alert_list.takeItem(self.alert_list.count() - 1)
        return item

    # ---- messages -----------------------------------------------------------------------------------
    def show_message(self, text: str, error: bool = False) -> None:
        self.messages.append(text)
        color = "#5a1d1d" if error else "#1d3a5a"
        self.banner.setStyleSheet(f"background: {color}; color: white; padding: 6px; border-radius: 4px;")
        self.banner.setText(text)
        self.banner.setVisible(True)
        log.warning("%s", text) if error else log.info("%s", text)

    def clear_message(self) -> None:
        self.banner.setVisible(False)

    # ---- recording and snapshots --------------------------------------------------------------------
    def _record_toggled(self, on: bool) -> None:
        if on:
            self._start_recording()
        else:
            self._stop_recording()

    def _start_recording(self) -> None:
        from face3d_live.record import RecordConfig, SequenceWriter

        cfg = self.config
        path = cfg.record_dir / f"take_{time.strftime('%Y%m%d_%H%M%S')}.{cfg.record_format}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            rc = RecordConfig(format=cfg.record_format, texture_size=self.gl_view.texture_size or 1024)
            fps = self.pipeline.source_fps if self.pipeline else None
            self._writer = SequenceWriter(path, rc, fps=fps, source=self.source_spec).open()
        except (Face3DError, OSError) as exc:
            self._writer = None
            self.show_message(f"Cannot record: {exc}", error=True)
            self.record_button.setChecked(False)
            return
        self._record_t0_ns = time.perf_counter_ns()
        self.record_button.setText("■ Stop")
        self.statusBar().showMessage(f"recording to {path}")

    def _record(self, result: LiveResult) -> None:
        frame = result.frame
        try:  # wall time since the recording began: monotonic even when a file source loops
            self._writer.write(self._seq, (frame.t_capture_ns - self._record_t0_ns) / 1e9, frame.faces)
        except Face3DError as exc:
            self.show_message(f"Recording stopped: {exc}", error=True)
            self._writer.abort()
            self._writer = None
            self.record_button.setChecked(False)

    def _stop_recording(self) -> None:
        writer, self._writer = self._writer, None
        self.record_button.blockSignals(True)
        self.record_button.setChecked(False)
        self.record_button.setText("● Record")
        self.record_button.blockSignals(False)
        if writer is None:
            return
        texture = self.gl_view.texture_rgb()
        if texture is not None:
            writer.set_texture(texture)

        def finish() -> None:  # building the GLB can take a while: not on the UI thread
            try:
                writer.close()
                self._bridge.saved.emit(f"Saved recording {writer.out} ({writer.frames} frames)", True)
            except Face3DError as exc:
                self._bridge.saved.emit(f"Recording not saved: {exc}", False)

        self._finisher = threading.Thread(target=finish, name="record-finish", daemon=False)
        self._finisher.start()

    def _on_saved(self, message: str, ok: bool) -> None:
        if ok:
            self.statusBar().showMessage(message, 10000)
            self._add_list_item(f"{time.strftime('%H:%M:%S')}  {message}", QColor(140, 200, 255))
        else:
            self.show_message(message, error=True)

    def snapshot(self, path: Path | str | None = None) -> Path | None:
        """Save the camera view and the shown 3D / avatar view (with its bars) side by side as one PNG;
        returns the path (None on failure, with a message)."""
        parts = [self.camera_view.grab().toImage()]
        if self.view == "avatar":
            parts += [self.avatar_view.grabFramebuffer(), self.bars_area.grab().toImage()]
        else:
            parts.append(self.gl_view.grabFramebuffer())
        width, height = sum(p.width() for p in parts), max(p.height() for p in parts)
        out = QImage(width, height, QImage.Format.Format_RGB32)
        out.fill(QColor(16, 16, 20))
        painter = QPainter(out)
        x = 0
        for part in parts:
            painter.drawImage(x, 0, part)
            x += part.width()
        painter.end()
        if path is None:
            path = self.config.snapshot_dir / f"snapshot_{time.strftime('%Y%m%d_%H%M%S')}.png"
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.show_message(f"Cannot save snapshot: {exc}", error=True)
            return None
        if not out.save(str(path), "PNG"):
            self.show_message(f"Cannot save snapshot to {path}", error=True)
            return None
        self.statusBar().showMessage(f"saved {path}", 5000)
        return path

    # ---- shutdown -----------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        t0 = time.perf_counter()
        self._closing = True
        self._timer.stop()
        self.outputs.close_outputs()
        if self.pipeline is not None:
            self.pipeline.stop()
        self._stop_recording()
        self.gl_view.release_gl()
        self.avatar_view.release_gl()
        self.gpu.close()
        self.shutdown_s = time.perf_counter() - t0
        log.info("closed in %.2f s", self.shutdown_s)
        super().closeEvent(event)
