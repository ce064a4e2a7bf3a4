"""The live pipeline, off the UI thread:

    source ──► capture thread ──► LatestSlot ──► worker thread ──► LatestSlot ──► UI (or headless presenter)
               (paced read)       (drop stale)   (track, timed)     (newest result)

The consumer (the Qt window, or the benchmark's headless presenter) is told a result is ready through
``on_result`` (from the worker thread: the Qt window turns it into a queued signal), takes the newest
one from ``results`` and, once it has painted it, reports the end-to-end latency itself (capture
timestamp → frame shown). Texture accumulation and rendering belong to the consumer: GL objects live
on the GL thread (STYLE rule 12), so no texture is read back and re-uploaded every frame.

Every stage is timed into ``Frame.timings_ns``: ``capture`` (file read/decode; not for cameras, whose
read mostly waits for the next frame), ``queue`` (capture timestamp → taken by the worker), then the reconstructor's stages (detect, crop, infer, decode, smooth).
Worker errors reach the consumer as ``PipelineEvent`` messages (``on_event``); ``stop()`` closes the
channels and the source and joins both threads within ``stop_timeout_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from face3d_live.capture.base import FrameSource
from face3d_live.errors import Face3DError
from face3d_live.pipeline.channels import Closed, LatestSlot
from face3d_live.reconstructor import Reconstructor
from face3d_live.types import Frame

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_ERRORS = 30  # a worker failing on this many frames in a row gives up


@dataclass(frozen=True)
class LiveConfig:
    """pace_fps: file/image sources are read at this rate (None: the source's own frame rate; 0: as fast
    as the worker takes frames). Cameras and the real-time demo pace themselves. loop: restart a file
    source at its end (needs a source factory). max_frames: stop after this many frames captured."""

    pace_fps: float | None = None
    loop: bool = True
    max_frames: int | None = None
    stop_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.pace_fps is not None and self.pace_fps < 0:
            raise ValueError(f"pace_fps must be >= 0, got {self.pace_fps}")


@dataclass(frozen=True)
class PipelineEvent:
    """kind: "info" (model loaded, source looped), "error" (a frame failed; the pipeline goes on),
    "fatal" (the pipeline stopped: model could not load, source failed), "end" (source finished)."""

    kind: str
    message: str
    t_ns: int


@dataclass
class LiveResult:
    """A reconstructed frame: ``frame.faces`` and ``frame.timings_ns`` filled; ``t_ready_ns`` when the
    worker finished (perf_counter_ns)."""

    frame: Frame
    t_ready_ns: int
    display: Any = None  # what ``prepare`` made of the frame on the worker thread (e.g. the annotated image)


class LivePipeline:
    """Capture and reconstruction threads joined by latest-only slots.

    ``source``: a FrameSource factory (called now, in ``start``, so a bad source raises at once, and
    again to loop a file) or an opened FrameSource (not looped). The pipeline owns and closes the sources.
    ``reconstructor``: an object (borrowed: the caller closes it) or a factory (called on the worker
    thread, so loading a model never blocks the UI; the pipeline closes what it made).
    ``prepare``: per-frame display work run on the worker after reconstruction (the window's mesh overlay:
    OpenCV drawing releases the GIL, so it runs beside the UI thread instead of on it); its return value
    arrives as ``LiveResult.display``.
    """

    def __init__(
        self,
        source: FrameSource | Callable[[], FrameSource],
        reconstructor: Reconstructor | Callable[[], Reconstructor],
        config: LiveConfig = LiveConfig(),
        *,
        on_result: Callable[[], None] | None = None,
        on_event: Callable[[PipelineEvent], None] | None = None,
        prepare: Callable[[Frame], Any] | None = None,
    ) -> None:
        self.config = config
        self._prepare = prepare
        self._source_factory = source if callable(source) and not isinstance(source, FrameSource) else None
        self._source: FrameSource | None = None if self._source_factory else source
        self._rec_arg = reconstructor
        self.reconstructor: Reconstructor | None = (
            reconstructor if isinstance(reconstructor, Reconstructor) else None
        )
        self._on_result = on_result or (lambda: None)
        self._on_event = on_event or (lambda e: None)
        self.frames_in: LatestSlot[Frame] = LatestSlot()
        self.results: LatestSlot[LiveResult] = LatestSlot()
        self._stop = threading.Event()
        self._taken = threading.Event()  # unpaced mode: the worker took the last frame
        self._lock = threading.Lock()
        self._smoothing: bool | None = None  # requested change, applied between frames
        self._reset_requested = False
        self._inject: tuple[float, int] = (0.0, 0)
        self._stop_requested = False
        self._threads: list[threading.Thread] = []
        self.state = "new"  # new → starting → running → ended | failed | stopped
        self.frames_captured = 0
        self.frames_processed = 0
        self.source_fps = 30.0
        self.source_name = ""
        self.description: dict[str, str] = {}
        self._source_dropped_before = 0

    # ---- control --------------------------------------------------------------------------------------
    def start(self) -> LivePipeline:
        """Open the source (SourceError/CaptureError raise here) and start both threads."""
        if self.state != "new":
            raise RuntimeError("a LivePipeline starts once; make a new one")
        if self._source is None:
            self._source = self._source_factory()
        self.source_fps = float(self._source.fps or 30.0)
        self.source_name = self._source.name
        self.state = "starting"
        self._threads = [
            threading.Thread(target=self._capture_loop, name="live-capture", daemon=True),
            threading.Thread(target=self._worker_loop, name="live-worker", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> bool:
        """Stop capture and reconstruction; True when both threads ended within ``stop_timeout_s``.

        Idempotent. A model still loading cannot be interrupted: its (daemon) thread finishes the load,
        closes the model and exits on its own.
        """
        self._stop_requested = True
        self._stop.set()
        self._taken.set()
        self.frames_in.close()
        self.results.close()
        deadline = time.monotonic() + self.config.stop_timeout_s
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._source is not None and not self._threads:  # never started: nobody else closes it
            self._source.close()
            self._source = None
        joined = not any(t.is_alive() for t in self._threads)
        if self.state in ("new", "starting", "running"):
            self.state = "stopped"
        if not joined:
            log.warning("live pipeline: a thread is still busy after %.1f s", self.config.stop_timeout_s)
        return joined

    close = stop

    def __enter__(self) -> LivePipeline:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_smoothing(self, enabled: bool) -> None:
        """Turn One Euro smoothing on/off (applied by the worker before its next frame)."""
        with self._lock:
            self._smoothing = enabled

    def reset_tracking(self) -> None:
        with self._lock:
            self._reset_requested = True

    def inject_delay(self, seconds: float, frames: int) -> None:
        """Fault injection: the worker stalls ``seconds`` extra on each of the next ``frames`` frames
        (exercises the latency alerts end to end)."""
        with self._lock:
            self._inject = (float(seconds), int(frames))

    @property
    def dropped(self) -> int:
        """Frames replaced before they were used: in the source's own slot (cameras), before the worker
        and before the consumer."""
        src = self._source.stats.dropped if self._source is not None else 0
        return self._source_dropped_before + src + self.frames_in.dropped + self.results.dropped

    # ---- threads --------------------------------------------------------------------------------------
    def _emit(self, kind: str, message: str) -> None:
        (log.warning if kind in ("error", "fatal") else log.info)("live pipeline %s: %s", kind, message)
        try:
            self._on_event(PipelineEvent(kind, message, time.perf_counter_ns()))
        except Exception:  # a broken listener must not kill the pipeline
            log.exception("pipeline event listener failed")

    def _capture_loop(self) -> None:
        src = self._source
        cfg = self.config
        pace = cfg.pace_fps if cfg.pace_fps is not None else self.source_fps
        t_start = time.perf_counter()
        k = 0  # frames read since (re)start: the pacing clock
        awaiting = False  # a frame was put that the worker has not taken yet
        try:
            while not self._stop.is_set():
                if cfg.max_frames is not None and self.frames_captured >= cfg.max_frames:
                    self._emit("end", f"{self.frames_captured} frames captured")
                    break
                if not src.live:
                    if pace > 0:  # a file plays at its frame rate, like a camera
                        delay = t_start + k / pace - time.perf_counter()
                        if delay > 0 and self._stop.wait(delay):
                            break
                    elif awaiting:  # unpaced: read the next frame once the worker took the last one
                        self._taken.wait()
                        self._taken.clear()
                        awaiting = False
                        if self._stop.is_set():
                            break
                t0 = time.perf_counter_ns()
                frame = src.read()
                if frame is None:
                    if cfg.loop and not self._stop.is_set() and src.rewind():
                        continue  # the pacing clock runs on, as a camera's would
                    if not (cfg.loop and self._source_factory is not None and not self._stop.is_set()):
                        self._emit("end", f"{src.name}: end of source after {self.frames_captured} frames")
                        break
                    self._source_dropped_before += src.stats.dropped
                    src.close()
                    src = self._source = self._source_factory()
                    t_start, k = time.perf_counter(), 0
                    continue
                if not src.live:  # a live source's read() mostly waits for the next frame: not a cost
                    frame.timings_ns["capture"] = time.perf_counter_ns() - t0
                self.frames_captured += 1
                k += 1
                self._taken.clear()
                self.frames_in.put(frame)
                awaiting = True
        except Face3DError as exc:
            self._emit("fatal", str(exc))
        except Exception as exc:  # never a silent dead thread: the UI shows it
            log.exception("capture failed")
            self._emit("fatal", f"capture failed: {type(exc).__name__}: {exc}")
        finally:
            self.frames_in.close()
            src.close()

    def _worker_loop(self) -> None:
        owned = False
        try:
            if self.reconstructor is None:
                t0 = time.perf_counter()
                self.reconstructor = self._rec_arg()
                owned = True
                self._emit("info", f"model ready in {time.perf_counter() - t0:.1f} s")
            self.description = describe(self.reconstructor)
            if self.state == "starting":
                self.state = "running"
            self._process_frames(self.reconstructor)
        except Face3DError as exc:
            self.state = "failed"
            self._emit("fatal", str(exc))
        except Exception as exc:
            self.state = "failed"
            log.exception("live worker failed")
            self._emit("fatal", f"{type(exc).__name__}: {exc}")
        finally:
            self.results.close()
            self._stop.set()  # nothing consumes frames any more: stop capture too
            self._taken.set()
            self.frames_in.close()
            if owned and self.reconstructor is not None:
                self.reconstructor.close()
            if self.state == "running":
                self.state = "stopped" if self._stop_requested else "ended"

    def _process_frames(self, rec: Reconstructor) -> None:
        smoothing_config = rec.smoothing
        errors = failed_total = 0  # consecutive / all failed frames
        last_report = -1e9
        while not self._stop.is_set():
            try:
                frame = self.frames_in.get()
            except Closed:
                return
            t_got = time.perf_counter_ns()
            self._taken.set()
            with self._lock:
                smoothing, self._smoothing = self._smoothing, None
                reset, self._reset_requested = self._reset_requested, False
                delay, left = self._inject
                if left:
                    self._inject = (delay, left - 1)
            if smoothing is not None:
                rec.smoothing = (smoothing_config or _default_smoothing()) if smoothing else None
                rec.reset()  # filter state from before the switch is stale
            if reset:
                rec.reset()
            frame.timings_ns["queue"] = t_got - frame.t_capture_ns
            try:
                frame.faces = rec.track(frame.image, frame.timestamp_s)
                errors = 0
            except Exception as exc:  # one bad frame is a message, not the end of the session
                errors += 1
                failed_total += 1
                frame.faces = []
                now = time.monotonic()
                if now - last_report >= 1.0:  # rate-limited: a failing stream must not flood the UI
                    last_report = now
                    self._emit(
                        "error",
                        f"frame {frame.frame_id}: {type(exc).__name__}: {exc} ({failed_total} failed so far)",
                    )
                if errors >= MAX_CONSECUTIVE_ERRORS:
                    raise
            frame.timings_ns.update(rec.timings_ns)
            if left:
                self._stop.wait(delay)  # the injected stall, interruptible by stop()
                frame.timings_ns["injected"] = int(delay * 1e9)
            display = self._prepare_display(frame)
            self.frames_processed += 1
            self.results.put(LiveResult(frame, time.perf_counter_ns(), display))
            self._on_result()

    def _prepare_display(self, frame: Frame) -> Any:
        """The ``prepare`` hook, timed as stage "annotate"; a failing hook costs the overlay, not the frame."""
        if self._prepare is None:
            return None
        t0 = time.perf_counter_ns()
        try:
            return self._prepare(frame)
        except Exception:
            log.exception("display preparation failed on frame %d", frame.frame_id)
            return None
        finally:
            frame.timings_ns["annotate"] = time.perf_counter_ns() - t0


def _default_smoothing():
    from face3d_live.geometry.one_euro import OneEuroConfig

    return OneEuroConfig()


def describe(rec: Reconstructor) -> dict[str, str]:
    """Model, backend, device and precision of a reconstructor, for the HUD and benchmark JSON."""
    model = rec.model
    backend = getattr(model, "backend", None)
    if backend is not None:
        return {
            "model": model.name,
            "backend": str(getattr(backend, "name", backend)),
            "device": str(getattr(backend, "device", "?")),
            "precision": str(getattr(backend, "precision", "?")),
        }
    # the mediapipe teacher runs its tflite graph on the CPU (LiteRT/XNNPACK), float32
    return {"model": model.name, "backend": "litert", "device": "cpu", "precision": "fp32"}
