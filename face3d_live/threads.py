"""Thread budget of a face3d-live process.

The per-frame numpy work is tiny (3x3 SVDs, One Euro filters, the blendshape MLP on one face), but OpenBLAS
runs it on one thread per core and then lets those threads spin, on the very cores onnxruntime and the video
decoder need. One BLAS thread is faster at these sizes and frees the cores: `process` on obama.mp4 with the
INT8 model on 2 cores went from 72.9 to 107.1 frames/s (infer 5.8 -> 3.9 ms).
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# How long a thread that wants the GIL waits before the holder is asked to drop it (CPython: 5 ms). A request
# in a Ray actor hops 3-4 threads (Ray's, the event loop, submit, the CUDA slot, the collector); at 5 ms per
# hop a 0.5 ms GPU batch took 9-19 ms from submit to result on the H200 machine while every process idled.
GIL_SWITCH_S = 0.0005


def limit_blas_threads(threads: int = 1) -> bool:
    """Cap the BLAS thread pools of this process at ``threads`` (unless the user set a BLAS thread variable).

    Returns whether a limit was applied. Commands call it once at start; it is global to the process.
    """
    if any(name in os.environ for name in BLAS_ENV):
        return False  # the user chose: leave it
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a runtime dependency; without it only speed suffers
        log.debug("threadpoolctl not installed: BLAS thread pools left as they are")
        return False
    threadpool_limits(limits=threads, user_api="blas")
    return True


def worker_threads(default: int) -> int:
    """Threads one compute pool of this process may use: $OMP_NUM_THREADS where set (Ray sets it to a worker's
    CPU share), else ``default``. Many workers on one machine then do not each start a pool per core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return default


def limit_worker_threads() -> int:
    """A worker among many (Ray): OpenCV's pool and each video decoder sized to the worker's CPU share
    (both otherwise start one thread per core in every worker: 30 workers on 16 cores ran 480 warp threads
    and as many decoder threads per open video), and a short GIL switch interval (GIL_SWITCH_S); CUDA waits
    sleep rather than spin in MPS clients or with ``FACE3D_CUDA_WAIT=block`` (``inference.cuda``:
    blocking_sync_requested says why). Returns that size."""
    import cv2

    from face3d_live.capture.video import set_decode_threads
    from face3d_live.inference.cuda import blocking_sync_requested, set_blocking_sync

    n = worker_threads(default=os.cpu_count() or 1)
    cv2.setNumThreads(n)
    set_decode_threads(n)
    sys.setswitchinterval(GIL_SWITCH_S)  # threads hand work to each other: short GIL waits
    set_blocking_sync(blocking_sync_requested())  # before the model's slots make their events
    return n
