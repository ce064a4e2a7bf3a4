"""The Ray actors of a library job.

- ``ModelActor``: owns one face model (one per GPU), batches the crops of every worker's concurrent calls
  into the multi-stream executor (``AsyncBatcher`` over ``ModelRunner``).
- ``InputWorker``: runs tasks (a video, a chunk, a batch of photos): decode, detect, crop, decode the
  model's output, smooth, write. It owns its model (a CPU actor on a machine without a GPU; one task at a
  time) or calls a model actor through ``RemoteModel``; then it runs several tasks at once on threads
  (``tasks_per_worker``), because a video's next crop needs this frame's mesh: one video alone waits for
  every round trip to the GPU, several interleave, and their crops go to the actor as one call.
- ``ProgressActor``: frames written per task, for the driver's progress bar (which waits on it; nothing
  polls).

Workers and model actors restart when their process dies and Ray retries the call that was running
(``max_restarts`` / ``max_task_retries``); tasks are idempotent (work.py), so a retry rewrites the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

import ray

from face3d_live.scale.config import BatchConfig
from face3d_live.scale.model_runner import join_crops, split_output
from face3d_live.scale.work import PhotoTask, TaskResult, VideoTask, run_photo_task, run_video_task
from face3d_live.threads import limit_worker_threads

log = logging.getLogger(__name__)

RESTARTS = 4  # process deaths an actor survives (and retries of the call it was running)


@ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS)
class ModelActor:
    def __init__(
        self, model: str, backend: str, max_batch: int, batch_wait_s: float, streams: int, log_level: int
    ) -> None:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
        limit_worker_threads()  # OpenCV sized to this worker's CPU share (face3d_live/threads.py)
        from face3d_live.models.registry import create_model
        from face3d_live.scale.model_runner import AsyncBatcher, ModelRunner

        self.runner = ModelRunner(create_model(model, backend), streams=streams, max_batch=max_batch)
        self.stats = {"batches": 0, "requests": 0, "crops": 0, "max_requests": 0}
        self.batcher = AsyncBatcher(
            self.runner,
            max_batch=max_batch,
            wait_s=batch_wait_s,
            max_in_flight=streams,
            on_batch=self._observe,
        )

    def _observe(self, requests: int, crops: int, seconds: float) -> None:
        s = self.stats
        s["batches"] += 1
        s["requests"] += requests
        s["crops"] += crops
        s["max_requests"] = max(s["max_requests"], requests)

    async def predict(self, crops):
        return await self.batcher.predict(crops)

    async def info(self) -> dict:
        return {
            "name": self.runner.name,
            "input_size": self.runner.input_size,
            "label": self.runner.label,
            "pid": os.getpid(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        }

    async def batch_stats(self) -> dict:
        return dict(self.stats)


@dataclass
class _Call:
    crops: object
    taken: bool = False
    done: bool = False
    result: object = None
    error: BaseException | None = None


class RemoteModel:
    """The FaceModel protocol over a ModelActor, shared by a worker's task threads.

    ``predict`` blocks its thread until its crops come back. Calls of concurrent threads are coalesced: a
    call waits up to ``wait_s`` for every other running task (``active``) to call too, then one of them
    sends all their crops to the actor in one call (fewer, larger calls: the actor's per-call cost is what
    limits it). ``close`` leaves the actor to its owner."""

    def __init__(self, actor, info: dict, wait_s: float = 0.002) -> None:
        self.actor = actor
        self.name = info["name"]
        self.input_size = int(info["input_size"])
        self.wait_s = wait_s
        self.active = 0  # tasks running in this worker (InputWorker.run counts them)
        self.calls = 0
        self._cond = threading.Condition()
        self._waiting: list[_Call] = []

    def task_started(self) -> None:
        with self._cond:
            self.active += 1

    def task_ended(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()  # a waiting call may now have everyone it waits for

    def predict(self, crops):
        call = _Call(crops)
        batch = None
        with self._cond:
            self._waiting.append(call)
            self._cond.notify_all()
            deadline = time.monotonic() + self.wait_s
            while not call.taken:
                left = deadline - time.monotonic()
                if len(self._waiting) >= self.active or left <= 0:
                    batch, self._waiting = self._waiting, []
                    for c in batch:
                        c.taken = True
                    break
                self._cond.wait(left)
        if batch is not None:
            self._send(batch)
        with self._cond:
            while not call.done:
                self._cond.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _send(self, batch: list[_Call]) -> None:
        try:
            out = ray.get(self.actor.predict.remote(join_crops([c.crops for c in batch])))
            parts = split_output(out, [len(c.crops) for c in batch])
            for c, part in zip(batch, parts):
                c.result = part
        # every thread of the batch gets the error (the task boundary reports it)
        except BaseException as exc:
            for c in batch:
                c.error = exc
        with self._cond:
            self.calls += 1
            for c in batch:
                c.done = True
            self._cond.notify_all()

    def close(self) -> None:
        """The driver owns the model actor."""


@ray.remote(num_cpus=0)
class ProgressActor:
    """Frames written per task (the latest count a task reported: a retried task starts again at 0)."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.version = 0
        self._changed = asyncio.Event()

    async def report(self, task_id: str, frames: int, pid: int) -> None:
        self.frames[task_id] = frames
        self.pids[task_id] = pid
        self.version += 1
        self._changed.set()

    async def finished(self, task_id: str) -> None:
        self.pids.pop(task_id, None)

    async def wait(self, version: int, timeout_s: float) -> dict:
        """The totals once they differ from ``version`` (or after ``timeout_s``)."""
        if self.version == version:
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout_s)
        return {"version": self.version, "frames": sum(self.frames.values()), "pids": dict(self.pids)}


@ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS)
class InputWorker:
    """``model_actor`` / ``progress``: names of the job's actors (looked up here, so that a restarted worker
    finds them again: Ray cannot always restore handles passed to a constructor)."""

    def __init__(
        self,
        config: BatchConfig,
        model: str,
        model_actor: str | None = None,
        progress: str | None = None,
        log_level: int = logging.WARNING,
    ) -> None:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
        limit_worker_threads()  # OpenCV sized to this worker's CPU share (face3d_live/threads.py)
        self.config = config
        self.progress = ray.get_actor(progress) if progress else None
        self._owned = None
        self._remote: RemoteModel | None = None
        if model_actor is not None:
            actor = ray.get_actor(model_actor)
            info = ray.get(actor.info.remote())
            self.model = self._remote = RemoteModel(actor, info, config.batch_wait_ms / 1000)
        else:
            from face3d_live.models.registry import create_model

            self.model = self._owned = create_model(model, config.model.backend)

    def pid(self) -> int:
        return os.getpid()

    def run(self, task: VideoTask | PhotoTask) -> TaskResult:
        """One task (Ray may run ``tasks_per_worker`` of these at once, on threads of this actor)."""
        report = self._report if self.progress is not None else None
        if self._remote is not None:
            self._remote.task_started()
        try:
            if isinstance(task, VideoTask):
                result = run_video_task(task, self.model, self.config, report)
            else:
                result = run_photo_task(task, self.model, self.config, report)
        finally:
            if self._remote is not None:
                self._remote.task_ended()
        if self.progress is not None:
            self.progress.finished.remote(task.task_id)
        return result

    def _report(self, task_id: str, frames: int) -> None:
        self.progress.report.remote(task_id, frames, os.getpid())  # fire and forget

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None
