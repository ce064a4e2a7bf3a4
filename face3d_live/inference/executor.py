"""Multi-stream executor: N slots (stream + execution context + pinned buffers each) kept busy.

    with InferenceExecutor(backend, streams=2) as ex:      # 2 = double buffering
        ex.submit(batch_k, tag=frame_k)                      # copy-in, compute, copy-out enqueued; returns
        ex.submit(batch_k1, tag=frame_k1)                    # overlaps k's compute on the other stream
        result = ex.collect()                                # k's output (submission order), slot freed

- Results come back in submission order, whatever order the streams finish in.
- At most ``streams`` batches are in flight: ``submit`` blocks (backpressure) until ``collect`` frees a
  slot, or raises TimeoutError after ``timeout`` seconds. Nothing queues without bound.
- On CUDA a slot is a stream: submit only enqueues. On CPU backends a slot is a worker thread (the
  CPU's "stream"), so ordering and backpressure behave the same and are testable without a GPU.
- ``submit_fill(n, fill)`` lets the caller write the batch straight into the slot's page-locked input
  (crop into it) instead of building a batch and copying it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from face3d_live.errors import ConfigError
from face3d_live.inference.base import InferenceBackend, Slot, check_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One finished batch. output: (n, D) float32 (a copy, yours to keep)."""

    ticket: int  # 0, 1, 2, … in submission order
    output: np.ndarray
    tag: Any  # what the caller passed to submit (a frame, crop transforms…)
    latency_ns: int  # submit -> collected


@dataclass
class _InFlight:
    ticket: int
    slot: Slot
    future: Future | None
    tag: Any
    t_submit_ns: int


class InferenceExecutor:
    """Runs an *active* backend over ``streams`` slots; the creator owns it (``close()`` / ``with``)."""

    def __init__(self, backend: InferenceBackend, *, streams: int = 2, max_batch: int | None = None) -> None:
        if streams < 1:
            raise ConfigError(f"streams must be >= 1, got {streams}")
        self.backend = backend
        self.streams = streams
        self._slots: list[Slot] = []
        try:
            for i in range(streams):
                self._slots.append(backend.create_slot(i, max_batch))
        except BaseException:
            self._release_slots()
            raise
        self.max_batch = self._slots[0].max_batch
        self._workers = None
        if self._slots[0].stream is None:  # CPU backend: one worker thread per slot plays the stream
            self._workers = [
                ThreadPoolExecutor(1, thread_name_prefix=f"infer-slot{i}") for i in range(streams)
            ]
        self._free: deque[Slot] = deque(self._slots)
        self._in_flight: deque[_InFlight] = deque()
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._closed = False
        log.info("executor: %s, %d slot(s) of batch <= %d", backend.label, streams, self.max_batch)

    # ---- submit -----------------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def full(self) -> bool:
        """True when ``submit`` would block: collect first."""
        return not self._free

    def submit(self, batch: np.ndarray, *, tag: Any = None, timeout: float | None = None) -> int:
        """Enqueue a batch in the backend's input format, n <= max_batch; returns its ticket."""
        batch = check_batch(batch, self.backend.sample_shape, self.backend.input_dtype)
        return self.submit_fill(len(batch), lambda view: np.copyto(view, batch), tag=tag, timeout=timeout)

    def submit_fill(
        self, n: int, fill: Callable[[np.ndarray], object], *, tag: Any = None, timeout: float | None = None
    ) -> int:
        """Like ``submit`` but ``fill(view)`` writes the batch into the slot's input ``view`` (n, *sample_shape)."""
        if not 1 <= n <= self.max_batch:
            raise ConfigError(f"batch of {n} does not fit the executor's max_batch {self.max_batch}")
        slot = self._acquire(timeout)
        t0 = time.perf_counter_ns()
        try:
            fill(slot.host_in[:n])
            if self._workers is None:
                self.backend.infer(slot, n, check_inputs=False)
                future = None
            else:
                future = self._workers[slot.index].submit(self.backend.infer, slot, n, check_inputs=False)
        except BaseException:
            with self._cond:
                self._free.appendleft(slot)
                self._cond.notify()
            raise
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._in_flight.append(_InFlight(ticket, slot, future, tag, t0))
            self._cond.notify_all()
        return ticket

    def _acquire(self, timeout: float | None) -> Slot:
        with self._cond:
            if self._closed:
                raise ConfigError("executor is closed")
            if not self._cond.wait_for(lambda: self._free or self._closed, timeout):
                raise TimeoutError(f"all {self.streams} slots busy for {timeout}s: collect() results first")
            if self._closed:
                raise ConfigError("executor is closed")
            return self._free.popleft()

    # ---- collect ----------------------------------------------------------------------------------------
    def collect(self, timeout: float | None = None) -> Result:
        """The oldest submitted batch's result (blocks until it is done). One collecting thread at a time.

        ``timeout`` bounds the wait for something to be submitted and, on CPU backends, for it to finish.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._in_flight or self._closed, timeout):
                raise TimeoutError(f"nothing submitted within {timeout}s")
            if not self._in_flight:
                raise ConfigError("executor is closed")
            item = self._in_flight[0]
        if item.future is not None:
            item.future.result(timeout)  # re-raises the worker's exception here
        out = self.backend.wait(item.slot).copy()
        with self._cond:
            self._in_flight.popleft()
            self._free.append(item.slot)
            self._cond.notify_all()
        return Result(item.ticket, out, item.tag, time.perf_counter_ns() - item.t_submit_ns)

    def map(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs of ``batches`` in order, keeping every slot busy (single-threaded use)."""
        for batch in batches:
            if self.full:
                yield self.collect().output
            self.submit(batch)
        while self._in_flight:
            yield self.collect().output

    def drain(self) -> list[Result]:
        """Collect everything in flight."""
        return [self.collect() for _ in range(len(self._in_flight))]

    # ---- lifetime ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Finish in-flight work (results dropped), free the slots; idempotent."""
        if self._closed:
            return
        try:
            while self._in_flight:
                item = self._in_flight.popleft()
                if item.future is not None:
                    item.future.exception()  # wait; its error no longer has a reader
                self.backend.wait(item.slot)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._workers is not None:
                for w in self._workers:
                    w.shutdown(wait=True)
            self._release_slots()

    def _release_slots(self) -> None:
        for slot in reversed(self._slots):
            self.backend.release_slot(slot)
        self._slots.clear()

    def __enter__(self) -> InferenceExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
