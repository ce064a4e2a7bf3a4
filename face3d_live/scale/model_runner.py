"""A face model behind the multi-stream executor, for callers on many threads and one asyncio loop.

``ModelRunner(model).submit(crops) -> Future[ModelOutput]``: the r50 family (r50, the ladder rungs, r50-int8)
runs through ``InferenceExecutor`` (``streams`` slots: CUDA streams on a GPU, worker threads on the CPU), so
copy-in, compute and copy-out of consecutive batches overlap; one thread submits, one collects, results
keep their order. Other models (mediapipe) run ``predict`` on one thread.

``AsyncBatcher(runner).predict(crops)``: gathers concurrent calls on an event loop into batches of at most
``max_batch`` crops. A batch goes as soon as it is full, when ``wait_s`` has passed since its first crop, or
-- while ``max_in_flight`` batches are already running -- whatever arrived until a slot frees: the busier
the model, the larger the batches, and a lone request waits at most ``wait_s``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

import numpy as np

from face3d_live.errors import ConfigError
from face3d_live.models.output import ModelOutput
from face3d_live.models.r50_face import check_crops

log = logging.getLogger(__name__)

# (requests in the batch, crops in the batch, seconds from submit to result)
BatchObserver = Callable[[int, int, float], None]


def concat_outputs(parts: list[ModelOutput]) -> ModelOutput:
    if len(parts) == 1:
        return parts[0]
    lm = None if any(p.landmarks68 is None for p in parts) else np.concatenate([p.landmarks68 for p in parts])
    return ModelOutput(
        vertices=np.concatenate([p.vertices for p in parts]),
        iris=np.concatenate([p.iris for p in parts]),
        landmarks68=lm,
        scores=np.concatenate([p.scores for p in parts]),
    )


def join_crops(parts: list[np.ndarray]) -> np.ndarray:
    """Several callers' crops as one batch (no copy for a single caller); ``split_output`` undoes it."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def split_output(out: ModelOutput, sizes: list[int]) -> list[ModelOutput]:
    bounds = np.cumsum([0, *sizes])
    return [out.rows(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


class ModelRunner:
    """Owns ``model`` (closes it). ``submit`` never blocks: a full executor holds batches in the submit
    thread's queue, which the caller bounds (AsyncBatcher: ``max_in_flight``)."""

    def __init__(self, model, *, streams: int = 2, max_batch: int | None = None) -> None:
        from face3d_live.models.r50_face import R50FaceModel

        self.model = model
        self.name = model.name
        self.input_size = model.input_size
        self._executor = None
        self._closed = False
        self._broken: BaseException | None = None
        self._pending: deque[Future] = deque()  # per submitted executor batch, submission order
        self._lock = threading.Lock()
        backend = getattr(model, "backend", None)
        if isinstance(model, R50FaceModel) and backend is not None:
            from face3d_live.inference.executor import InferenceExecutor

            limit = min(max_batch or backend.max_batch, backend.max_batch)
            self._executor = InferenceExecutor(backend, streams=streams, max_batch=limit)
            self.max_batch = self._executor.max_batch
            self._uint8 = backend.input_dtype == np.uint8
            self.label = (
                f"{self.name} on {backend.label}, executor {streams} stream(s) × batch ≤ {self.max_batch}"
            )
            self._submitter = ThreadPoolExecutor(1, thread_name_prefix="model-submit")
            self._collector = threading.Thread(target=self._collect_loop, name="model-collect", daemon=True)
            self._collector.start()
        else:
            self.max_batch = max_batch or 64
            self.label = f"{self.name} (predict on one thread)"
            self._submitter = ThreadPoolExecutor(1, thread_name_prefix="model-predict")
        log.info("model runner: %s", self.label)

    # ---- submit -----------------------------------------------------------------------------------------
    def submit(self, crops: np.ndarray) -> Future:
        """(N, S, S, 3) uint8 RGB crops → a Future of their ModelOutput (N rows, in order)."""
        self._check(crops)
        if self._executor is None:
            return self._submitter.submit(self.model.predict, crops)
        parts = [crops[i : i + self.max_batch] for i in range(0, len(crops), self.max_batch)]
        futures = [Future() for _ in parts]
        for part, fut in zip(parts, futures):
            self._submitter.submit(self._enqueue, part, fut)
        return futures[0] if len(futures) == 1 else _joined(futures)

    def submit_parts(self, parts: list[np.ndarray]) -> Future:
        """``submit(np.concatenate(parts))``, where the parts fit one executor batch without the concatenation:
        each part is copied straight into the slot's input (the model host: many callers' crops)."""
        n = sum(len(p) for p in parts)
        if self._executor is None or len(parts) == 1 or n > self.max_batch:
            return self.submit(join_crops(parts))
        for part in parts:
            self._check(part)
        fut: Future = Future()
        self._submitter.submit(self._enqueue, parts, fut)
        return fut

    def _check(self, crops: np.ndarray) -> None:
        if self._closed:
            raise ConfigError("the model runner is closed")
        if self._broken is not None:
            raise ConfigError(f"the model runner failed earlier: {self._broken}")
        check_crops(crops, self.input_size)

    def predict(self, crops: np.ndarray) -> ModelOutput:
        """Blocking form (FaceModel protocol)."""
        return self.submit(crops).result()

    def _fill(self, view: np.ndarray, crops: np.ndarray | list[np.ndarray]) -> None:
        """The model's own input conversion, written straight into the slot's input buffer: uint8 NHWC as it
        is (R50FaceModel), else float NCHW in [0, 1] exactly as Int8FaceModel.predict computes it."""
        if isinstance(crops, list):
            a = 0
            for part in crops:
                self._fill(view[a : a + len(part)], part)
                a += len(part)
        elif self._uint8:
            np.copyto(view, crops)
        else:
            np.multiply(crops.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=view, dtype=np.float32)

    def _enqueue(self, crops: np.ndarray | list[np.ndarray], fut: Future) -> None:
        """Submit thread: blocks while every slot is busy (the collector frees them)."""
        if not fut.set_running_or_notify_cancel():
            return
        n = sum(len(p) for p in crops) if isinstance(crops, list) else len(crops)
        try:
            with self._lock:
                self._pending.append(fut)
            self._executor.submit_fill(n, lambda view: self._fill(view, crops), tag=fut)
        except BaseException as exc:
            with self._lock:
                if self._pending and self._pending[-1] is fut:
                    self._pending.pop()
            fut.set_exception(exc)

    def _collect_loop(self) -> None:
        from face3d_live.models.layout import decode

        while True:
            try:
                result = self._executor.collect()
            except ConfigError:  # closed
                return
            except BaseException as exc:  # a failed batch leaves the executor unusable: fail what is waiting
                log.error("model runner: inference failed: %s", exc)
                self._broken = exc
                with self._lock:
                    pending, self._pending = list(self._pending), deque()
                for fut in pending:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            with self._lock:
                if self._pending and self._pending[0] is result.tag:
                    self._pending.popleft()
            try:
                result.tag.set_result(decode(result.output, self.input_size))
            except BaseException as exc:
                result.tag.set_exception(exc)

    # ---- lifetime -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Finish what was submitted, then free the executor and the model; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._submitter.shutdown(wait=True)
        if self._executor is not None:
            with self._lock:
                pending = list(self._pending)
            wait_futures(pending, timeout=60)
            self._executor.close()
            self._collector.join(timeout=5)
        self.model.close()

    def __enter__(self) -> ModelRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def when_all(futures: list[Future], then: Callable[[], None]) -> None:
    """Call ``then()`` once, on the thread that finishes the last of ``futures``."""
    remaining = [len(futures)]
    lock = threading.Lock()

    def done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        then()

    for f in futures:
        f.add_done_callback(done)


def _joined(futures: list[Future]) -> Future:
    """One Future of the concatenated outputs of ``futures`` (their order)."""
    out: Future = Future()

    def finish() -> None:
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            out.set_exception(errors[0])
        else:
            out.set_result(concat_outputs([f.result() for f in futures]))

    when_all(futures, finish)
    return out


class AsyncBatcher:
    """Concurrent ``await predict(crops)`` calls on one event loop → executor batches (see module doc)."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        max_batch: int | None = None,
        wait_s: float = 0.002,
        max_in_flight: int = 2,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.runner = runner
        self.max_batch = max_batch or runner.max_batch
        self.wait_s = wait_s
        self.on_batch = on_batch
        self._items: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._queued = 0  # crops waiting
        self._max_in_flight = max_in_flight
        self._slots: asyncio.Semaphore | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0

    async def predict(self, crops: np.ndarray) -> ModelOutput:
        if self._task is None:  # made on the loop that runs it
            self._slots = asyncio.Semaphore(self._max_in_flight)
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        fut = asyncio.get_running_loop().create_future()
        self._items.append((crops, fut))
        self._queued += len(crops)
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = loop.time() + self.wait_s
            while self._queued < self.max_batch and (left := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            await self._slots.acquire()  # more may arrive while the model is busy: they join this batch
            batch, n = [], 0
            while self._items and (not batch or n + len(self._items[0][0]) <= self.max_batch):
                crops, fut = self._items.popleft()
                self._queued -= len(crops)
                if fut.cancelled():
                    continue
                batch.append((crops, fut))
                n += len(crops)
            if not batch:
                self._slots.release()
                continue
            crops = join_crops([c for c, _ in batch])
            t0 = time.perf_counter()
            try:
                cf = self.runner.submit(crops)
            except BaseException as exc:
                self._slots.release()
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            loop.create_task(self._finish(batch, n, cf, t0))

    async def _finish(self, batch, n: int, cf: Future, t0: float) -> None:
        try:
            out = await asyncio.wrap_future(cf)
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, fut), part in zip(batch, split_output(out, [len(c) for c, _ in batch])):
                if not fut.done():
                    fut.set_result(part)
        finally:
            self._slots.release()
        if self.on_batch is not None:
            self.on_batch(len(batch), n, time.perf_counter() - t0)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
