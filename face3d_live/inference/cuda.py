"""Thin cuda-python (runtime API) wrappers: device query, streams, events, pinned and device memory.

Every call's error code is checked. The runtime API shares the primary context with torch and
TensorRT, so pointers and stream handles pass freely between them. No GPU / no driver is reported
by :func:`cuda_status` as a reason string, never raised at import.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from typing import Any

import numpy as np

from face3d_live.errors import BackendUnavailable


class CudaError(BackendUnavailable):
    """A CUDA runtime call failed."""


@functools.lru_cache(maxsize=1)
def runtime() -> Any:
    """The cuda-python runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` on cuda-python 11/12.0-12.5)."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt
        except ImportError:
            raise BackendUnavailable("cuda-python is not installed: pip install cuda-python") from None
    return rt


def check(result: Any) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple; raise :class:`CudaError` on failure."""
    rt = runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        raise CudaError(
            f"CUDA error {name.decode() if isinstance(name, bytes) else name}: "
            f"{text.decode() if isinstance(text, bytes) else text}"
        )
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@functools.lru_cache(maxsize=1)
def cuda_status() -> str:
    """'' when a CUDA GPU is usable, else why not (one line). Cached: the answer does not change."""
    try:
        rt = runtime()
    except BackendUnavailable as exc:
        return str(exc)
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        return f"no CUDA GPU ({name.decode() if isinstance(name, bytes) else name})"
    return "" if count > 0 else "no CUDA GPU (0 devices)"


def compute_capability(device: int = 0) -> tuple[int, int]:
    rt = runtime()
    attr = rt.cudaDeviceAttr
    major = check(rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device))
    minor = check(rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device))
    return int(major), int(minor)


def device_name(device: int = 0) -> str:
    props = check(runtime().cudaGetDeviceProperties(device))
    name = props.name
    return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")


class Stream:
    """A non-blocking CUDA stream (does not serialise with the legacy default stream)."""

    def __init__(self) -> None:
        rt = runtime()
        self._rt = rt
        self.handle = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(self._rt.cudaStreamSynchronize(self.handle))

    def close(self) -> None:
        if self.handle is not None:
            check(self._rt.cudaStreamDestroy(self.handle))
            self.handle = None


_blocking_sync = False
DEFAULT_MPS_PIPE = "/tmp/nvidia-mps"  # the driver's default CUDA_MPS_PIPE_DIRECTORY


def mps_client(environ: os._Environ | dict | None = None) -> bool:
    """Whether CUDA in a process with ``environ`` (default: this one's) connects to an MPS server: a control
    daemon listens on the control socket of ``CUDA_MPS_PIPE_DIRECTORY`` (or the default directory). The socket
    file stays after its daemon quits, and CUDA then runs without MPS: a service started beside such a
    leftover trusted it, started no daemon of its own and ran its replicas time-slicing the GPU (H200,
    2026-12-04: 503 against 1,381 requests/s at c=32). So a socket counts only when it takes a connection.
    The daemon listens with SOCK_SEQPACKET (driver 580, H200)."""
    import socket
    import stat

    env = os.environ if environ is None else environ
    path = os.path.join(env.get("CUDA_MPS_PIPE_DIRECTORY") or DEFAULT_MPS_PIPE, "control")
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return True  # not a socket (an older daemon's pipe?): that it exists is all there is to check
    except OSError:
        return False
    return unix_socket_listening(path, socket.SOCK_SEQPACKET)


def unix_socket_listening(path: str, kind: int) -> bool:
    """Whether a process accepts connections on the Unix socket ``path`` (its file outlives it), probed with a
    socket of type ``kind``. A listener of another type answers EPROTOTYPE, which counts too: only a refused
    (or impossible) connection means nobody is there."""
    import errno
    import socket

    with socket.socket(socket.AF_UNIX, kind) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except OSError as exc:
            return exc.errno == errno.EPROTOTYPE
    return True


def set_blocking_sync(on: bool = True) -> None:
    """Events made from now on put a thread that waits on them to sleep until the GPU signals, instead of
    letting it spin a core (CUDA's default, ``cudaDeviceScheduleAuto``, spins whenever a process has fewer
    contexts than the machine has cores). See blocking_sync_requested for where it is used. torch's own waits
    (``.cpu()``, stream syncs) keep CUDA's default: making the primary context's waits sleep too
    (``cuDevicePrimaryCtxSetFlags``) cost the H200 service 13 % (1,203 → 1,044 requests/s at c=64, 2026-12-04):
    on cores that 16 replicas keep busy, a sleeping wait wakes late."""
    global _blocking_sync
    _blocking_sync = on


def blocking_sync_requested() -> bool:
    """Whether this worker's CUDA waits should sleep: ``FACE3D_CUDA_WAIT=block`` or ``spin`` says; unset, they
    sleep in an MPS client (the service's replicas, one per CPU: a spinning wait takes the core another
    replica needs; how the H200 service figures were measured, 2026-12-04) and spin elsewhere
    (library-job workers and 10 replicas without MPS measured 3-7 % slower with sleeping waits, stop 24)."""
    wait = os.environ.get("FACE3D_CUDA_WAIT", "").strip().lower()
    if wait in ("block", "spin"):
        return wait == "block"
    return mps_client()


class Event:
    """A CUDA event; ``timing=False`` (default) makes record/wait cheapest; waits sleep instead of spinning
    after ``set_blocking_sync()``."""

    def __init__(self, timing: bool = False) -> None:
        rt = runtime()
        self._rt = rt
        flags = int(rt.cudaEventDefault if timing else rt.cudaEventDisableTiming)
        if _blocking_sync:
            flags |= int(rt.cudaEventBlockingSync)
        self.handle = check(rt.cudaEventCreateWithFlags(flags))

    def record(self, stream: Stream) -> Event:
        check(self._rt.cudaEventRecord(self.handle, stream.handle))
        return self

    def synchronize(self) -> None:
        check(self._rt.cudaEventSynchronize(self.handle))

    def query(self) -> bool:
        """True when the work before the event has finished."""
        (err,) = self._rt.cudaEventQuery(self.handle)
        if err == self._rt.cudaError_t.cudaErrorNotReady:
            return False
        check((err,))
        return True

    def elapsed_ms(self, start: Event) -> float:
        return float(check(self._rt.cudaEventElapsedTime(start.handle, self.handle)))

    def close(self) -> None:
        if self.handle is not None:
            check(self._rt.cudaEventDestroy(self.handle))
            self.handle = None


class PinnedArray:
    """Page-locked host memory seen as a numpy array (``.array``): the only host memory that
    copies asynchronously (a pageable source makes ``cudaMemcpyAsync`` synchronous)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> None:
        self._rt = runtime()
        dtype = np.dtype(dtype)
        self.nbytes = int(math.prod(shape)) * dtype.itemsize
        self.ptr = int(check(self._rt.cudaMallocHost(self.nbytes)))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self.array = None
            check(self._rt.cudaFreeHost(self.ptr))
            self.ptr = 0


class DeviceBuffer:
    """Device memory of ``nbytes`` (cudaMalloc)."""

    def __init__(self, nbytes: int) -> None:
        self._rt = runtime()
        self.nbytes = int(nbytes)
        self.ptr = int(check(self._rt.cudaMalloc(self.nbytes)))

    def close(self) -> None:
        if self.ptr:
            check(self._rt.cudaFree(self.ptr))
            self.ptr = 0


def copy_htod_async(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    rt = runtime()
    check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle))


def copy_dtoh_async(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    rt = runtime()
    check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle))


def synchronize_device() -> None:
    check(runtime().cudaDeviceSynchronize())
