"""Inference on a CUDA GPU (run on the accelerator machine: pytest -m gpu). Skips without CUDA."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from face3d_live.inference.cuda import cuda_status

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(bool(cuda_status()), reason=cuda_status() or "CUDA present"),
]

torch = pytest.importorskip("torch")

from face3d_live.inference import InferenceExecutor, ModelSpec, create_backend  # noqa: E402
from face3d_live.models.r50 import FaceR50  # noqa: E402


@pytest.fixture(scope="module")
def spec():
    torch.manual_seed(0)
    return ModelSpec(name="r50-random", module=FaceR50().eval())


@pytest.fixture(scope="module")
def reference(spec):
    """FP32 CPU outputs for a fixed batch: the ground truth the GPU paths are held to."""
    x = np.random.default_rng(7).random((8, 3, 224, 224), dtype=np.float32)
    with torch.no_grad():
        return x, spec.torch_module(torch.from_numpy(x)).numpy()


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def fp16(spec):
    with create_backend("torch", model=spec, precision="fp16", device="cuda", max_batch=8) as b:
        yield b


def test_torch_cuda_fp16_graphs_match_cpu(fp16, reference):
    x, ref = reference
    out = fp16.infer_sync(x)
    assert _rel(out, ref) <= 1e-2
    for n in (1, 3, 5):  # padded buckets (4, 8) give the same rows
        assert _rel(fp16.infer_sync(x[:n]), ref[:n]) <= 1e-2


def test_uint8_input_converted_on_gpu(spec, reference):
    x, ref = reference
    crops = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    with torch.no_grad():
        ref8 = spec.torch_module(
            torch.from_numpy(crops.transpose(0, 3, 1, 2).astype(np.float32) / 255)
        ).numpy()
    with create_backend("torch", model=spec, device="cuda", max_batch=8, input_format="uint8") as b:
        assert _rel(b.infer_sync(crops), ref8) <= 1e-2
        with InferenceExecutor(b, streams=2, max_batch=4) as ex:
            outs = list(ex.map([crops[:4], crops[4:5], crops[5:]]))
        assert _rel(np.concatenate(outs), ref8) <= 1e-2


def test_torch_cuda_fp32_eager_matches_cpu(spec, reference):
    x, ref = reference
    opts = dict(cuda_graphs=False, channels_last=False)
    with create_backend("torch", model=spec, precision="fp32", device="cuda", **opts) as b:
        assert _rel(b.infer_sync(x), ref) <= 5e-3  # cuDNN may use TF32 for convolutions


@pytest.mark.parametrize("streams", [2, 4])
def test_executor_streams_in_order(fp16, reference, streams):
    x, ref = reference
    sizes = [8, 1, 4, 2, 8, 3, 1, 5, 8, 2]
    starts = np.cumsum([0, *sizes])[:-1] % 8
    with InferenceExecutor(fp16, streams=streams, max_batch=8) as ex:
        results = []
        for s, n in zip(starts, sizes):
            n = min(n, 8 - s)
            if ex.full:
                results.append(ex.collect())
            ex.submit(x[s : s + n], tag=(s, n))
            assert ex.in_flight <= streams
        results += ex.drain()
    assert [r.ticket for r in results] == list(range(len(sizes)))
    for r in results:
        s, n = r.tag
        assert r.output.shape == (n, ref.shape[1])
        assert _rel(r.output, ref[s : s + n]) <= 1e-2


def test_slots_replaying_at_once_give_sequential_results(spec):
    """Full batches on 4 slots at once (their graphs replay concurrently on 4 streams) give what one batch
    at a time gives: no scratch memory (cuBLAS workspace, graph pool) is shared between slots. Before the
    slots captured on their own streams, the head's GEMM workspace was shared and outputs went non-finite
    under load (`process --ray --batch-wait-ms 0`)."""
    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 256, (64, 224, 224, 3), dtype=np.uint8) for _ in range(6)]
    with create_backend("torch", model=spec, device="cuda", max_batch=64, input_format="uint8") as b:
        alone = [b.infer_sync(x) for x in batches]
        with InferenceExecutor(b, streams=4, max_batch=64) as ex:
            for _ in range(5):  # several rounds: a race shows up as a mismatch in some of them
                got = list(ex.map(batches))
                for out, ref in zip(got, alone):
                    assert np.isfinite(out).all()
                    assert _rel(out, ref) <= 1e-3


def test_tensorrt_falls_back_to_torch_with_one_warning(spec, caplog):
    caplog.set_level(logging.WARNING)
    with create_backend("tensorrt", model=spec, max_batch=2) as b:
        # no TensorRT here, or TensorRT-RTX on compute capability 9.0: the torch backend serves
        assert b.name in ("torch", "tensorrt")
        if b.name == "torch":
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1 and "falling back to torch" in warnings[0].getMessage()


def test_auto_on_gpu_uses_the_gpu(spec):
    with create_backend("auto", model=spec, max_batch=2) as b:
        assert b.device == "cuda" and b.name in ("torch", "tensorrt")


def test_fused_activations_match_unfused_on_gpu(spec, reference):
    """cuDNN conv+bias(+add)+ReLU kernels (the default) give the unfused network's outputs."""
    x, ref = reference
    outs = {}
    for fused in (True, False):
        with create_backend(
            "torch", model=spec, precision="fp16", device="cuda", max_batch=8, fuse_act=fused
        ) as b:
            assert b.fuse_act is fused
            outs[fused] = b.infer_sync(x)
    assert _rel(outs[True], ref) <= 1e-2
    assert _rel(outs[True], outs[False]) <= 1e-2
    opts = dict(cuda_graphs=False, channels_last=False, fuse_act=True)
    with create_backend("torch", model=spec, precision="fp32", device="cuda", **opts) as b:
        assert b.fuse_act and _rel(b.infer_sync(x), ref) <= 5e-3


def test_blocking_sync_events_wait_without_spinning_a_core():
    """After set_blocking_sync() (Ray workers, Serve replicas) a thread waiting on a slot's event sleeps: its
    CPU time stays far below the wait (CUDA's default spins it for the whole wait)."""
    import time

    from face3d_live.inference import cuda

    def wait_on_long_work(blocking: bool) -> tuple[float, float]:
        cuda.set_blocking_sync(blocking)
        try:
            event, stream = cuda.Event(), cuda.Stream()
        finally:
            cuda.set_blocking_sync(False)
        try:
            a = torch.randn(4096, 4096, device="cuda")
            torch.cuda.synchronize()
            with torch.cuda.stream(torch.cuda.ExternalStream(stream.ptr)):
                for _ in range(60):  # ~0.1-0.3 s of GEMMs queued on the stream
                    a = torch.nn.functional.normalize(a @ a, dim=1)
            event.record(stream)
            t0, c0 = time.perf_counter(), time.thread_time()
            event.synchronize()
            return time.perf_counter() - t0, time.thread_time() - c0
        finally:
            event.close()
            stream.close()

    wall, cpu = wait_on_long_work(blocking=True)
    spin_wall, spin_cpu = wait_on_long_work(blocking=False)
    logging.getLogger(__name__).warning(
        "blocking wait %.1f ms, %.1f ms CPU; default wait %.1f ms, %.1f ms CPU",
        wall * 1e3,
        cpu * 1e3,
        spin_wall * 1e3,
        spin_cpu * 1e3,
    )
    assert wall > 0.02  # the GPU work outlasted the launch, so the wait was real
    assert cpu < 0.25 * wall
