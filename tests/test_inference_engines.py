"""Real TensorRT-RTX engine builds on this CPU-only machine (ahead of time, named compute capabilities)
from the project's r50 ONNX: two targets, cache hit, rebuild on a changed model, corrupt and foreign
engine files, unsupported targets, the build-engines command."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trt = pytest.importorskip("tensorrt_rtx")

from face3d_live.errors import BackendUnavailable, EngineBuildError  # noqa: E402
from face3d_live.inference.spec import ModelSpec  # noqa: E402
from face3d_live.inference.trt_build import (  # noqa: E402
    EngineCache,
    Profile,
    check_runtime_cc,
    onnx_precision,
    parse_cc,
)
from face3d_live.models.r50 import FaceR50  # noqa: E402
from face3d_live.models.r50_face import build_r50, save_r50  # noqa: E402


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("trt")


@pytest.fixture(scope="module")
def weights(workdir):
    torch.manual_seed(0)
    path = workdir / "r50-random.safetensors"
    save_r50(FaceR50().eval(), path)
    return path


@pytest.fixture(scope="module")
def model(weights):
    return build_r50(weights)  # as build-engines loads it: same content hash, so the exports are shared


@pytest.fixture(scope="module")
def fp16_onnx(model, workdir):
    return ModelSpec(name="r50", module=model).onnx("fp16", workdir)


def _get(cache: EngineCache, onnx, cc: str, **kw):
    return cache.get(onnx, name="r50", precision="fp16", cc=cc, trt=trt, **kw)


def test_build_two_targets_then_cache_hit(fp16_onnx, workdir):
    assert onnx_precision(fp16_onnx) == "fp16"
    cache = EngineCache(workdir)
    a, b = _get(cache, fp16_onnx, "86"), _get(cache, fp16_onnx, "89")
    assert a.built and b.built and a.path != b.path
    for e in (a, b):
        assert e.path.stat().st_size > 10 * 2**20  # a real ResNet50 FP16 engine (~50 MB)
        meta = json.loads(e.path.with_suffix(".json").read_text())
        assert meta["key"]["cc"] == e.key.cc and meta["key"]["trt"].startswith("tensorrt_rtx-")
        assert meta["key"]["profile"] == [1, 4, 16] and meta["key"]["precision"] == "fp16"
    mtime = a.path.stat().st_mtime_ns
    again = _get(cache, fp16_onnx, "86")
    assert not again.built and again.path == a.path and a.path.stat().st_mtime_ns == mtime
    other_profile = _get(cache, fp16_onnx, "86", profile=Profile(1, 8, 32))
    assert other_profile.built and other_profile.key.digest != a.key.digest


def test_corrupt_and_foreign_engines_are_rebuilt(fp16_onnx, workdir, caplog):
    cache = EngineCache(workdir)
    good = _get(cache, fp16_onnx, "86")
    caplog.set_level(logging.WARNING)

    data = bytearray(good.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    good.path.write_bytes(bytes(data))  # one flipped byte
    rebuilt = _get(cache, fp16_onnx, "86")
    assert rebuilt.built
    assert any("corrupt" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)

    caplog.clear()
    good.path.write_bytes(good.path.read_bytes()[:1000])  # truncated
    assert _get(cache, fp16_onnx, "86").built
    assert any("corrupt" in r.getMessage() for r in caplog.records)

    caplog.clear()
    good.path.with_suffix(".json").unlink()  # an engine file of unknown origin
    assert _get(cache, fp16_onnx, "86").built
    assert any("no sidecar" in r.getMessage() for r in caplog.records)
    assert not _get(cache, fp16_onnx, "86").built  # and healthy again


def test_changed_model_rebuilds_and_drops_the_stale_engine(model, fp16_onnx, workdir):
    cache = EngineCache(workdir)
    old = _get(cache, fp16_onnx, "89")
    changed = FaceR50().eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.head.bias.add_(0.5)  # same architecture, new weights -> new ONNX content
    onnx2 = ModelSpec(name="r50", module=changed).onnx("fp16", workdir)
    assert onnx2 != fp16_onnx
    new = _get(cache, onnx2, "89")
    assert new.built and new.key.onnx_sha256 != old.key.onnx_sha256
    assert not old.path.exists()  # replaced, not left to accumulate
    assert not _get(cache, onnx2, "89").built


def test_precision_comes_from_the_onnx(fp16_onnx, workdir):
    with pytest.raises(EngineBuildError, match="fp16 model, not int8"):
        EngineCache(workdir).get(fp16_onnx, name="r50", precision="int8", cc="86", trt=trt)


def test_unsupported_targets():
    assert parse_cc("8.6") == parse_cc("sm86") == parse_cc((8, 6)) == "86"
    check_runtime_cc(trt, "89")
    with pytest.raises(BackendUnavailable, match=r"compute capability 9\.0"):
        check_runtime_cc(trt, "90", "NVIDIA H100 80GB HBM3")


def test_int8_qdq_export_runs_in_onnxruntime_and_builds(model, workdir):
    """INT8 Q/DQ with uint8 NHWC input (what build-engines and Reconstructor use by default)."""
    import onnxruntime as ort

    from face3d_live.inference.ort_backend import session_options
    from face3d_live.models.r50_face import calibration_crops

    spec = ModelSpec(name="r50", module=model, calibration=lambda: calibration_crops(8))
    onnx8 = spec.onnx("int8", workdir, "uint8")
    assert onnx_precision(onnx8) == "int8"
    x = calibration_crops(2, seed=5)
    crops = np.ascontiguousarray(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
    sess = ort.InferenceSession(str(onnx8), session_options(2), providers=["CPUExecutionProvider"])
    out8 = sess.run(None, {"input": crops})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(crops.transpose(0, 3, 1, 2).astype(np.float32) / 255)).numpy()
    assert np.abs(out8 - ref).max() <= 0.1 * np.abs(ref).max()  # INT8 is approximate, not broken
    e = EngineCache(workdir).get(
        onnx8, name="r50-u8", precision="int8", cc="89", input_shape=(224, 224, 3), trt=trt
    )
    assert e.built and e.size_mb < 45  # INT8 weights: smaller than the FP16 engine (~51 MB)


def test_build_engines_command(weights, workdir, capsys):
    from face3d_live.cli import main

    args = [
        "build-engines",
        "--weights",
        str(weights),
        "--cc",
        "86,120",
        "--out",
        str(workdir),
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tensorrt_rtx" in out and "sm120" in out and "2 engine(s)" in out
    assert main(args) == 0
    assert "2 from cache" in capsys.readouterr().out
    assert main([*args[:3], "--cc", "90", "--out", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "sm90" in err and len(err.strip().splitlines()) == 1


def test_builders_that_start_together_build_once(fp16_onnx, workdir):
    """Two builders of one engine at once (as Ray workers or service replicas that start together): one
    builds while the other waits on the cache's lock, then loads that engine; nothing half-written stays."""
    import threading

    results: dict[int, object] = {}

    def build(k: int) -> None:
        results[k] = _get(EngineCache(workdir), fp16_onnx, "80")

    threads = [threading.Thread(target=build, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert sorted(r.built for r in results.values()) == [False, True]
    assert results[0].path == results[1].path and results[0].path.is_file()
    assert not list(workdir.glob("*.partial"))


def test_onnx_exports_that_start_together_export_once(model, tmp_path, caplog):
    """The ONNX cache has the same lock: two exporters at once, one export, one valid file."""
    import threading

    import onnx

    paths: dict[int, object] = {}

    def export(k: int) -> None:
        paths[k] = ModelSpec(name="r50", module=model).onnx("fp32", tmp_path)

    with caplog.at_level(logging.INFO, logger="face3d_live.inference.spec"):
        threads = [threading.Thread(target=export, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    assert paths[0] == paths[1] and onnx.load(str(paths[0])).graph.node
    assert sum("exporting" in r.getMessage() for r in caplog.records) == 1
    assert not list((tmp_path / "onnx").glob("*.partial.onnx"))
