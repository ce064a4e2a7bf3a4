"""Anomaly alerts for the live pipeline. Pure Python: feed it observations, read raised/cleared events.

Alert keys (one active alert per key: a condition that persists never raises twice):

- ``latency``: end-to-end latency above mean + k·σ of the recent window of normal frames, for
  ``latency_raise_after`` frames in a row; cleared after ``latency_clear_after`` normal frames.
- ``fps_drop``: frames/s below ``fps_drop_ratio`` × the source's rate for ``fps_drop_after_s``.
- ``dropped_frames``: more than ``drop_rate`` of the frames of the last second were dropped.
- ``face_lost``: a face was tracked and none has been seen for ``face_lost_after_s``.
- ``gpu_memory``: GPU memory grew by more than ``gpu_memory_growth_mb`` within ``gpu_memory_window_s``.
- ``gpu_throttle``: the GPU reports thermal or power throttling.

Times are monotonic ``perf_counter_ns`` values passed in by the caller (so tests control the clock);
each alert also carries the wall-clock time it was raised/cleared, for display.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from face3d_live.monitor.gpu import GpuState
from face3d_live.monitor.stats import StatsSnapshot

WARNING, CRITICAL = "warning", "critical"


@dataclass(frozen=True)
class AlertConfig:
    """Thresholds. Latency: k·σ above the mean of the last ``latency_window`` normal frames, but at
    least ``latency_min_excess_ms`` above it (a very steady pipeline has a tiny σ); a shift lasting
    ``latency_accept_after`` frames becomes the new normal. ``warmup_s``: no rate alerts right after
    start (model warm-up, first detections)."""

    latency_sigmas: float = 2.0
    latency_window: int = 120
    latency_min_samples: int = 30
    latency_min_excess_ms: float = 3.0
    latency_raise_after: int = 3
    latency_clear_after: int = 10
    latency_accept_after: int = 150
    fps_drop_ratio: float = 0.7
    fps_recover_ratio: float = 0.85
    fps_drop_after_s: float = 2.0
    drop_rate: float = 0.2
    drop_clear_rate: float = 0.05
    face_lost_after_s: float = 0.5
    gpu_memory_growth_mb: float = 256.0
    gpu_memory_window_s: float = 60.0
    warmup_s: float = 2.0

    def __post_init__(self) -> None:
        if self.latency_min_samples < 2 or self.latency_window < self.latency_min_samples:
            raise ValueError("latency_window must be >= latency_min_samples >= 2")
        if self.latency_raise_after < 1 or self.latency_clear_after < 1:
            raise ValueError("latency_raise_after and latency_clear_after must be >= 1")


@dataclass
class Alert:
    """One alert. ``raised_ns``/``cleared_ns``: monotonic ns; ``raised_at``/``cleared_at``: wall clock s.
    ``message`` is updated while the alert is active (e.g. the worst latency seen so far)."""

    key: str
    severity: str
    message: str
    raised_ns: int
    raised_at: float
    cleared_ns: int | None = None
    cleared_at: float | None = None

    @property
    def active(self) -> bool:
        return self.cleared_ns is None

    def line(self) -> str:
        t = time.strftime("%H:%M:%S", time.localtime(self.raised_at))
        if self.active:
            return f"{t}  {self.message}"
        c = time.strftime("%H:%M:%S", time.localtime(self.cleared_at or self.raised_at))
        return f"{t}  {self.message}  (cleared {c})"


@dataclass(frozen=True)
class AlertEvent:
    """``kind`` is "raised" or "cleared"."""

    kind: str
    alert: Alert


class AlertEngine:
    """Turns frame and periodic observations into de-duplicated, timestamped alerts.

    ``observe_frame`` once per frame shown; ``observe`` a few times a second with the rolling stats and
    the GPU state. ``drain()`` returns the raise/clear events since the last call; ``active()`` the alerts
    now active; ``history`` the recent cleared ones. Not thread-safe: use it from one thread.
    """

    def __init__(
        self, config: AlertConfig = AlertConfig(), wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self._wall = wall_clock
        self.history: deque[Alert] = deque(maxlen=100)
        self._active: dict[str, Alert] = {}
        self._events: list[AlertEvent] = []
        self.raised_count: dict[str, int] = {}
        self.reset()

    def reset(self, now_ns: int | None = None) -> None:
        """Forget all state (new source or model); active alerts are cleared."""
        if now_ns is not None:
            for key in list(self._active):
                self._clear(key, now_ns)
        self._baseline: deque[float] = deque(maxlen=self.config.latency_window)
        self._above = self._below = 0
        self._peak_ms = 0.0
        self._t_first_ns: int | None = None
        self._had_face = False
        self._last_face_ns = 0
        self._fps_low_since: int | None = None
        self._gpu_mem: deque[tuple[int, float]] = deque()

    # ---- observations -------------------------------------------------------------------------------
    def observe_frame(self, e2e_ns: int, faces: int, now_ns: int) -> None:
        if self._t_first_ns is None:
            self._t_first_ns = now_ns
        self._latency(e2e_ns / 1e6, now_ns)
        self._face(faces, now_ns)

    def observe(
        self, stats: StatsSnapshot, gpu: GpuState | None, now_ns: int, expected_fps: float | None = None
    ) -> None:
        warm = self._t_first_ns is not None and now_ns - self._t_first_ns >= self.config.warmup_s * 1e9
        if warm and expected_fps:
            self._fps(stats.fps, expected_fps, now_ns)
        if warm:
            self._drops(stats, now_ns)
        if gpu is not None:
            self._gpu(gpu, now_ns)

    # ---- results ------------------------------------------------------------------------------------
    def drain(self) -> list[AlertEvent]:
        events, self._events = self._events, []
        return events

    def active(self) -> list[Alert]:
        return sorted(self._active.values(), key=lambda a: a.raised_ns)

    def is_active(self, key: str) -> bool:
        return key in self._active

    # ---- conditions ---------------------------------------------------------------------------------
    def _latency(self, x_ms: float, now_ns: int) -> None:
        cfg, base = self.config, self._baseline
        if len(base) < cfg.latency_min_samples:
            base.append(x_ms)
            return
        values = np.fromiter(base, np.float64, len(base))
        mean, std = float(values.mean()), float(values.std())
        threshold = mean + max(cfg.latency_sigmas * std, cfg.latency_min_excess_ms)
        if x_ms <= threshold:
            self._above, self._below = 0, self._below + 1
            base.append(x_ms)  # only normal frames define "normal"
            if self._below >= cfg.latency_clear_after:
                self._clear("latency", now_ns)
            return
        self._above, self._below = self._above + 1, 0
        if self._above == 1 and "latency" not in self._active:
            self._peak_ms = 0.0
        self._peak_ms = max(self._peak_ms, x_ms)
        if self._above >= cfg.latency_accept_after:  # a lasting shift: that is the new normal
            base.clear()
            self._above = 0
            self._clear("latency", now_ns)
            return
        if self._above >= cfg.latency_raise_after:
            self._raise(
                "latency",
                WARNING,
                f"latency spike: {self._peak_ms:.0f} ms end to end (normal {mean:.0f} ms, "
                f"threshold mean + {cfg.latency_sigmas:g}σ = {threshold:.0f} ms)",
                now_ns,
            )

    def _face(self, faces: int, now_ns: int) -> None:
        if faces > 0:
            self._had_face, self._last_face_ns = True, now_ns
            self._clear("face_lost", now_ns)
            return
        lost_s = (now_ns - self._last_face_ns) / 1e9
        if self._had_face and lost_s >= self.config.face_lost_after_s:
            self._raise("face_lost", WARNING, "face lost: no face in view", now_ns)

    def _fps(self, fps: float, expected: float, now_ns: int) -> None:
        cfg = self.config
        if fps < cfg.fps_drop_ratio * expected:
            if self._fps_low_since is None:
                self._fps_low_since = now_ns
            elif now_ns - self._fps_low_since >= cfg.fps_drop_after_s * 1e9:
                self._raise(
                    "fps_drop",
                    WARNING,
                    f"frame rate dropped: {fps:.1f} frames/s (source {expected:.0f}/s)",
                    now_ns,
                )
        elif fps >= cfg.fps_recover_ratio * expected:
            self._fps_low_since = None
            self._clear("fps_drop", now_ns)

    def _drops(self, stats: StatsSnapshot, now_ns: int) -> None:
        rate = stats.drop_rate
        if rate > self.config.drop_rate:
            self._raise(
                "dropped_frames",
                WARNING,
                f"dropped frames: {stats.dropped_window} of the last second's "
                f"{stats.dropped_window + stats.shown_window} ({stats.dropped_total} in all)",
                now_ns,
            )
        elif rate <= self.config.drop_clear_rate:
            self._clear("dropped_frames", now_ns)

    def _gpu(self, gpu: GpuState, now_ns: int) -> None:
        cfg = self.config
        mem = self._gpu_mem
        mem.append((now_ns, gpu.memory_used_mb))
        while mem and now_ns - mem[0][0] > cfg.gpu_memory_window_s * 1e9:
            mem.popleft()
        growth = gpu.memory_used_mb - min(m for _, m in mem)
        if growth > cfg.gpu_memory_growth_mb:
            self._raise(
                "gpu_memory",
                CRITICAL,
                f"GPU memory grew {growth:.0f} MB in {cfg.gpu_memory_window_s:.0f} s "
                f"(now {gpu.memory_used_mb:.0f} of {gpu.memory_total_mb:.0f} MB)",
                now_ns,
            )
        elif growth < cfg.gpu_memory_growth_mb / 2:
            self._clear("gpu_memory", now_ns)
        if gpu.throttle_reasons:
            self._raise(
                "gpu_throttle",
                CRITICAL,
                f"GPU throttling ({', '.join(gpu.throttle_reasons)}): {gpu.sm_clock_mhz:.0f} MHz, "
                f"{gpu.temperature_c:.0f} °C, {gpu.power_w:.0f} W",
                now_ns,
            )
        else:
            self._clear("gpu_throttle", now_ns)

    # ---- bookkeeping --------------------------------------------------------------------------------
    def _raise(self, key: str, severity: str, message: str, now_ns: int) -> None:
        alert = self._active.get(key)
        if alert is not None:  # de-duplicate: the same condition is still on
            alert.message = message
            return
        alert = Alert(key, severity, message, now_ns, self._wall())
        self._active[key] = alert
        self.raised_count[key] = self.raised_count.get(key, 0) + 1
        self._events.append(AlertEvent("raised", alert))

    def _clear(self, key: str, now_ns: int) -> None:
        alert = self._active.pop(key, None)
        if alert is None:
            return
        alert.cleared_ns, alert.cleared_at = now_ns, self._wall()
        self.history.append(alert)
        self._events.append(AlertEvent("cleared", alert))
