"""The Ray actors of a library job.

- ``ModelActor``: owns one face model (one per GPU), batches the crops of every worker's concurrent calls
  into the multi-stream executor (``AsyncBatcher`` over ``ModelRunner``).
- ``InputWorker``: runs tasks (a video, a chunk, a batch of photos): decode, detect, crop, decode the
  model's output, smooth, write. It owns its model (a CPU actor on a machine without a GPU: one task at a
  time; ``--model-actors 0`` on a GPU: ``OwnedGpuModel`` on its share of the GPU) or calls a model actor
  through ``RemoteModel``. With a GPU model it runs several tasks at once on threads (``tasks_per_worker``),
  because a video's next crop needs this frame's mesh: one video alone waits for every round trip to the
  GPU, several interleave, and their crops go to the model as one batch (``CoalescedModel``).
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
OWNED_MAX_BATCH = 16  # crops per batch of a worker's own GPU model (more are split into several)


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


class CoalescedModel:
    """The FaceModel protocol shared by a worker's task threads, their concurrent calls coalesced.

    ``predict`` blocks its thread until its crops come back. A call waits up to ``wait_s`` for every other
    running task (``active``) to call too, then one of them runs all their crops as one batch (``_infer``):
    fewer, larger model calls, whose per-call cost (an actor call, a GPU launch) is what limits them."""

    name: str
    input_size: int

    def __init__(self, wait_s: float = 0.002) -> None:
        self.wait_s = wait_s
        self.active = 0  # tasks running in this worker (InputWorker.run counts them)
        self.stats = {"batches": 0, "requests": 0, "crops": 0, "max_requests": 0}  # as ModelActor's
        self._cond = threading.Condition()
        self._waiting: list[_Call] = []

    @property
    def calls(self) -> int:
        """Batches sent so far."""
        return self.stats["batches"]

    def _infer(self, crops):
        raise NotImplementedError

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
            out = self._infer(join_crops([c.crops for c in batch]))
            parts = split_output(out, [len(c.crops) for c in batch])
            for c, part in zip(batch, parts):
                c.result = part
        # every thread of the batch gets the error (the task boundary reports it)
        except BaseException as exc:
            for c in batch:
                c.error = exc
        with self._cond:
            st = self.stats
            st["batches"] += 1
            st["requests"] += len(batch)
            st["crops"] += sum(len(c.crops) for c in batch)
            st["max_requests"] = max(st["max_requests"], len(batch))
            for c in batch:
                c.done = True
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing to free here (subclasses that own a model free it)."""


class RemoteModel(CoalescedModel):
    """Over a ModelActor: one actor call per coalesced batch (the actor's per-call cost is what limits it).
    ``close`` leaves the actor to its owner."""

    def __init__(self, actor, info: dict, wait_s: float = 0.002) -> None:
        super().__init__(wait_s)
        self.actor = actor
        self.name = info["name"]
        self.input_size = int(info["input_size"])

    def _infer(self, crops):
        return ray.get(self.actor.predict.remote(crops))


class OwnedGpuModel(CoalescedModel):
    """A worker's own model on its share of a GPU (``--model-actors 0``), behind the multi-stream executor:
    no round trip through an actor per frame, and the worker's tasks still share batches."""

    def __init__(self, model: str, config: BatchConfig) -> None:
        super().__init__(config.batch_wait_ms / 1000)
        from face3d_live.models.registry import create_model
        from face3d_live.scale.model_runner import ModelRunner

        # a worker's batches are its few tasks' faces: graphs up to OWNED_MAX_BATCH, not the actors' 64 (each
        # bucket is a capture, with cuDNN's autotune, in every worker's start)
        max_batch = min(config.max_batch, OWNED_MAX_BATCH)
        self.runner = ModelRunner(
            create_model(model, config.model.backend), streams=config.streams, max_batch=max_batch
        )
        self.name, self.input_size = self.runner.name, self.runner.input_size

    def _infer(self, crops):
        return self.runner.predict(crops)

    def close(self) -> None:
        self.runner.close()


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
        self._shared: CoalescedModel | None = None  # a model the worker's task threads share
        from face3d_live.models.registry import create_model

        if model_actor is not None:
            actor = ray.get_actor(model_actor)
            info = ray.get(actor.info.remote())
            self.model = self._shared = RemoteModel(actor, info, config.batch_wait_ms / 1000)
        elif ray.get_gpu_ids():  # a share of a GPU (--model-actors 0): its tasks share the model's batches
            self.model = self._owned = self._shared = OwnedGpuModel(model, config)
        else:
            self.model = self._owned = create_model(model, config.model.backend)
        # --first-pass: the photos' first-pass model, the worker's own (beside its model, or its share of the
        # GPU; on the CPU where the model is an actor's)
        self.first = None
        if config.model.first_pass:
            gpu = model_actor is None and ray.get_gpu_ids()
            first = config.model.first_pass
            self.first = OwnedGpuModel(first, config) if gpu else create_model(first, config.model.backend)

    def pid(self) -> int:
        return os.getpid()

    def run(self, task: VideoTask | PhotoTask) -> TaskResult:
        """One task (Ray may run ``tasks_per_worker`` of these at once, on threads of this actor)."""
        report = self._report if self.progress is not None else None
        shared = [m for m in (self._shared, self.first) if isinstance(m, CoalescedModel)]
        for m in shared:
            m.task_started()
        try:
            if isinstance(task, VideoTask):
                result = run_video_task(task, self.model, self.config, report)
            else:
                result = run_photo_task(task, self.model, self.config, report, self.first)
        finally:
            for m in shared:
                m.task_ended()
        if self.progress is not None:
            self.progress.finished.remote(task.task_id)
        return result

    def batch_stats(self) -> dict | None:
        """Its own GPU model's batching (as ModelActor.batch_stats); None with a CPU model or a model actor."""
        return dict(self._shared.stats) if isinstance(self._shared, OwnedGpuModel) else None

    def _report(self, task_id: str, frames: int) -> None:
        self.progress.report.remote(task_id, frames, os.getpid())  # fire and forget

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None
        if self.first is not None:
            self.first.close()
            self.first = None
