"""The "Avatar output" controls: neutral-face calibration, VMC / Live Link streaming, the virtual camera.

Calibration requests go to the pipeline's worker (``WorkerSide.call``), which owns the Reconstructor; the
streamer is handed to the worker too (it sends from the result path, off the UI thread). A bad address or
a missing virtual-camera backend is a message in the window and an unticked box, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
)

from face3d_live.errors import Face3DError
from face3d_live.stream.address import DEFAULT_LIVELINK, DEFAULT_VMC
from face3d_live.ui.config import OutputConfig
from face3d_live.ui.worker_side import CalibrationState, WorkerSide

log = logging.getLogger(__name__)

NEUTRAL_FRAMES = 15


def _set_quietly(check: QCheckBox, on: bool) -> None:
    """Tick or untick ``check`` without running its ``toggled`` handlers."""
    check.blockSignals(True)
    check.setChecked(on)
    check.blockSignals(False)


class OutputPanel(QGroupBox):
    """``message(text, error)``: for the window's banner; ``vcam_changed(sink | None)``: the virtual camera
    was switched on (the shown view renders each frame for it too) or off."""

    message = pyqtSignal(str, bool)
    vcam_changed = pyqtSignal(object)

    def __init__(self, worker: WorkerSide, config: OutputConfig, source_fps: Callable[[], float]) -> None:
        super().__init__("Avatar output")
        self.worker = worker
        self.config = config
        self._source_fps = source_fps
        self.vcam = None
        self.calibration: CalibrationState | None = None
        self._capture_ticket = 0  # the pending Neutral request (0: none)

        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        grid.setVerticalSpacing(4)
        self.neutral_button = QPushButton("Neutral")
        self.neutral_button.setToolTip(
            f"capture your resting face ({NEUTRAL_FRAMES} frames): relax and look at the camera; "
            "it is subtracted from the blendshapes from then on"
        )
        self.neutral_button.clicked.connect(self.capture_neutral)
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip("forget the neutral face and the per-shape gains")
        self.reset_button.clicked.connect(self.reset_calibration)
        self.calibration_label = QLabel("not calibrated")
        row = QHBoxLayout()
        for w in (self.neutral_button, self.reset_button):
            row.addWidget(w)
        row.addWidget(self.calibration_label, 1)
        grid.addLayout(row, 0, 0, 1, 2)

        self.vmc_check = QCheckBox("VMC")
        self.vmc_check.setToolTip("stream to a VMC receiver (VSeeFace, VNyan, Warudo, …) over OSC/UDP")
        self.vmc_addr = QLineEdit(config.vmc or DEFAULT_VMC)
        self.livelink_check = QCheckBox("Live Link")
        self.livelink_check.setToolTip("stream to Unreal's Live Link Face source over UDP")
        self.livelink_addr = QLineEdit(config.livelink or DEFAULT_LIVELINK)
        for r, (check, addr) in enumerate(
            ((self.vmc_check, self.vmc_addr), (self.livelink_check, self.livelink_addr))
        ):
            addr.setPlaceholderText("host:port")
            check.toggled.connect(lambda _on: self.update_streaming())
            addr.returnPressed.connect(self._address_entered)
            grid.addWidget(check, 1 + r, 0)
            grid.addWidget(addr, 1 + r, 1)
        self.vcam_check = QCheckBox("Virtual camera")
        self.vcam_check.setToolTip(
            "send the view shown on the right to a virtual camera (v4l2loopback / OBS)"
        )
        self.vcam_check.toggled.connect(self._vcam_toggled)
        grid.addWidget(self.vcam_check, 3, 0, 1, 2)
        self.status = QLabel("not streaming")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: #a8a8b4; font-size: 8pt;")
        grid.addWidget(self.status, 4, 0, 1, 2)

    def start(self) -> None:
        """Apply the configured outputs (called once the window is up, so messages have somewhere to go)."""
        for check, on in ((self.vmc_check, self.config.vmc), (self.livelink_check, self.config.livelink)):
            _set_quietly(check, on is not None)
        if self.config.vmc or self.config.livelink:
            self.update_streaming()
        if self.config.virtual_camera:
            self.vcam_check.setChecked(True)

    # ---- calibration ----------------------------------------------------------------------------------
    def capture_neutral(self) -> None:
        self._capture_ticket = self.worker.call(lambda rec: rec.capture_neutral(NEUTRAL_FRAMES))
        self.calibration_label.setText("capturing…")
        self.message.emit("Capturing your neutral face: relax and look at the camera…", False)

    def reset_calibration(self) -> None:
        self.worker.call(lambda rec: rec.calibration.reset())
        self.calibration_label.setText("not calibrated")

    def set_gain(self, name: str, gain: float) -> None:
        self.worker.call(lambda rec: rec.calibration.set_gain(name, gain))

    def on_calibration(self, state: CalibrationState | None) -> None:
        """The calibration after a frame (from the worker's result): ends the capture message."""
        if state is None:
            return
        self.calibration = state
        if self._capture_ticket:
            if state.ticket < self._capture_ticket or state.capturing:
                return  # made before the request reached the worker, or still capturing
            # done, or lost (the source or model changed and the new reconstructor never started it)
            self._capture_ticket = 0
            self.message.emit("", False)  # the window clears the banner
        self.calibration_label.setText("neutral captured" if state.captured else "not calibrated")

    # ---- streaming ------------------------------------------------------------------------------------
    def update_streaming(self) -> bool:
        """(Re)create the streamer for the ticked targets. A bad address unticks its box with a message
        (the other target keeps streaming); False then."""
        from face3d_live.stream import FaceStreamer
        from face3d_live.stream.address import resolve_udp

        targets, ok = {}, True
        for key, check, edit, what in (
            ("vmc", self.vmc_check, self.vmc_addr, "VMC address"),
            ("livelink", self.livelink_check, self.livelink_addr, "Live Link address"),
        ):
            if not check.isChecked():
                continue
            try:
                resolve_udp(edit.text().strip(), what)
            except Face3DError as exc:
                self.message.emit(f"Cannot stream: {exc}", True)
                _set_quietly(check, False)
                ok = False
                continue
            targets[key] = edit.text().strip()
        streamer = None
        if targets:
            try:
                streamer = FaceStreamer(
                    vmc=targets.get("vmc"), livelink=targets.get("livelink"), subject=self.config.subject
                )
            except Face3DError as exc:
                self.message.emit(f"Cannot stream: {exc}", True)
                ok = False
        old = self.worker.set_streamer(streamer)
        if old is not None:
            old.close()
        self.refresh()
        return ok

    def _address_entered(self) -> None:
        if self.vmc_check.isChecked() or self.livelink_check.isChecked():
            self.update_streaming()

    # ---- virtual camera -------------------------------------------------------------------------------
    def _vcam_toggled(self, on: bool) -> None:
        if on:
            self.start_virtual_camera()
        else:
            self.stop_virtual_camera()

    def start_virtual_camera(self, device_factory=None) -> bool:
        """Open the virtual camera (``device_factory(w, h, fps)``: pyvirtualcam by default); False (message
        shown, box unticked) when there is no backend."""
        from face3d_live.ui.vcam import VirtualCamera, open_pyvirtualcam

        if self.vcam is not None:
            return True
        fps = self.config.vcam_fps or self._source_fps() or 30.0
        try:
            self.vcam = VirtualCamera(*self.config.vcam_size, fps, device_factory or open_pyvirtualcam)
        except Face3DError as exc:
            self.message.emit(str(exc), True)
            _set_quietly(self.vcam_check, False)
            self.refresh()
            return False
        _set_quietly(self.vcam_check, True)
        self.vcam_changed.emit(self.vcam)
        self.refresh()
        return True

    def stop_virtual_camera(self) -> None:
        vcam, self.vcam = self.vcam, None
        if vcam is not None:
            self.vcam_changed.emit(None)
            vcam.close()
        _set_quietly(self.vcam_check, False)
        self.refresh()

    # ---- status ---------------------------------------------------------------------------------------
    def status_lines(self) -> list[str]:
        lines = []
        streamer = self.worker.streamer
        lines.append(streamer.status if streamer is not None else "not streaming")
        if self.vcam is not None:
            lines.append(self.vcam.status)
        return lines

    def refresh(self) -> None:
        """Update the status line (the window's 4 Hz tick)."""
        self.status.setText("\n".join(self.status_lines()))

    def close_outputs(self) -> None:
        """Stop streaming and the virtual camera (window closing)."""
        self.stop_virtual_camera()
        old = self.worker.set_streamer(None)
        if old is not None:
            old.close()
