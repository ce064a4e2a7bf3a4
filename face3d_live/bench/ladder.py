"""`face3d-live bench ladder`: the lightweighting ladder's table (placeholder; filled below)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

GPU_VARIANTS = {  # name: (precision, torch backend options)
    "fp32-eager": ("fp32", {"cuda_graphs": False, "channels_last": False, "fuse_bn": False}),
    "fp16-eager": ("fp16", {"cuda_graphs": False, "channels_last": True, "fuse_bn": True}),
    "fp16-graphs": ("fp16", {"cuda_graphs": True, "channels_last": True, "fuse_bn": True}),
}


def torch_gpu_latency(models: dict, batches: tuple[int, ...] = (1, 8), seconds: float = 1.0) -> dict:
    """{model: {variant: {batch: row}}} with the torch backend on the GPU (CUDA-event latency, compute only),
    plus peak device memory of each variant."""
    import torch

    from face3d_live.bench.backends import _gpu_batch
    from face3d_live.inference import create_backend
    from face3d_live.inference.spec import ModelSpec

    out: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name, module in models.items():
        spec = ModelSpec.from_module(module.float().cpu().eval(), name=name)
        rows: dict = {}
        for variant, (precision, options) in GPU_VARIANTS.items():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            with create_backend(
                "torch", model=spec, precision=precision, device="cuda", max_batch=max(batches), **options
            ) as be:
                rows[variant] = {str(b): _gpu_batch(be, b, seconds, None) for b in batches}
                rows[variant]["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            log.info(
                "%s %s: %s",
                name,
                variant,
                {b: round(r["latency_ms"], 3) for b, r in rows[variant].items() if b != "peak_mem_mb"},
            )
        out[name] = rows
    return out
