"""onnxruntime backend (CPU execution provider): fp32, or int8 from a Q/DQ ONNX (real INT8 kernels)."""

from __future__ import annotations

import logging
import os

from face3d_live.errors import BackendUnavailable
from face3d_live.inference.base import InferenceBackend, Slot
from face3d_live.models.export import INPUT_NAME
from face3d_live.threads import worker_threads

log = logging.getLogger(__name__)


EXACT_INT8_ENV = "FACE3D_ORT_EXACT_INT8"


def exact_int8() -> bool:
    """Exact INT8 kernels on x86 CPUs without VNNI (the default; FACE3D_ORT_EXACT_INT8=0: the faster U8S8)."""
    return os.environ.get(EXACT_INT8_ENV, "1") != "0"


def session_options(threads: int, spinning: bool = True):
    """The CPU session options every onnxruntime session here uses (backend, ladder bench, tests).
    ``spinning`` False: the session's threads sleep as soon as a run ends instead of spinning for the next
    one (``OnnxRuntimeBackend.share_cpu``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: the Q/DQ fusion logs one "unused initializer" line per layer
    # x86 CPUs without VNNI (AVX2-only: AMD Zen 2/3, Intel before Ice Lake) run INT8 convolutions through
    # VPMADDUBSW, which saturates pairs of u8 x s8 products at 16 bits and moves the landmarks; this option
    # makes onnxruntime rewrite the weights to u8 and use the exact U8U8 kernels there (no change on VNNI
    # or ARM CPUs), so INT8 results do not depend on which CPU runs them.
    opts.add_session_config_entry("session.x64quantprecision", "1" if exact_int8() else "0")
    return opts


def int8_kernels() -> str:
    """Which onnxruntime INT8 kernels this CPU runs (benchmarks record it: INT8 speed and, with
    FACE3D_ORT_EXACT_INT8=0, INT8 results depend on it)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return f"{platform.machine()}: exact"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "x86 VNNI: exact U8S8"
    if not exact_int8():
        return "x86 without VNNI: U8S8 that saturates (FACE3D_ORT_EXACT_INT8=0)"
    return "x86 without VNNI: exact U8U8 (slower)" if flags else "x86: unknown flags"


class OnnxRuntimeBackend(InferenceBackend):
    name = "onnxruntime"

    def __init__(self, spec, *, threads: int | None = None, **kwargs) -> None:
        device = kwargs.pop("device", None) or "cpu"
        super().__init__(spec, device=device, **kwargs)
        self.threads = threads
        self.spinning = True
        self._session = None

    def share_cpu(self) -> None:
        """Let the session's threads sleep between runs (the session is made again if it is open). Why: a
        session's threads spin for a while after each run, waiting for the next; where two sessions take
        turns (a photo's first pass on r50-lite, its second on r50: ``Reconstructor(first_pass=...)``) each
        one's spinning threads take the cores the other runs on. Two cores, one photo (1 + 2 crops): 83 ms
        with both spinning, 43 ms with neither; r50 alone 56 ms. A lone session keeps spinning: 0.5-0.9 ms
        faster a call."""
        if not self.spinning:
            return
        self.spinning = False
        if self.is_active:
            self._deactivate()
            self._activate()

    def _activate(self) -> None:
        if self.device != "cpu":
            raise BackendUnavailable(
                "onnxruntime here runs on the CPU only (the onnxruntime-gpu wheel is not used)"
            )
        if self.precision == "fp16":
            raise BackendUnavailable(
                "onnxruntime on CPU runs fp32 or int8, not fp16 (no fast fp16 CPU kernels)"
            )
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from None
        path = self.spec.onnx(self.precision, self.cache_dir, self.input_format)
        # explicit thread count (OpenSeeFace lesson): the default can oversubscribe small machines
        # ($OMP_NUM_THREADS, e.g. a Ray worker's CPU share, caps it: N workers must not start N × 4 threads)
        opts = session_options(self.threads or worker_threads(min(4, os.cpu_count() or 1)), self.spinning)
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.detail = f"onnx={path} threads={opts.intra_op_num_threads}" + (
            "" if self.spinning else " no spinning"
        )

    def _deactivate(self) -> None:
        self._session = None

    def _create_slot(self, slot: Slot) -> None:
        pass

    def _infer(self, slot: Slot, n: int) -> None:
        (out,) = self._session.run(None, {INPUT_NAME: slot.host_in[:n]})
        slot.host_out[:n] = out
