"""Offline (file) processing: a decode thread feeds a bounded queue, the caller's thread reconstructs.

Every frame is processed in order (no dropping); decoding of frame k+1 overlaps reconstruction of frame k.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from face3d_live.capture.base import FrameSource
from face3d_live.pipeline.channels import BoundedQueue, Closed
from face3d_live.reconstructor import Reconstructor
from face3d_live.types import Frame


@dataclass
class RunSummary:
    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0
    corrupt_frames: int = 0
    wall_s: float = 0.0
    stage_ns: dict[str, list[int]] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def stage_median_ms(self) -> dict[str, float]:
        return {k: float(np.median(v)) / 1e6 for k, v in self.stage_ns.items() if v}

    def to_dict(self, input: str, model: str) -> dict:
        """The ``summary.json`` of a processed input (``process``, and each input of a Ray library job)."""
        return {
            "input": input,
            "model": model,
            "frames": self.frames,
            "frames_with_face": self.frames_with_face,
            "frames_without_face": self.frames - self.frames_with_face,
            "faces": self.faces,
            "corrupt_frames_skipped": self.corrupt_frames,
            "wall_s": self.wall_s,
            "fps": self.fps,
            "stage_median_ms": self.stage_median_ms(),
        }

    def line(self) -> str:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in self.stage_median_ms().items())
        return (
            f"{self.frames} frames ({self.frames_with_face} with a face, {self.frames - self.frames_with_face} without, "
            f"{self.corrupt_frames} corrupt skipped) in {self.wall_s:.2f} s = {self.fps:.1f} frames/s; "
            f"median ms: {stages}"
        )


class _Decoder(threading.Thread):
    """Reads the source into a bounded queue; records decode time per frame; forwards exceptions."""

    def __init__(self, source: FrameSource, queue: BoundedQueue[Frame], max_frames: int | None) -> None:
        super().__init__(name="decode", daemon=True)
        self.source, self.queue, self.max_frames = source, queue, max_frames
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while self.max_frames is None or n < self.max_frames:
                t0 = time.perf_counter_ns()
                frame = self.source.read()
                if frame is None:
                    break
                frame.timings_ns["capture"] = time.perf_counter_ns() - t0
                if not self.queue.put(frame):
                    break
                n += 1
        except BaseException as exc:  # handed to the consumer thread, which re-raises it
            self.error = exc
        finally:
            self.queue.close()


# photos per model batch (2-core EPYC: +8 % photos/s in `process`, +15 % in the library job)
STILLS_TOGETHER = 8


def _already_read(queue: BoundedQueue[Frame], n: int) -> list[Frame]:
    """Up to ``n`` more frames the decoder has queued, without waiting for any."""
    out: list[Frame] = []
    while len(out) < n:
        try:
            frame = queue.get(timeout=0)
        except Closed:
            break
        if frame is None:
            break
        out.append(frame)
    return out


def reconstruct_stills(reconstructor: Reconstructor, frames: list[Frame]) -> None:
    """Faces of each photo (reconstructed together); each frame gets its share of the batch's stage times."""
    if not frames:
        return
    per_frame = reconstructor.reconstruct_batch([f.image for f in frames])
    share = {stage: ns // len(frames) for stage, ns in reconstructor.timings_ns.items()}
    for frame, faces in zip(frames, per_frame):
        frame.faces = faces
        frame.timings_ns.update(share)


def run_offline(
    source: FrameSource,
    reconstructor: Reconstructor,
    on_frame: Callable[[Frame], None] | None = None,
    *,
    max_frames: int | None = None,
    progress: bool = True,
    queue_depth: int = 4,
) -> RunSummary:
    """Reconstruct every frame of ``source``; ``on_frame`` receives each Frame with ``faces`` filled in.
    Photos (a still source) that the decoder has already read go through the model together, up to
    ``STILLS_TOGETHER`` at a time (``Reconstructor.reconstruct_batch``: the same numbers, fewer model calls)."""
    if source.still:
        queue_depth = max(queue_depth, STILLS_TOGETHER)
    queue: BoundedQueue[Frame] = BoundedQueue(queue_depth)
    decoder = _Decoder(source, queue, max_frames)
    total = source.frame_count if max_frames is None else min(max_frames, source.frame_count or max_frames)
    bar = tqdm(total=total, unit="frame", desc=source.name, disable=not progress, leave=False)
    summary = RunSummary()
    t_start = time.perf_counter()
    decoder.start()
    try:
        while True:
            try:
                frames = [queue.get()]
            except Closed:
                break
            if source.still:
                frames += _already_read(queue, STILLS_TOGETHER - 1)
                reconstruct_stills(reconstructor, frames)
            else:
                frame = frames[0]
                frame.faces = reconstructor.track(frame.image, frame.timestamp_s)
                frame.timings_ns.update(reconstructor.timings_ns)
            for frame in frames:
                for stage, ns in frame.timings_ns.items():
                    summary.stage_ns.setdefault(stage, []).append(ns)
                summary.frames += 1
                summary.faces += len(frame.faces)
                summary.frames_with_face += bool(frame.faces)
                if on_frame is not None:
                    on_frame(frame)
                bar.update()
    finally:
        queue.close()
        decoder.join(timeout=5.0)
        bar.close()
    if decoder.error is not None:
        raise decoder.error
    summary.wall_s = time.perf_counter() - t_start
    summary.corrupt_frames = source.stats.corrupt
    return summary
