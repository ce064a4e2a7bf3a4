"""torch backend. CUDA: FP16 (or FP32), channels_last, one CUDA graph per batch bucket per slot,
run on the slot's own (external, cuda-python) stream. CPU: eager FP32.

Why graphs: ResNet50 at batch 1 is launch-bound (~160 kernels); eager FP16 on the H100 is
*slower* than FP32 (4.1 vs 3.8 ms), while a graph replay is one launch (0.9 ms, DESIGN.md).
BatchNorm is folded into the convolutions and each conv→ReLU / conv→add→ReLU chain runs as one cuDNN
fused kernel (fuse_act.py): 0.42 ms at b1 and 28k faces/s at b256 on an H100, against 0.72 ms and 12k
without the fusion. A batch of n runs the graph of the smallest bucket >= n (1, 2, 4, 8, …, max_batch); the padding
rows are computed and ignored.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from face3d_live.errors import BackendUnavailable
from face3d_live.inference.base import InferenceBackend, Slot
from face3d_live.inference.spec import ModelSpec

log = logging.getLogger(__name__)


def buckets(max_batch: int) -> list[int]:
    """Powers of two up to ``max_batch``, and ``max_batch`` itself."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return [*out, max_batch]


def fold_batchnorm(module):
    """Fold every eval-mode BatchNorm into the convolution before it (torch.fx): ~50 fewer kernels
    for ResNet50, same function (1e-7 relative). Modules fx cannot trace are returned unchanged."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(module)
    except Exception as exc:  # fx tracing fails on data-dependent control flow: run unfused
        log.info("BatchNorm folding skipped (%s: %s)", type(exc).__name__, exc)
        return module


@dataclass
class _TorchSlot:
    x: object  # static input (max_batch, C, H, W) float32 tensor; slot.dev_in points at it
    y: object  # static output (max_batch, D) float32 tensor; slot.dev_out points at it
    stream: object = None  # torch.cuda.ExternalStream over the slot's cuda-python stream
    graphs: dict = field(default_factory=dict)  # bucket -> torch.cuda.CUDAGraph


class TorchBackend(InferenceBackend):
    name = "torch"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        precision: str | None = None,
        device: str | None = None,
        max_batch: int = 16,
        cache_dir: str | None = None,
        cuda_graphs: bool = True,
        channels_last: bool = True,
        fuse_bn: bool = True,
        fuse_act: bool = True,
        input_format: str = "float32",
    ) -> None:
        super().__init__(
            spec,
            precision=precision,
            device=device,
            max_batch=max_batch,
            cache_dir=cache_dir,
            input_format=input_format,
        )
        self.default_precision = "fp16" if self.device == "cuda" else "fp32"
        if precision is None:
            self.precision = self.default_precision
        self.cuda_graphs = cuda_graphs and self.device == "cuda"
        self.channels_last = channels_last and self.device == "cuda"
        self.fuse_bn = fuse_bn and self.device == "cuda"
        # cuDNN conv+bias(+add)+ReLU kernels need the BatchNorm folded into a conv bias first
        self.fuse_act = fuse_act and self.fuse_bn
        self._module = None

    def _activate(self) -> None:
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("torch is not installed: pip install torch") from None
        if self.precision == "int8":
            raise BackendUnavailable("torch backend runs fp32/fp16; int8 needs onnxruntime or tensorrt")
        if self.device == "cpu" and self.precision != "fp32":
            raise BackendUnavailable(f"torch on CPU runs fp32 only, not {self.precision}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"this torch build ({torch.__version__}) has no CUDA")
        # a private copy: the spec's module is shared (export, other backends) and must stay FP32 on CPU
        module = copy.deepcopy(self.spec.torch_module).eval().requires_grad_(False)
        if self.fuse_bn:
            module = fold_batchnorm(module)
        if self.fuse_act:
            from face3d_live.inference.fuse_act import fuse_conv_activations

            module, n_fused = fuse_conv_activations(module)
            self.fuse_act = n_fused > 0
        if self.device == "cuda":
            # per-shape cuDNN autotune; runs in the warm-up before each graph capture, never in the hot path
            torch.backends.cudnn.benchmark = True
            module = module.cuda()
            if self.precision == "fp16":
                module = module.half()
            if self.channels_last:
                module = module.to(memory_format=torch.channels_last)
        self._module = module
        self.detail = (
            f"graphs={'buckets ' + ','.join(map(str, buckets(self.max_batch))) if self.cuda_graphs else 'off'} "
            f"channels_last={self.channels_last} fuse_bn={self.fuse_bn} fuse_act={self.fuse_act}"
        )

    def _deactivate(self) -> None:
        self._module = None
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _forward(self, x):
        """float32 NCHW [0, 1] or uint8 NHWC in, float32 (N, D) out; conversions inside (so they are
        captured in the graph and run on the GPU)."""
        import torch

        if self.input_format == "uint8":  # NHWC -> NCHW view: already channels_last in memory
            x = x.permute(0, 3, 1, 2)
            x = (x.half() if self.precision == "fp16" else x.float()) * (1.0 / 255.0)
        if self.device == "cuda":
            if self.precision == "fp16":
                x = x.half()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return self._module(x).float()

    def _create_slot(self, slot: Slot) -> None:
        import torch

        if self.device == "cpu":
            return
        dtype = torch.uint8 if self.input_format == "uint8" else torch.float32
        x = torch.empty((slot.max_batch, *self.sample_shape), device="cuda", dtype=dtype)
        y = torch.empty((slot.max_batch, self.output_dim), device="cuda")
        slot.dev_in, slot.dev_out = x.data_ptr(), y.data_ptr()
        state = _TorchSlot(x, y, torch.cuda.ExternalStream(slot.stream.ptr))
        slot.state = state
        if not self.cuda_graphs:
            return
        x.random_(
            0, 256
        ) if dtype == torch.uint8 else x.uniform_()  # warm up on data, not uninitialised memory
        pool = torch.cuda.graph_pool_handle()  # one pool per slot: its graphs never run concurrently
        # Warm up and capture on the slot's own stream, never torch's shared default capture stream: cuBLAS
        # workspaces are keyed by stream, so graphs captured on one stream embed one workspace address
        # (pytorch#193402), and two slots replaying at once would write the head's GEMM scratch over each
        # other (non-finite outputs under load, seen with `process --ray --batch-wait-ms 0` on the H200).
        own = state.stream
        with torch.no_grad():
            for b in buckets(slot.max_batch):
                own.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(own):
                    for _ in range(2):  # warm-up: cuDNN autotune and lazy init outside the capture
                        y[:b].copy_(self._forward(x[:b]))
                torch.cuda.current_stream().wait_stream(own)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=own):
                    y[:b].copy_(self._forward(x[:b]))
                state.graphs[b] = graph
        torch.cuda.synchronize()
        slot.resources.callback(state.graphs.clear)

    def _infer(self, slot: Slot, n: int) -> None:
        import torch

        if self.device == "cpu":
            with torch.inference_mode():
                out = self._forward(torch.from_numpy(slot.host_in[:n]))
            slot.host_out[:n] = out.numpy()
            return
        state: _TorchSlot = slot.state
        with torch.cuda.stream(state.stream), torch.no_grad():
            if state.graphs:
                b = next(b for b in state.graphs if b >= n)
                state.graphs[b].replay()
            else:
                state.y[:n].copy_(self._forward(state.x[:n]))
