"""The virtual camera sink: the app's 3D or avatar view as a webcam for OBS, Zoom, Discord, ...

pyvirtualcam drives v4l2loopback on Linux and OBS's virtual camera on Windows/macOS; it is an optional
extra (``pip install 'face3d-live[vcam]'``) imported only when the camera is switched on. A device keeps
its own frame rate and receivers expect a steady stream, so frames go out from a sender thread at that
rate: the newest frame given wins (older ones are dropped and counted), and the last one repeats while
no new one arrives. The thread letterboxes frames of any size into the device's size.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from face3d_live.errors import BackendUnavailable, missing_extra
from face3d_live.pipeline.channels import Closed, LatestSlot

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install v4l2loopback on Linux (sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback), "
    "OBS Studio's virtual camera on Windows/macOS"
)


class Device(Protocol):
    """What the sender needs of a camera device (``pyvirtualcam.Camera`` is one)."""

    device: str

    def send(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


def open_pyvirtualcam(width: int, height: int, fps: float) -> Device:
    """A pyvirtualcam camera taking RGB frames; BackendUnavailable (one line, with the fix) when the
    package or a backend is missing."""
    try:
        import pyvirtualcam
    except ModuleNotFoundError as exc:
        why = missing_extra(exc) or str(exc)
        raise BackendUnavailable(f"virtual camera unavailable: {why}") from None
    try:
        return pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB)
    except (RuntimeError, OSError, ValueError) as exc:
        reason = str(exc).split(". ")[0].strip().rstrip(".")  # pyvirtualcam's first sentence says what
        raise BackendUnavailable(f"virtual camera unavailable: {reason}; {INSTALL_HINT}") from None


def letterbox(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """``rgb`` scaled to fit (width, height), centred on black: (height, width, 3) uint8."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return np.ascontiguousarray(rgb)
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


class VirtualCamera:
    """Open the device now (BackendUnavailable if there is none), then ``process(rgb)`` from any thread;
    ``close()`` stops the sender and closes the device (idempotent).

    ``sent``: frames handed to the device (repeats included); ``dropped``: frames replaced before the
    sender took them. ``device_factory(width, height, fps)`` defaults to pyvirtualcam.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        device_factory: Callable[[int, int, float], Device] = open_pyvirtualcam,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.size = (int(width), int(height))
        self.fps = float(fps)
        self._device = device_factory(self.size[0], self.size[1], self.fps)
        self.device = str(getattr(self._device, "device", "virtual camera"))
        self._slot: LatestSlot[np.ndarray] = LatestSlot()
        self._stop = threading.Event()
        self.sent = 0
        self.error: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="vcam-sender", daemon=True)
        self._thread.start()
        log.info("virtual camera %s: %dx%d @ %.0f fps", self.device, *self.size, self.fps)

    def process(self, rgb: np.ndarray) -> None:
        """Queue a frame (HxWx3 uint8 RGB, any size); never blocks."""
        if not self._closed:
            self._slot.put(rgb)

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    @property
    def status(self) -> str:
        """One line for the UI."""
        w, h = self.size
        line = f"virtual camera {self.device}: {w}×{h} @ {self.fps:.0f} fps, {self.sent} sent, {self.dropped} dropped"
        return f"{line}; stopped: {self.error}" if self.error else line

    def _run(self) -> None:
        w, h = self.size
        frame = np.zeros((h, w, 3), np.uint8)
        period = 1.0 / self.fps
        deadline = time.perf_counter()
        try:
            while not self._stop.is_set():
                try:
                    item = self._slot.get(timeout=0)
                except Closed:
                    break
                if item is not None:
                    frame = letterbox(item, w, h)
                self._device.send(frame)
                self.sent += 1
                deadline += period
                delay = deadline - time.perf_counter()
                if delay < -period:  # fell behind (a stalled device): restart the clock, do not burst
                    deadline = time.perf_counter()
                elif delay > 0 and self._stop.wait(delay):  # pacing to the device's rate; stop() wakes it
                    break
        except Exception as exc:  # a device that fails mid-stream: say so in the status, keep the app
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("virtual camera stopped: %s", self.error)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._slot.close()
        self._thread.join(timeout=1.0)
        try:
            self._device.close()
        except Exception as exc:  # closing a broken device must not break shutdown
            log.warning("virtual camera close: %s", exc)

    def __enter__(self) -> VirtualCamera:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
