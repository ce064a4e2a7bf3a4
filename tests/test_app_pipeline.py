"""The live pipeline (threads, latest-only slots, timings, errors, stop) and the headless app benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from face3d_live.capture import open_source
from face3d_live.errors import ModelError, SourceError
from face3d_live.pipeline.channels import Closed
from face3d_live.pipeline.live import LiveConfig, LivePipeline, PipelineEvent
from face3d_live.reconstructor import Reconstructor
from face3d_live.training.data import default_data_dir

VIDEO = default_data_dir() / "videos" / "single_face.mp4"


@pytest.fixture(scope="module")
def rec():
    with Reconstructor("mediapipe") as r:
        yield r


def _collect(pipeline: LivePipeline, n: int, timeout: float = 30.0) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        try:
            r = pipeline.results.get(timeout=1.0)
        except Closed:
            break
        if r is not None:
            out.append(r)
    return out


@pytest.mark.skipif(not VIDEO.exists(), reason="shared test video not found")
def test_live_pipeline_on_video_times_every_stage_and_stops_fast(rec):
    ready = threading.Event()
    pipeline = LivePipeline(lambda: open_source(VIDEO), rec, LiveConfig(), on_result=ready.set)
    pipeline.start()
    try:
        results = _collect(pipeline, 20)
        assert ready.is_set() and pipeline.state == "running"
        pipeline.set_smoothing(False)  # applied by the worker between frames
        _collect(pipeline, 3)
        assert rec.smoothing is None
        pipeline.set_smoothing(True)
        _collect(pipeline, 3)
        assert rec.smoothing is not None
    finally:
        t0 = time.perf_counter()
        joined = pipeline.stop()
        stop_s = time.perf_counter() - t0
    assert joined and stop_s < 1.0
    assert pipeline.state == "stopped" and pipeline.stop()  # idempotent
    assert len(results) == 20
    with_face = [r for r in results if r.frame.faces]
    assert len(with_face) >= 18
    for r in results:
        t = r.frame.timings_ns
        assert {"capture", "queue", "detect", "crop", "infer", "decode", "smooth"} <= set(t)
        assert r.t_ready_ns > r.frame.t_capture_ns and t["infer"] > 0
    # paced at the file's 30 frames/s like a camera: frame ids advance by about one per result
    ids = [r.frame.frame_id for r in results]
    assert ids == sorted(ids)
    assert pipeline.description == {
        "model": "mediapipe",
        "backend": "litert",
        "device": "cpu",
        "precision": "fp32",
    }


@pytest.mark.skipif(not VIDEO.exists(), reason="shared test video not found")
def test_file_source_loops_and_unpaced_mode_runs_ahead(rec):
    # 72-frame clip, unpaced: the worker takes frames as fast as it can and the file starts over
    # (looping seeks back: no file reopen); the window's overlay is drawn on the worker (``prepare``)
    from face3d_live.ui.overlay import annotate

    events: list[PipelineEvent] = []
    with LivePipeline(
        lambda: open_source(VIDEO),
        rec,
        LiveConfig(pace_fps=0),
        on_event=events.append,
        prepare=lambda f: annotate(f.image, f.faces),
    ) as p:
        t0 = time.perf_counter()
        results = _collect(p, 100)
        wall = time.perf_counter() - t0
    assert len(results) == 100
    assert any(b.frame.frame_id < a.frame.frame_id for a, b in zip(results, results[1:]))  # looped
    for r in results:
        assert r.display.shape == r.frame.image.shape and "annotate" in r.frame.timings_ns
        assert (r.display != r.frame.image).any() == bool(r.frame.faces)  # the mesh is drawn where found
    assert 100 / wall > 30.0  # faster than the file's own rate: nothing paces it
    assert p.frames_in.dropped == 0  # unpaced reads wait for the worker instead of dropping


def test_model_failure_reaches_the_consumer_as_a_message():
    def broken() -> Reconstructor:
        raise ModelError("weights file missing: train first")

    events: list[PipelineEvent] = []
    pipeline = LivePipeline(lambda: open_source("demo", demo_frames=1000), broken, on_event=events.append)
    pipeline.start()
    with pytest.raises(Closed):  # the worker ended: the consumer sees a closed channel, not a hang
        while pipeline.results.get(timeout=5.0) is not None:
            pass
    assert pipeline.stop()
    assert pipeline.state == "failed"
    assert [(e.kind, e.message) for e in events] == [("fatal", "weights file missing: train first")]


def test_frame_errors_are_reported_and_the_pipeline_goes_on(rec):
    events: list[PipelineEvent] = []

    class FlakyReconstructor:  # the real reconstructor, failing on every 5th frame
        def __init__(self) -> None:
            self.model, self.smoothing, self.timings_ns, self.n = rec.model, rec.smoothing, {}, 0

        def track(self, image, t):
            self.n += 1
            if self.n % 5 == 0:
                raise ValueError("corrupt frame")
            faces = rec.track(image, t)
            self.timings_ns = rec.timings_ns
            return faces

        def reset(self) -> None:
            rec.reset()

        def close(self) -> None:
            pass

    pipeline = LivePipeline(
        lambda: open_source("demo", demo_frames=40),
        FlakyReconstructor,
        LiveConfig(pace_fps=0, loop=False),
        on_event=events.append,
    )
    with pipeline:
        results = _collect(pipeline, 40)
        with pytest.raises(Closed):  # the source ends, then the worker: the channel closes
            while pipeline.results.get(timeout=10.0) is not None:
                pass
    assert pipeline.frames_processed == 40  # every frame went through; the consumer may skip some
    assert len(results) + pipeline.results.dropped == 40
    assert sum(1 for r in results if not r.frame.faces) >= 4  # failed frames, delivered without faces
    errors = [e for e in events if e.kind == "error"]
    assert 1 <= len(errors) <= 3 and "corrupt frame" in errors[0].message  # reported, rate-limited
    assert any(e.kind == "end" for e in events)


def test_bad_source_raises_at_start(rec):
    pipeline = LivePipeline(lambda: open_source("/no/such/clip.mp4"), rec)
    with pytest.raises(SourceError, match="no such file"):
        pipeline.start()
    assert pipeline.stop()


@pytest.mark.skipif(not VIDEO.exists(), reason="shared test video not found")
def test_bench_app_headless(tmp_path):
    """`face3d-live bench app` end to end, in its own process (its EGL context must not share a
    process with the Qt window tests: a thread that had an EGL context current cannot make GLX current)."""
    pytest.importorskip("moderngl")
    out = tmp_path / "bench-app.json"
    runner = (  # the bench module itself (the CLI's discovery of every bench module is not under test)
        "import argparse, json, sys; from face3d_live.bench import app; p = argparse.ArgumentParser(); "
        "app.add_arguments(p); out = sys.argv.pop(); r = app.run(p.parse_args(sys.argv[1:])); "
        "open(out, 'w').write(json.dumps(r))"
    )
    cmd = [sys.executable, "-c", runner, "--source", str(VIDEO), "--frames", "45", "--rounds", "1",
           "--view", "320x240", "--texture-size", "256", str(out)]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    )
    if proc.returncode != 0 and "cannot create an OpenGL context" in proc.stderr:
        pytest.skip("no EGL context on this machine")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "frames/s shown (median)" in proc.stdout
    result = json.loads(out.read_text())
    r = result["rounds"][0]
    assert r["frames"] == 45 - 15 and r["frames_with_face"] >= 25
    assert 0 < result["fps_median"] <= 45  # paced at the file's 30 frames/s
    e = result["e2e_ms_median"]
    assert 0 < e["p50"] <= e["p95"] <= e["p99"]
    assert {"infer", "texture", "render", "overlay", "display"} <= set(result["stage_p50_ms_median"])
    assert result["texture_size"] == 256 and "load_1m" in result["load_before"]


def test_hud_lines_show_rates_stages_model_and_gpu():
    from face3d_live.monitor.gpu import GpuState
    from face3d_live.monitor.stats import FrameRecord, RollingStats
    from face3d_live.ui.hud import hud_lines

    stats = RollingStats()
    t = 0
    for i in range(60):
        t += 33_000_000
        stages = {"infer": 2_000_000 + i * 10_000, "capture": 500_000, "render": 1_000_000, "injected": 0}
        stats.add(FrameRecord(t, 20_000_000 + i * 100_000, stages, faces=1))
    desc = {"model": "r50", "backend": "torch", "device": "cuda", "precision": "fp16"}
    gpu = GpuState("NVIDIA H100", (9, 0), 1234.0, 80000.0, 57.0, 210.0, 48.0, 1980.0, ())
    lines = hud_lines(stats.snapshot(t), desc, gpu, source="clip.mp4")
    text = "\n".join(lines)
    assert lines[0].startswith("FPS 30.") and "p50 22.9" in lines[0]
    assert text.index("capture") < text.index("infer") < text.index("render") < text.index("injected")
    assert "r50 · torch (cuda, fp16)" in text and "source clip.mp4" in text
    assert "GPU NVIDIA H100: 57%  1234/80000 MB  210 W  48 °C" in text
    idle = hud_lines(None, {}, None, "no NVIDIA GPU", status="loading model…")
    assert idle == [
        "FPS   --      waiting for frames",
        "loading model…",
        "GPU: no NVIDIA GPU",
    ]
