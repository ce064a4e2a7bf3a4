"""Rolling latency / frame-rate statistics over the frames the UI has shown. Pure Python + numpy.

The UI (or the headless bench) calls ``add`` once per frame shown, with the frame's per-stage
durations and its end-to-end latency (capture timestamp → frame shown); ``snapshot(now)`` gives
p50/p95/p99 per stage and end to end, frames/s and dropped frames over the recent window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

E2E = "e2e"  # the end-to-end pseudo-stage


@dataclass(frozen=True)
class StatsConfig:
    """window_s: span of the percentile window; max_samples bounds its memory.
    fps_window_s: span the frame rate and drop rate are measured over."""

    window_s: float = 5.0
    max_samples: int = 1000
    fps_window_s: float = 1.0

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.fps_window_s <= 0 or self.max_samples < 1:
            raise ValueError("window_s, fps_window_s and max_samples must be positive")


@dataclass(frozen=True)
class Percentiles:
    """Milliseconds over the window: p50/p95/p99, mean, standard deviation, sample count."""

    p50: float
    p95: float
    p99: float
    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values_ns: np.ndarray) -> Percentiles:
        ms = np.asarray(values_ns, np.float64) / 1e6
        p50, p95, p99 = np.percentile(ms, (50, 95, 99))
        return cls(float(p50), float(p95), float(p99), float(ms.mean()), float(ms.std()), int(ms.size))


@dataclass(frozen=True)
class FrameRecord:
    """One shown frame: t_shown_ns (monotonic perf_counter_ns), end-to-end latency, stage durations."""

    t_shown_ns: int
    e2e_ns: int
    stages_ns: dict[str, int] = field(default_factory=dict)
    faces: int = 0


@dataclass(frozen=True)
class StatsSnapshot:
    """fps: frames shown per second over the last fps_window_s. e2e / stages: Percentiles (ms) over the
    window (stages in pipeline order). dropped_total: frames replaced before anyone used them, since
    start; dropped_window / shown_window: the same over the last fps_window_s (drop_rate = their ratio)."""

    fps: float
    frames_total: int
    e2e: Percentiles | None
    stages: dict[str, Percentiles]
    dropped_total: int
    dropped_window: int
    shown_window: int

    @property
    def drop_rate(self) -> float:
        seen = self.dropped_window + self.shown_window
        return self.dropped_window / seen if seen else 0.0


class RollingStats:
    """Per-stage and end-to-end latency percentiles, frames/s and dropped frames over a rolling window.

    Not thread-safe: feed it from one thread (the UI thread).
    """

    def __init__(self, config: StatsConfig = StatsConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._records: deque[FrameRecord] = deque(maxlen=self.config.max_samples)
        self._drops: deque[tuple[int, int]] = deque()  # (t_ns, cumulative dropped) samples
        self._dropped_total = 0
        self.frames_total = 0
        self._t_first_ns: int | None = None
        self._stage_order: list[str] = []

    def add(self, record: FrameRecord) -> None:
        if self._t_first_ns is None:
            self._t_first_ns = record.t_shown_ns
        self._records.append(record)
        self.frames_total += 1
        for stage in record.stages_ns:
            if stage not in self._stage_order:
                self._stage_order.append(stage)

    def set_dropped(self, dropped_total: int, now_ns: int) -> None:
        """Cumulative count of frames dropped anywhere in the pipeline (from the channels' counters)."""
        self._dropped_total = int(dropped_total)
        self._drops.append((now_ns, self._dropped_total))

    def recent_e2e_ms(self, n: int) -> np.ndarray:
        """The last ``n`` end-to-end latencies, ms, oldest first."""
        last = list(self._records)[-n:]
        return np.array([r.e2e_ns for r in last], np.float64) / 1e6

    def snapshot(self, now_ns: int) -> StatsSnapshot:
        cfg = self.config
        window_start = now_ns - int(cfg.window_s * 1e9)
        fps_start = now_ns - int(cfg.fps_window_s * 1e9)
        recent = [r for r in self._records if r.t_shown_ns > window_start]
        in_fps_window = [r.t_shown_ns for r in recent if r.t_shown_ns > fps_start]
        shown_window = len(in_fps_window)
        # frame intervals over the time since the window's first frame: exact for a steady stream,
        # and falls towards 0 while nothing is shown (a stall)
        fps = 0.0
        if shown_window > 1:
            fps = (shown_window - 1) / max((now_ns - in_fps_window[0]) / 1e9, 1e-6)
        while self._drops and self._drops[0][0] < fps_start and len(self._drops) > 1:
            if self._drops[1][0] <= fps_start:
                self._drops.popleft()
            else:
                break
        dropped_window = self._dropped_total - self._drops[0][1] if self._drops else 0
        e2e = Percentiles.of(np.array([r.e2e_ns for r in recent])) if recent else None
        stages: dict[str, Percentiles] = {}
        for stage in self._stage_order:
            values = [r.stages_ns[stage] for r in recent if stage in r.stages_ns]
            if values:
                stages[stage] = Percentiles.of(np.array(values))
        return StatsSnapshot(
            fps=fps,
            frames_total=self.frames_total,
            e2e=e2e,
            stages=stages,
            dropped_total=self._dropped_total,
            dropped_window=max(0, dropped_window),
            shown_window=shown_window,
        )
