"""The torch-free runtime: ONNX graphs written from the weights files (models/onnx_build.py), the bundled
MediaPipe models, and the default CPU path with torch and mediapipe made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from face3d_live.errors import ModelError
from face3d_live.models.weights import WEIGHTS_DIR

INT8 = WEIGHTS_DIR / "face3d-r50-int8.safetensors"
R50 = WEIGHTS_DIR / "face3d-r50.safetensors"
# run a snippet where `import torch` and `import mediapipe` fail, as in a plain `pip install face3d-live`
NO_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['mediapipe'] = None\n"


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # reference semantics (no fusion): two graphs that compute the same thing give the same numbers
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def crops(astronaut) -> np.ndarray:
    """(4, 3, 224, 224) float32 crops of a real face at a few scales/rotations."""
    from face3d_live.geometry.crop import CropTransform

    out = [
        CropTransform((215, 120), 190 * s, r, 224).warp(astronaut)
        for s, r in ((1, 0), (0.9, 0.2), (1.15, -0.3))
    ]
    return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def test_int8_graph_matches_torch_export(tmp_path, crops):
    """The rung file's graph written without torch computes exactly what torch's QAT export computes."""
    pytest.importorskip("torch")
    from face3d_live.models.onnx_build import write_onnx
    from face3d_live.training.qat import export_qdq, load_int8

    ours = write_onnx(INT8, tmp_path / "ours.onnx")
    ref = export_qdq(load_int8(INT8), tmp_path / "ref.onnx")
    a = _session(ours).run(None, {"input": crops})[0]
    b = _session(ref).run(None, {"input": crops})[0]
    assert a.shape == (len(crops), 1639)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("input_format", ["float32", "uint8"])
def test_float_graph_matches_torch_export(tmp_path, crops, input_format):
    pytest.importorskip("torch")
    from face3d_live.models.export import export_onnx
    from face3d_live.models.onnx_build import write_onnx
    from face3d_live.models.r50_face import build_r50

    x = (
        crops
        if input_format == "float32"
        else np.ascontiguousarray((crops * 255).round().astype(np.uint8).transpose(0, 2, 3, 1))
    )
    ours = write_onnx(R50, tmp_path / "ours.onnx", input_format)
    ref = export_onnx(build_r50(R50), tmp_path / "ref.onnx", input_format=input_format)
    a = _session(ours).run(None, {"input": x})[0]
    b = _session(ref).run(None, {"input": x})[0]
    assert np.abs(a - b)[:, :-1].max() * 224 < 0.01  # pixels of the 224 crop


def test_wrong_weights_file_is_one_line_error(tmp_path):
    from face3d_live.models.onnx_build import build_onnx, write_onnx

    with pytest.raises(ModelError, match="no ONNX writer"):
        build_onnx({}, "SomethingElse")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a weights file")
    with pytest.raises(ModelError, match="not a safetensors file"):
        write_onnx(bad, tmp_path / "x.onnx")


def test_bundled_models_checked(tmp_path, monkeypatch):
    from face3d_live.models import tflite

    for name in tflite.BUNDLED:
        assert tflite.bundled_model_path(name).is_file()
    (tmp_path / "iris_landmark.tflite").write_bytes(b"truncated")
    monkeypatch.setattr(tflite, "BUNDLED_DIR", tmp_path)
    tflite.bundled_model_path.cache_clear()
    try:
        with pytest.raises(ModelError, match="corrupt"):
            tflite.bundled_model_path("iris_landmark.tflite")
        with pytest.raises(ModelError, match="unreadable"):
            tflite.bundled_model_path("face_landmark.tflite")
    finally:
        tflite.bundled_model_path.cache_clear()


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH + code], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_default_cpu_path_runs_without_torch_or_mediapipe(tmp_path, video_path, monkeypatch):
    """`face3d-live process` with the default CPU model on a real clip, torch and mediapipe unimportable."""
    monkeypatch.setenv("FACE3D_ENGINES", str(tmp_path / "engines"))  # a cold cache: the ONNX is written here
    clip = video_path("single_face.mp4")
    code = (
        "from face3d_live.cli import main\n"
        f"rc = main(['process', {str(clip)!r}, '--out', {str(tmp_path / 'out')!r}, '--max-frames', '12',"
        " '--no-progress', '--model', 'r50-int8'])\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None], 'torch was imported'\n"
        "sys.exit(rc)\n"
    )
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["frames_with_face"] >= 10, summary
    frame = np.load(sorted((tmp_path / "out" / "frames").glob("*.npz"))[5])
    assert frame["vertices"].shape[1:] == (468, 3) and frame["blendshapes"].shape[1:] == (52,)
    assert np.isfinite(frame["blendshapes"]).all() and np.isfinite(frame["iris"]).all()
    assert list((tmp_path / "engines" / "onnx").glob("r50-int8-*-ort2.onnx"))


def test_missing_extra_is_one_line(tmp_path):
    """A command that needs torch says which extra to install, in one line, exit 2 (no traceback)."""
    code = f"from face3d_live.cli import main\nsys.exit(main(['train', '--steps', '1', '--run-dir', {str(tmp_path)!r}]))\n"
    proc = _run(code, tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert lines == [
        "face3d-live: error: torch is not installed (needed for training, exports and the torch backend): "
        "pip install 'face3d-live[torch]'"
    ], lines


def test_int8_sessions_compute_exactly_on_any_x86_cpu(tmp_path, crops, monkeypatch):
    """The backend's sessions run the onnxruntime INT8 graph as its reference semantics (no fusion, float
    arithmetic on the dequantised values) computes it, on CPUs without VNNI too, where the fused U8S8 kernels
    saturate (on the 2-core AVX2 EPYC they moved the held-out 21-point NME from 3.56 to 3.63);
    FACE3D_ORT_EXACT_INT8=0 is the documented way back to those faster kernels."""
    import onnxruntime as ort

    from face3d_live.inference.ort_backend import EXACT_INT8_ENV, session_options
    from face3d_live.models.onnx_build import ort_flavour, write_onnx

    path = ort_flavour(write_onnx(INT8, tmp_path / "int8.onnx"), tmp_path / "int8_ort.onnx")
    want = _session(path).run(None, {"input": crops})[0]
    got = ort.InferenceSession(str(path), session_options(2), providers=["CPUExecutionProvider"])
    err = np.abs(got.run(None, {"input": crops})[0] - want).max()
    assert err < 0.01 * np.abs(want).max(), err  # rounding of the requantised activations only
    monkeypatch.setenv(EXACT_INT8_ENV, "0")
    assert session_options(2).get_session_config_entry("session.x64quantprecision") == "0"


def test_benchmarks_record_which_int8_kernels_the_cpu_runs(monkeypatch):
    """machine_info (every bench JSON) names the INT8 kernels: they set INT8 speed on this CPU."""
    import platform

    from face3d_live.cli.bench import machine_info
    from face3d_live.inference.ort_backend import EXACT_INT8_ENV

    if platform.machine() != "x86_64":
        pytest.skip("the VNNI question is an x86 one")
    vnni = "vnni" in Path("/proc/cpuinfo").read_text()
    kernels = machine_info()["cpu_int8"]
    assert kernels == ("x86 VNNI: exact U8S8" if vnni else "x86 without VNNI: exact U8U8 (slower)")
    monkeypatch.setenv(EXACT_INT8_ENV, "0")
    assert ("saturates" in machine_info()["cpu_int8"]) != vnni
