"""Inference layer on CPU: weights files, ONNX export, onnxruntime vs torch, executor ordering and
backpressure, the r50 face model through Reconstructor. (Engines: test_inference_engines.py.)

The r50 weights here are randomly initialised (the trained file may not exist yet): these tests check
numerics between backends and the plumbing, not face quality.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from face3d_live.errors import BackendUnavailable, ConfigError, ModelError  # noqa: E402
from face3d_live.inference import InferenceExecutor, create_backend  # noqa: E402
from face3d_live.models.r50 import OUTPUT_DIM, FaceR50  # noqa: E402
from face3d_live.models.r50_face import r50_spec, save_r50  # noqa: E402
from face3d_live.models.weights import load_weights  # noqa: E402


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="session")
def r50_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "r50-random.safetensors"
    save_r50(FaceR50().eval(), path)
    return path


@pytest.fixture(scope="session")
def ort(r50_weights, engines_dir):
    with create_backend("onnxruntime", model=r50_spec(r50_weights), cache_dir=engines_dir, max_batch=4) as b:
        yield b


@pytest.fixture(scope="session")
def torch_cpu(r50_weights):
    with create_backend("torch", model=r50_spec(r50_weights), device="cpu", max_batch=4) as b:
        yield b


def _batch(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 224, 224), dtype=np.float32)


# ---- weights ---------------------------------------------------------------------------------------
def test_weights_roundtrip_fp16_with_hash(r50_weights):
    tensors, info = load_weights(r50_weights, arch="FaceR50")
    assert info.arch == "FaceR50" and info.config == {"width": 64, "blocks": [3, 4, 6, 3]}
    assert len(info.sha256) == 64
    torch.manual_seed(0)
    ref = FaceR50().state_dict()
    w = ref["layers.2.3.conv2.weight"].numpy()
    # stored as FP16: equal to the FP16 rounding of the original, loaded back as float32
    np.testing.assert_array_equal(tensors["layers.2.3.conv2.weight"], w.astype(np.float16).astype(np.float32))
    assert tensors["stem.1.num_batches_tracked"].shape == ()  # 0-d tensors survive


def test_weights_bad_files_are_one_line_model_errors(r50_weights, tmp_path):
    raw = r50_weights.read_bytes()
    flipped = bytearray(raw)
    flipped[-1000] ^= 0xFF  # one bit pattern inside the tensor data
    cases = {
        "missing.safetensors": None,
        "flipped.safetensors": bytes(flipped),
        "truncated.safetensors": raw[: len(raw) // 2],
        "text.safetensors": b"this is not a weights file at all",
    }
    expected = {
        "missing": "not found",
        "flipped": "sha256",
        "truncated": "corrupt",
        "text": "not a safetensors",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ModelError) as err:
            load_weights(path)
        msg = str(err.value)
        assert expected[name.split(".")[0]] in msg and "\n" not in msg, msg
    with pytest.raises(ModelError, match="expected 'Other'"):
        load_weights(r50_weights, arch="Other")


def test_r50_without_weights_says_how_to_train(monkeypatch, tmp_path):
    from face3d_live.models.registry import create_model

    monkeypatch.setenv("FACE3D_R50_WEIGHTS", str(tmp_path / "nothing.safetensors"))
    with pytest.raises(ModelError, match="face3d-live train"):
        create_model("r50", "onnxruntime")
    with pytest.raises(ConfigError):
        create_model("r50", "litert")


# ---- backends --------------------------------------------------------------------------------------
def test_onnxruntime_matches_torch_cpu(ort, torch_cpu):
    x = _batch(6, 1)  # 6 > max_batch 4: infer_sync chunks
    a, b = ort.infer_sync(x), torch_cpu.infer_sync(x)
    assert a.shape == b.shape == (6, OUTPUT_DIM) and a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-4
    assert np.abs(b).max() > 1e-3  # not a trivially zero output


def test_uint8_nhwc_input_matches_float_input(r50_weights, engines_dir, torch_cpu):
    """uint8 NHWC crops (converted inside the backend's graph) == the same crops as float NCHW / 255."""
    crops = np.random.default_rng(4).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    ref = torch_cpu.infer_sync(crops.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    spec = r50_spec(r50_weights)
    with create_backend("onnxruntime", model=spec, cache_dir=engines_dir, input_format="uint8") as b:
        assert b.sample_shape == (224, 224, 3) and b.input_dtype == np.uint8
        assert np.abs(b.infer_sync(crops) - ref).max() <= 1e-4
        with pytest.raises(ValueError, match="uint8"):
            b.infer_sync(crops.astype(np.float32))
    with create_backend("torch", model=spec, device="cpu", input_format="uint8") as b:
        assert np.abs(b.infer_sync(crops) - ref).max() <= 1e-4


def test_backend_state_and_input_checks(r50_weights, engines_dir):
    backend = create_backend("onnxruntime", model=r50_spec(r50_weights), cache_dir=engines_dir, max_batch=2)
    backend.deactivate()
    backend.deactivate()  # idempotent
    with pytest.raises(BackendUnavailable, match="not active"):
        backend.infer_sync(_batch(1, 0))
    with (
        create_backend("onnxruntime", model=r50_spec(r50_weights), cache_dir=engines_dir) as b,
        pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"),
    ):
        b.infer_sync(np.zeros((2, 224, 224, 3), np.float32))
    with pytest.raises(ConfigError, match="unknown backend option"):
        create_backend("onnxruntime", model=r50_spec(r50_weights), cuda_graph=True)
    with pytest.raises(BackendUnavailable, match="fp16"):
        create_backend("torch", model=r50_spec(r50_weights), device="cpu", precision="fp16")
    from face3d_live.inference.cuda import cuda_status

    if cuda_status():  # no GPU: an explicit tensorrt request is a one-line error, not a silent CPU run
        with pytest.raises(BackendUnavailable, match="CUDA GPU"):
            create_backend("tensorrt", model=r50_spec(r50_weights))


def test_auto_picks_a_working_backend_and_says_why(r50_weights, engines_dir, caplog):
    from face3d_live.inference.cuda import cuda_status

    caplog.set_level("INFO", logger="face3d_live.inference")
    with create_backend("auto", model=r50_spec(r50_weights), cache_dir=engines_dir) as b:
        expected = "onnxruntime" if cuda_status() else "torch"  # CPU machine: tensorrt/torch-cuda skipped
        assert b.name in (expected, "tensorrt")
    msg = next(r.getMessage() for r in caplog.records if "backend auto" in r.getMessage())
    if cuda_status():
        assert "skipped tensorrt/cuda" in msg and "no CUDA GPU" in msg


def test_any_torch_module_runs_via_onnx_content_hash(engines_dir):
    """A different module (e.g. a pruned variant) gets its own export, never a stale one."""
    torch.manual_seed(1)
    small = FaceR50(width=16, blocks=(1, 1, 1, 1)).eval()
    x = _batch(2, 3)
    with create_backend("onnxruntime", model=small, cache_dir=engines_dir) as b:
        out = b.infer_sync(x)
    with torch.no_grad():
        ref = small(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() <= 1e-4
    exports = sorted(p.name for p in (engines_dir / "onnx").glob("facer50-*-fp32.onnx"))
    assert len(exports) == 1


# ---- executor ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_fixture", ["ort", "torch_cpu"])
def test_executor_results_in_submission_order(backend_fixture, request):
    backend = request.getfixturevalue(backend_fixture)
    # a big batch then small ones: they finish first, and still come back after it
    sizes = [4, 1, 2, 1, 3] if backend.name == "onnxruntime" else [3, 1, 1]
    batches = [_batch(n, 10 + i) for i, n in enumerate(sizes)]
    expected = [backend.infer_sync(b) for b in batches]
    with InferenceExecutor(backend, streams=2) as ex:
        results = []
        for i, b in enumerate(batches):
            if ex.full:
                results.append(ex.collect())
            ex.submit(b, tag=f"frame{i}")
        results += ex.drain()
    assert [r.ticket for r in results] == list(range(len(sizes)))
    assert [r.tag for r in results] == [f"frame{i}" for i in range(len(sizes))]
    for r, e in zip(results, expected):
        assert r.output.shape == e.shape
        assert np.abs(r.output - e).max() <= 1e-5
    if backend.name == "onnxruntime":
        with InferenceExecutor(backend, streams=3) as ex:  # map(): same outputs
            for out, e in zip(ex.map(batches), expected):
                assert np.abs(out - e).max() <= 1e-5


def test_executor_backpressure_bounds_in_flight(ort):
    with InferenceExecutor(ort, streams=2, max_batch=2) as ex:
        ex.submit(_batch(2, 0))
        ex.submit(_batch(1, 1))
        assert ex.full and ex.in_flight == 2
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError, match="collect"):
            ex.submit(_batch(1, 2), timeout=0.2)
        assert time.perf_counter() - t0 >= 0.19
        assert ex.collect().ticket == 0
        ex.submit(_batch(1, 3), timeout=5)  # a slot is free again
        with pytest.raises(ConfigError, match="max_batch"):
            ex.submit(_batch(3, 4))
        assert [r.ticket for r in ex.drain()] == [1, 2]

    # a producer thread against a slow consumer: the producer blocks, nothing queues up
    n_batches, seen_max = 8, []
    with InferenceExecutor(ort, streams=2, max_batch=1) as ex:

        def produce() -> None:
            for i in range(n_batches):
                ex.submit(_batch(1, i), tag=i)
                seen_max.append(ex.in_flight)

        producer = threading.Thread(target=produce)
        producer.start()
        tags = []
        for _ in range(n_batches):
            time.sleep(0.02)  # slow consumer
            tags.append(ex.collect(timeout=30).tag)
        producer.join()
    assert tags == list(range(n_batches))
    assert max(seen_max) <= 2


def test_executor_close_is_idempotent_and_final(ort):
    ex = InferenceExecutor(ort, streams=2)
    ex.submit(_batch(1, 0))
    ex.close()  # waits for the in-flight batch, frees slots
    ex.close()
    with pytest.raises(ConfigError, match="closed"):
        ex.submit(_batch(1, 0))


# ---- the face model ------------------------------------------------------------------------------------
def test_reconstructor_r50_onnxruntime_astronaut(astronaut, r50_weights, engines_dir, monkeypatch):
    from face3d_live import Reconstructor

    monkeypatch.setenv("FACE3D_R50_WEIGHTS", str(r50_weights))
    monkeypatch.setenv("FACE3D_ENGINES", str(engines_dir))
    with Reconstructor(model="r50", backend="onnxruntime") as rec:
        assert rec.model.name == "r50" and rec.model.input_size == 224
        assert rec.model.backend.name == "onnxruntime"
        faces = rec.reconstruct(astronaut, boxes=[(170, 40, 290, 190)])
        assert len(faces) == 1
        f = faces[0]
        assert f.vertices.shape == (468, 3) and f.vertices.dtype == np.float32
        assert f.landmarks68.shape == (68, 3)
        assert f.triangles.shape[1] == 3 and f.uv.shape == (468, 2)
        assert 0.0 <= f.score <= 1.0 and np.isfinite(f.vertices).all()
        assert f.iris.shape == (10, 3) and f.gaze.shape == (2, 2) and f.blendshapes.shape == (52,)
        out = rec.model.predict(np.zeros((3, 224, 224, 3), np.uint8))
        assert out.vertices.shape == (3, 468, 3) and out.iris.shape == (3, 10, 3)
        assert out.landmarks68.shape == (3, 68, 3) and out.scores.shape == (3,) and len(out) == 3
        assert all(a.dtype == np.float32 for a in (out.vertices, out.iris, out.landmarks68, out.scores))
        assert ((out.scores >= 0) & (out.scores <= 1)).all()
        with pytest.raises(ValueError, match="uint8"):
            rec.model.predict(np.zeros((1, 224, 224, 3), np.float32))
