"""The streaming loop shared by ``face3d-live stream`` and ``bench stream``: read → track → send.

One thread, no queue: each frame is sent as soon as it is reconstructed, so the latency from capture to
packet is the reconstruction plus the send. Files go as fast as possible unless ``realtime`` paces them
at their own frame rate; live sources (camera, paced demo) hand over their newest frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from face3d_live.capture.base import FrameSource
from face3d_live.reconstructor import Reconstructor
from face3d_live.stream.streamer import FaceStreamer
from face3d_live.types import Frame


@dataclass
class StreamSummary:
    """Counts and per-frame timings of one streaming run (latencies in ms, capture → packet sent)."""

    frames: int = 0
    frames_with_face: int = 0
    corrupt_frames: int = 0
    loops: int = 0
    wall_s: float = 0.0
    interrupted: bool = False
    latency_ms: list[float] = field(default_factory=list)
    send_ms: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


def stream_source(
    source: FrameSource,
    reconstructor: Reconstructor,
    streamer: FaceStreamer,
    *,
    max_frames: int | None = None,
    duration_s: float | None = None,
    realtime: bool = False,
    loop: bool = False,
    keep_timings: bool = False,
    on_frame: Callable[[Frame, StreamSummary], None] | None = None,
) -> StreamSummary:
    """Stream until the source ends (or, with ``loop``, start it again), ``max_frames`` or ``duration_s``.

    ``realtime`` paces a file at its media timestamps. With ``loop`` the media time keeps growing across
    repeats so temporal smoothing never sees time go backwards. Ctrl+C ends the run cleanly
    (``interrupted``). ``on_frame(frame, summary)`` runs after each send (progress bars, sampling).
    ``keep_timings`` stores every frame's latency (benchmarks; off so an all-day camera stream stays flat).
    """
    summary = StreamSummary()
    t_start = time.perf_counter_ns()
    offset_s = 0.0  # media time of the current repeat's frame 0
    last_ts = 0.0
    pace_origin: int | None = None  # perf_counter_ns when media time `offset_s + first ts` is due
    try:
        while max_frames is None or summary.frames < max_frames:
            if duration_s is not None and time.perf_counter_ns() - t_start >= duration_s * 1e9:
                break
            frame = source.read()
            if frame is None:
                if not loop or summary.frames == 0:
                    break
                if not source.rewind():
                    break
                summary.loops += 1
                offset_s = last_ts + 1.0 / max(source.fps, 1.0)
                continue
            ts = offset_s + frame.timestamp_s
            t_ref = frame.t_capture_ns
            if realtime and not source.live:
                if pace_origin is None:
                    pace_origin = time.perf_counter_ns() - int(ts * 1e9)
                due = pace_origin + int(ts * 1e9)
                wait = due - time.perf_counter_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)  # pacing a file like a camera, not polling
                t_ref = max(t_ref, due)
            if source.still:
                faces = reconstructor.reconstruct(frame.image)
            else:
                faces = reconstructor.track(frame.image, ts)
            t_send = time.perf_counter_ns()
            streamer.send(faces, ts)
            t_done = time.perf_counter_ns()
            frame.faces = faces
            frame.timings_ns.update(reconstructor.timings_ns)
            frame.timings_ns["stream"] = t_done - t_send
            last_ts = ts
            summary.frames += 1
            summary.frames_with_face += bool(faces)
            if keep_timings:
                summary.latency_ms.append((t_done - t_ref) / 1e6)
                summary.send_ms.append((t_done - t_send) / 1e6)
            if on_frame is not None:
                on_frame(frame, summary)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.wall_s = (time.perf_counter_ns() - t_start) / 1e9
    summary.corrupt_frames = source.stats.corrupt
    return summary
