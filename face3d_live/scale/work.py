"""One task's work, without Ray: a video (or a chunk of one) or a batch of photos → ``process``'s outputs.

A task writes into its own staging folder (``OUT/NAME/.partial/TASK-RANDOM/``) and, once complete, renames
each file into place. File names are fixed by frame index, so a retried task (a worker that died) writes
the same names again: nothing is lost and nothing appears twice. ``OUT/NAME/summary.json`` and the resume
marker are written by the driver when all of an input's tasks are done.

The model is borrowed: a worker loads it once (or holds a proxy to a model actor) and every task builds a
fresh ``Reconstructor`` around it, so tracking state never leaks from one video into the next.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from face3d_live.capture.video import VideoFileSource
from face3d_live.errors import Face3DError, SourceError
from face3d_live.pipeline.frame_writer import FrameResultWriter
from face3d_live.pipeline.offline import STILLS_TOGETHER, RunSummary, reconstruct_stills, run_offline
from face3d_live.scale.config import BatchConfig
from face3d_live.types import Frame

log = logging.getLogger(__name__)

PARTIAL = ".partial"
PHOTO_FPS = 30.0  # FrameSource's default rate: a folder's timestamps are index / 30, as in `process`
REPORT_EVERY_S = 0.25

# progress callback: (task_id, frames written so far)
Report = Callable[[str, int], None]


# ---- tasks and results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoTask:
    """Frames [start, stop) of one video; decoding begins ``warmup`` frames earlier (outputs not written).
    whole: the entire video as ``process`` runs it (``max_frames`` as its --max-frames)."""

    task_id: str
    input_index: int
    path: str
    out_dir: str
    start: int = 0
    stop: int | None = None
    warmup: int = 0
    max_frames: int | None = None
    whole: bool = True


@dataclass(frozen=True)
class Photo:
    input_index: int
    path: str
    frame_index: int  # its place in the input's name order (the NPZ's number, as in `process`)
    out_dir: str


@dataclass(frozen=True)
class PhotoTask:
    task_id: str
    photos: tuple[Photo, ...]


@dataclass
class InputStats(RunSummary):
    """One input's share of one task: ``run_offline``'s summary of the written frames, plus notes."""

    notes: list[str] = field(default_factory=list)

    def add_frame(self, frame: Frame) -> None:
        self.frames += 1
        self.faces += len(frame.faces)
        self.frames_with_face += bool(frame.faces)
        for stage, ns in frame.timings_ns.items():
            self.stage_ns.setdefault(stage, []).append(int(ns))

    def merge(self, other: InputStats) -> None:
        self.frames += other.frames
        self.frames_with_face += other.frames_with_face
        self.faces += other.faces
        self.corrupt_frames += other.corrupt_frames
        self.wall_s += other.wall_s
        for stage, values in other.stage_ns.items():
            self.stage_ns.setdefault(stage, []).extend(values)
        self.notes.extend(other.notes)


@dataclass
class TaskResult:
    """stats: per input index; errors: input index → one-line reason (that input failed)."""

    task_id: str
    stats: dict[int, InputStats] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    pid: int = 0
    host: str = ""
    wall_s: float = 0.0


# ---- staging -----------------------------------------------------------------------------------------------
def staging_dir(out_dir: Path, task_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in task_id)
    return Path(out_dir) / PARTIAL / f"{safe}-{uuid.uuid4().hex[:8]}"


def publish(staging: Path, out_dir: Path) -> None:
    """Move every file of a finished task into place (each rename is atomic), then drop the staging folder."""
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dst = out_dir / src.relative_to(staging)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(staging, ignore_errors=True)


class _Throttle:
    """Calls ``report(task_id, n)`` at most every REPORT_EVERY_S seconds (and always on ``final``)."""

    def __init__(self, task_id: str, report: Report | None) -> None:
        self.task_id, self.report, self._last = task_id, report, 0.0

    def __call__(self, n: int, final: bool = False) -> None:
        if self.report is None:
            return
        now = time.monotonic()
        if final or now - self._last >= REPORT_EVERY_S:
            self._last = now
            with contextlib.suppress(Exception):  # progress is best effort, never a reason to fail a task
                self.report(self.task_id, n)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, Face3DError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


# ---- video -------------------------------------------------------------------------------------------------
class VideoChunkSource(VideoFileSource):
    """Frames [first, stop) of a video file: seeks to ``first`` (frame indices stay the file's own)."""

    def __init__(self, path: str | Path, first: int, stop: int | None) -> None:
        super().__init__(path)
        if first > 0:
            if not self._cap.set(cv2.CAP_PROP_POS_FRAMES, first):
                raise SourceError(f"{self.path}: cannot seek to frame {first}")
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise SourceError(
                    f"{self.path}: no frame can be decoded at {first} (shorter than announced?)"
                )
            self._pending, self._index = bgr, first
            at = self._cap.get(cv2.CAP_PROP_POS_MSEC) * self.fps / 1000.0  # where the decoder says it is
            if at > 0 and abs(at - first) > 0.5:
                log.warning(
                    "%s: seek to frame %d landed near frame %.1f (variable frame rate?)", self.path, first, at
                )
        self._first, self._stop = first, stop

    @property
    def frame_count(self) -> int | None:
        end = self._stop if self._stop is not None else self._count
        return None if end is None else max(0, end - self._first)

    def read(self) -> Frame | None:
        if self._stop is not None and self._index >= self._stop:
            return None
        return super().read()


def run_video_task(task: VideoTask, model, config: BatchConfig, report: Report | None = None) -> TaskResult:
    """Process one video task; an unreadable video becomes ``errors[input]``, not an exception."""
    t0 = time.perf_counter()
    result = TaskResult(task.task_id, pid=os.getpid(), host=socket.gethostname())
    stats = InputStats()
    out_dir = Path(task.out_dir)
    staging = staging_dir(out_dir, task.task_id)
    throttle = _Throttle(task.task_id, report)
    glb = None
    try:
        if task.whole:
            source = VideoFileSource(task.path)
        else:
            source = VideoChunkSource(task.path, task.start - task.warmup, task.stop)
        with source, config.model.reconstructor(model, still=False) as rec:
            writer = FrameResultWriter(staging, write_obj_files=config.obj)
            if config.glb:
                glb = _glb_writer(staging / f"{out_dir.name}.glb", source.fps, task.path)
            corrupt_before = 0

            def on_frame(frame: Frame) -> None:
                nonlocal corrupt_before
                if frame.frame_id < task.start:  # warm-up: tracking and smoothing settle
                    corrupt_before = source.stats.corrupt
                    return
                writer.write(frame)
                if glb is not None:
                    glb.write(frame.frame_id, frame.timestamp_s, frame.faces, image=frame.image)
                stats.add_frame(frame)
                throttle(stats.frames)

            summary = run_offline(
                source, rec, on_frame, max_frames=task.max_frames if task.whole else None, progress=False
            )
            stats.corrupt_frames = source.stats.corrupt - corrupt_before
            stats.wall_s = summary.wall_s
        if glb is not None:
            _close_glb(glb, stats)
            glb = None
        publish(staging, out_dir)
        result.stats[task.input_index] = stats
    except Exception as exc:  # the task boundary: one bad input is reported, the job goes on
        log.warning("%s: %s", task.path, _one_line(exc))
        result.errors[task.input_index] = _one_line(exc)
        if glb is not None:
            glb.abort()
        shutil.rmtree(staging, ignore_errors=True)
    throttle(stats.frames, final=True)
    result.wall_s = time.perf_counter() - t0
    return result


def _glb_writer(path: Path, fps: float, source: str):
    from face3d_live.record import RecordConfig, SequenceWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = SequenceWriter(
        path, RecordConfig(), journal_dir=path.with_name(".glb.journal"), fps=fps, source=source
    )
    return writer.open()


def _close_glb(writer, stats: InputStats) -> None:
    from face3d_live.errors import RecordError

    try:
        writer.close()
    except RecordError as exc:  # no face in any frame: the NPZs are the result, there is no GLB
        stats.notes.append(f"no GLB: {exc}")


# ---- photos ------------------------------------------------------------------------------------------------
def run_photo_task(
    task: PhotoTask, model, config: BatchConfig, report: Report | None = None, first=None
) -> TaskResult:
    """Reconstruct a batch of photos gathered from any number of photo inputs, ``STILLS_TOGETHER`` at a time
    through the model (the faces of several files in each model pass); ``first``: the worker's first-pass
    model (``--first-pass``; None: loaded by name here if the options name one)."""
    t0 = time.perf_counter()
    result = TaskResult(task.task_id, pid=os.getpid(), host=socket.gethostname())
    throttle = _Throttle(task.task_id, report)
    stagings: dict[int, tuple[Path, Path, FrameResultWriter]] = {}
    done = 0
    with config.model.reconstructor(model, still=True, first=first) as rec:
        for k in range(0, len(task.photos), STILLS_TOGETHER):
            t_batch = time.perf_counter()
            read = _read_photos(task.photos[k : k + STILLS_TOGETHER], result, stagings, config)
            written: list[InputStats] = []
            errors = _reconstruct_photos(rec, [frame for _, frame in read])
            for (photo, frame), error in zip(read, errors):
                i = photo.input_index
                if i in result.errors:  # an earlier photo of its input failed: the input is dropped
                    continue
                if error is None:
                    try:
                        _write_photo(frame, stagings[i], photo.frame_index, config.glb)
                    except Exception as exc:  # the task boundary: this input fails, the others go on
                        error = exc
                if error is not None:
                    log.warning("%s: %s", photo.path, _one_line(error))
                    result.errors[i] = _one_line(error)
                    continue
                result.stats[i].add_frame(frame)
                written.append(result.stats[i])
                done += 1
                throttle(done)
            share_s = (time.perf_counter() - t_batch) / max(1, len(written))
            for stats in written:  # each written photo's share of the batch's time
                stats.wall_s += share_s
    for i, (staging, out_dir, _) in stagings.items():
        if i in result.errors:
            shutil.rmtree(staging, ignore_errors=True)
        else:
            publish(staging, out_dir)
    throttle(done, final=True)
    result.wall_s = time.perf_counter() - t0
    return result


def _read_photos(
    photos, result: TaskResult, stagings: dict, config: BatchConfig
) -> list[tuple[Photo, Frame]]:
    """The photos of one batch that read, as Frames (an unreadable file is counted, as by ``process``; a
    photo of an input that already failed is dropped)."""
    from face3d_live.capture.images import read_image

    frames = []
    for photo in photos:
        i = photo.input_index
        if i in result.errors:
            continue
        stats = result.stats.setdefault(i, InputStats())
        try:
            if i not in stagings:
                staging = staging_dir(Path(photo.out_dir), result.task_id)
                stagings[i] = (
                    staging,
                    Path(photo.out_dir),
                    FrameResultWriter(staging, write_obj_files=config.obj),
                )
            t_read = time.perf_counter_ns()
            try:
                image = read_image(photo.path)
            except SourceError as exc:
                stats.corrupt_frames += 1
                log.warning("skipped: %s", exc)
                continue
        except Exception as exc:  # the staging folder could not be made: this input fails
            log.warning("%s: %s", photo.path, _one_line(exc))
            result.errors[i] = _one_line(exc)
            continue
        t_start = time.perf_counter_ns()
        frame = Frame(
            frame_id=photo.frame_index,
            image=image,
            t_capture_ns=t_start,
            timestamp_s=photo.frame_index / PHOTO_FPS,
        )
        frame.timings_ns["capture"] = t_start - t_read
        frames.append((photo, frame))
    return frames


def _reconstruct_photos(rec, frames: list[Frame]) -> list[Exception | None]:
    """Fill in each frame's faces, all together; if that fails, one by one, so that an error stays with the
    photo that caused it. Per frame: None, or its error."""
    try:
        reconstruct_stills(rec, frames)
        return [None] * len(frames)
    except Exception:
        errors: list[Exception | None] = []
        for frame in frames:
            try:
                reconstruct_stills(rec, [frame])
                errors.append(None)
            except Exception as exc:
                errors.append(exc)
        return errors


def _write_photo(frame: Frame, staging: tuple[Path, Path, FrameResultWriter], index: int, glb: bool) -> None:
    folder, _, writer = staging
    writer.write(frame)
    if glb and frame.faces:
        from face3d_live.scale.avatar import avatar_glb

        glb_path = folder / "glb" / f"frame_{index:06d}.glb"
        glb_path.parent.mkdir(parents=True, exist_ok=True)
        glb_path.write_bytes(avatar_glb(frame.image, frame.faces[0]))


AUTO_MIN_CHUNK = 300  # frames (12 s at 25 fps): the 30-frame warm-up of a chunk stays a tenth of its work


def auto_chunk_frames(video_frames: Sequence[int], other_tasks: int, workers: int) -> int:
    """``chunk_frames`` for a job whose videos have ``video_frames`` frames, beside ``other_tasks`` photo tasks,
    on ``workers`` input workers: 0 (every video whole) while there is a task for every worker, else the chunk
    length that gives about two tasks per worker, never under AUTO_MIN_CHUNK frames. Measured on the H200 (16
    cores, 15 workers): one 2,200-frame 720p video 59.9 frames/s whole, 140-152 chunked (7 chunks); 32 videos
    of 550 frames cut to fill every task slot instead of kept whole: 450 and 561 against 594 and 562 frames/s
    (each chunk decodes its warm-up again), so a job with a task per worker stays as it is."""
    if not video_frames or len(video_frames) + other_tasks >= workers:
        return 0
    return max(AUTO_MIN_CHUNK, -(-sum(video_frames) // (2 * workers)))


def iter_chunks(
    frames: int, chunk: int, overlap: int, end: int | None = None
) -> Iterator[tuple[int, int | None, int]]:
    """(start, stop, warmup) of each chunk of a video of about ``frames`` frames; the last one stops at
    ``end`` (None: the end of the file, as the container's count is an estimate). One chunk (0, end, 0)
    when the video is not long enough to split."""
    if chunk <= 0 or frames <= chunk * 3 // 2:
        yield 0, end, 0
        return
    starts = list(range(0, frames, chunk))
    if frames - starts[-1] < chunk // 2:  # no short tail chunk: the previous one takes it
        starts.pop()
    for k, start in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else end
        yield start, stop, min(overlap, start)
