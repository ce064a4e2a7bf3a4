"""What the window asks of the pipeline's worker thread, run there right after each frame's reconstruction.

The worker is the only thread that touches its Reconstructor, so calibration changes from the UI (capture
the neutral face, reset, per-shape gain) are queued here and applied between frames, never while
``track`` runs. The same hook sends the frame's faces to the streamer (fire-and-forget UDP: it never
blocks the worker, and the UI thread is not involved at all) and draws the mesh overlay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from face3d_live.types import Frame
from face3d_live.ui.overlay import OverlayOptions, annotate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationState:
    """A snapshot of the reconstructor's blendshape calibration after a frame (for the UI). ``ticket``: the
    last ``WorkerSide.call`` applied before it (results made before a request say nothing about it)."""

    ticket: int
    captured: bool
    capturing: bool
    neutral: np.ndarray  # (52,) float32
    gains: np.ndarray  # (52,) float32


@dataclass(frozen=True)
class WorkerDisplay:
    """``LiveResult.display`` of the window's pipeline: the annotated frame and the calibration state."""

    image: np.ndarray
    calibration: CalibrationState | None


class WorkerSide:
    """``call(fn)`` queues ``fn(reconstructor)`` for the worker; ``set_streamer`` swaps the sink the worker
    sends to; ``process(frame, rec)`` is the pipeline's ``prepare`` hook (worker thread)."""

    def __init__(self, overlay: Callable[[], OverlayOptions]) -> None:
        self._overlay = overlay
        self._lock = threading.Lock()
        self._tasks: list[tuple[int, Callable]] = []
        self._tickets = 0
        self._applied = 0
        self._streamer = None
        self._t0_ns = time.perf_counter_ns()

    def call(self, fn: Callable) -> int:
        """Run ``fn(reconstructor)`` on the worker before its next frame's results go out; returns a ticket
        (``CalibrationState.ticket`` reaches it once ``fn`` has run)."""
        with self._lock:
            self._tickets += 1
            self._tasks.append((self._tickets, fn))
            return self._tickets

    def set_streamer(self, streamer):
        """Send to ``streamer`` (None: stop sending) from the next frame on; returns the previous one, which
        no send uses any more once this returns (the caller closes it)."""
        with self._lock:
            old, self._streamer = self._streamer, streamer
            self._t0_ns = time.perf_counter_ns()  # timestamps start at 0 for each new stream
            return old

    @property
    def streamer(self):
        return self._streamer

    def process(self, frame: Frame, rec) -> WorkerDisplay:
        with self._lock:
            tasks, self._tasks = self._tasks, []
            streamer = self._streamer
            if streamer is not None:  # under the lock: set_streamer's caller may close the old one next
                streamer.send(frame.faces, max(0.0, (frame.t_capture_ns - self._t0_ns) / 1e9))
        for ticket, fn in tasks:
            try:
                fn(rec)
            except (KeyError, ValueError) as exc:  # e.g. an unknown shape name: the request is dropped
                log.warning("calibration request failed: %s", exc)
            self._applied = ticket
        state = None
        if rec is not None:
            cal = rec.calibration
            state = CalibrationState(
                self._applied, cal.captured, rec.capturing_neutral, cal.neutral.copy(), cal.gains.copy()
            )
        return WorkerDisplay(annotate(frame.image, frame.faces, self._overlay()), state)
