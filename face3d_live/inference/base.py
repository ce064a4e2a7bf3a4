"""The backend interface: public ``activate / infer / deactivate`` check state, subclasses write ``_*``.

A backend runs one model on batches of (N, C, H, W) float32 to (N, D) float32. Work goes through
*slots*: a slot owns its input and output buffers (page-locked host + device on CUDA), its stream
and the backend's per-slot objects (a TensorRT execution context, a set of CUDA graphs). One slot
is one batch in flight; the executor keeps N of them busy. ``infer(slot, n)`` enqueues on the slot's
stream and returns at once; ``wait(slot)`` blocks until the slot's output is on the host.

On CPU backends a slot is plain numpy buffers and ``infer`` computes synchronously (the executor
runs each slot on its own worker thread instead of a stream).
"""

from __future__ import annotations

import logging
import threading
import warnings
from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from face3d_live.errors import BackendUnavailable, ConfigError
from face3d_live.inference import cuda
from face3d_live.inference.spec import ModelSpec, check_input_format, check_precision, default_cache_dir

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One batch in flight.

    host_in:  (max_batch, C, H, W) float32 [0, 1] or (max_batch, H, W, C) uint8 (the backend's
              ``input_format``), page-locked on CUDA: fill ``host_in[:n]`` before ``infer``.
    host_out: (max_batch, D) float32, page-locked on CUDA: valid in ``host_out[:n]`` after ``wait``;
              reused by the next batch, so copy what you keep.
    """

    index: int
    max_batch: int
    host_in: np.ndarray
    host_out: np.ndarray
    stream: cuda.Stream | None = None
    dev_in: int = 0  # device pointers (0 on CPU)
    dev_out: int = 0
    done: cuda.Event | None = None
    state: Any = None  # the backend's own per-slot objects
    n: int = 0  # batch size of the work in flight
    resources: ExitStack = field(default_factory=ExitStack)


class InferenceBackend(ABC):
    """Base class. Use as a context manager or call ``activate()`` / ``deactivate()``."""

    name: ClassVar[str]
    default_precision: ClassVar[str] = "fp32"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        precision: str | None = None,
        device: str | None = None,
        max_batch: int = 16,
        cache_dir: str | Path | None = None,
        input_format: str = "float32",
    ) -> None:
        self.spec = spec
        self.input_format = check_input_format(input_format)
        self.precision = check_precision(precision or self.default_precision)
        if device not in (None, "cuda", "cpu"):
            raise ConfigError(f"unknown device {device!r}; choose 'cuda' or 'cpu'")
        self.device = device or ("cuda" if not cuda.cuda_status() else "cpu")
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = int(max_batch)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.is_active = False
        self._sync_slot: Slot | None = None
        self._sync_lock = threading.Lock()  # infer_sync shares one slot: one caller at a time
        self.detail = ""  # what was loaded (engine file, graphs…), for the one start-up log line

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model's (C, H, W)."""
        return self.spec.input_shape

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """One input sample as the backend takes it: (C, H, W) float32 or (H, W, C) uint8."""
        return self.spec.sample_shape(self.input_format)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.input_format == "uint8" else np.float32)

    @property
    def output_dim(self) -> int:
        return self.spec.output_dim

    @property
    def label(self) -> str:
        return f"{self.name} ({self.device}, {self.precision})"

    # ---- lifecycle -------------------------------------------------------------------------------
    def activate(self) -> InferenceBackend:
        """Load the model / engine. Raises BackendUnavailable (with the reason) if it cannot run here."""
        if self.is_active:
            return self
        if self.device == "cuda" and (reason := cuda.cuda_status()):
            raise BackendUnavailable(f"{self.name}: {reason}")
        self._activate()
        self.is_active = True
        log.info("backend %s active: model=%s %s", self.label, self.spec.name, self.detail)
        return self

    def deactivate(self) -> None:
        """Free everything; idempotent."""
        if not self.is_active:
            return
        if self._sync_slot is not None:
            self.release_slot(self._sync_slot)
            self._sync_slot = None
        self._deactivate()
        self.is_active = False

    close = deactivate

    def __enter__(self) -> InferenceBackend:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def __del__(self) -> None:
        if getattr(self, "is_active", False):
            warnings.warn(f"{type(self).__name__} was never deactivated", ResourceWarning, stacklevel=1)

    # ---- slots --------------------------------------------------------------------------------------
    def create_slot(self, index: int = 0, max_batch: int | None = None) -> Slot:
        """Buffers, stream and per-slot backend state for one batch in flight."""
        self._check_active()
        mb = int(max_batch or self.max_batch)
        if mb > self.max_batch:
            raise ConfigError(f"slot max_batch {mb} exceeds the backend's max_batch {self.max_batch}")
        in_shape, out_shape = (mb, *self.sample_shape), (mb, self.output_dim)
        if self.device == "cuda":
            stack = ExitStack()
            pin_in = cuda.PinnedArray(in_shape, self.input_dtype)
            stack.callback(pin_in.close)
            pin_out = cuda.PinnedArray(out_shape)
            stack.callback(pin_out.close)
            stream = cuda.Stream()
            stack.callback(stream.close)
            done = cuda.Event()
            stack.callback(done.close)
            slot = Slot(index, mb, pin_in.array, pin_out.array, stream, done=done, resources=stack)
        else:
            slot = Slot(index, mb, np.empty(in_shape, self.input_dtype), np.empty(out_shape, np.float32))
        try:
            self._create_slot(slot)  # device buffers, execution context, graphs
        except BaseException:
            slot.resources.close()
            raise
        return slot

    def release_slot(self, slot: Slot) -> None:
        """Free a slot's resources (reverse order of creation); waits for its work first."""
        if slot.stream is not None and slot.stream.handle is not None:
            slot.stream.synchronize()
        slot.resources.close()

    # ---- inference ----------------------------------------------------------------------------------
    def infer(
        self, slot: Slot, n: int, *, check_inputs: bool = True, copies: bool = True
    ) -> cuda.Event | None:
        """Enqueue copy-in, compute and copy-out of ``slot.host_in[:n]`` on the slot's stream.

        Returns the slot's ``done`` event (CUDA) or None (CPU: already computed). No sync here.
        ``copies=False`` (CUDA): compute only, ``dev_in[:n] -> dev_out[:n]`` (input already on the
        device, e.g. cropped there; benchmarks of the model alone).
        """
        if check_inputs:
            self._check_active()
            if not 1 <= n <= slot.max_batch:
                raise ConfigError(f"batch of {n} does not fit a slot of max_batch {slot.max_batch}")
        slot.n = n
        if slot.stream is None:
            self._infer(slot, n)
            return None
        if copies:
            cuda.copy_htod_async(
                slot.dev_in, slot.host_in.ctypes.data, n * slot.host_in[0].nbytes, slot.stream
            )
        self._infer(slot, n)
        if copies:
            cuda.copy_dtoh_async(
                slot.host_out.ctypes.data, slot.dev_out, n * slot.host_out[0].nbytes, slot.stream
            )
        return slot.done.record(slot.stream)

    def wait(self, slot: Slot) -> np.ndarray:
        """Block until the slot's batch is done; returns a view ``host_out[:n]`` (copy to keep)."""
        if slot.done is not None:
            slot.done.synchronize()
        return slot.host_out[: slot.n]

    def infer_sync(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 (or (N, H, W, C) uint8) -> (N, D) float32 (a new array), in chunks of
        ``max_batch``."""
        self._check_active()
        batch = check_batch(batch, self.sample_shape, self.input_dtype)
        out = np.empty((len(batch), self.output_dim), np.float32)
        with self._sync_lock:
            if self._sync_slot is None:
                self._sync_slot = self.create_slot(index=-1)
            slot = self._sync_slot
            for i in range(0, len(batch), slot.max_batch):
                chunk = batch[i : i + slot.max_batch]
                slot.host_in[: len(chunk)] = chunk
                self.infer(slot, len(chunk), check_inputs=False)
                out[i : i + len(chunk)] = self.wait(slot)
        return out

    def _check_active(self) -> None:
        if not self.is_active:
            raise BackendUnavailable(f"backend {self.name} is not active: call activate() first")

    # ---- subclasses -------------------------------------------------------------------------------------
    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _create_slot(self, slot: Slot) -> None:
        """Set ``slot.dev_in/dev_out`` (CUDA) and ``slot.state``; register cleanups on ``slot.resources``."""

    @abstractmethod
    def _infer(self, slot: Slot, n: int) -> None:
        """CUDA: enqueue compute ``dev_in[:n] -> dev_out[:n]`` on ``slot.stream``. CPU: compute
        ``host_in[:n] -> host_out[:n]``."""


def check_batch(batch: np.ndarray, sample_shape: tuple[int, ...], dtype: np.dtype = np.float32) -> np.ndarray:
    """A (N, *sample_shape) batch of ``dtype``, or a one-line ValueError saying what is wrong.

    uint8 input must be uint8 (scaling another type silently would be wrong); float input is cast.
    """
    dtype = np.dtype(dtype)
    ok = isinstance(batch, np.ndarray) and batch.ndim == 4 and tuple(batch.shape[1:]) == tuple(sample_shape)
    if not ok or (dtype == np.uint8 and batch.dtype != np.uint8):
        raise ValueError(
            f"expected a (N, {', '.join(map(str, sample_shape))}) {dtype} batch, "
            f"got shape {getattr(batch, 'shape', None)} dtype {getattr(batch, 'dtype', None)}"
        )
    if len(batch) == 0:
        raise ValueError("empty batch")
    return np.ascontiguousarray(batch, dtype=dtype)
