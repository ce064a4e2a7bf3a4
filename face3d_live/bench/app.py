"""`face3d-live bench app`: the live app's full pipeline, headless — capture (paced like a camera) →
track → the camera view (overlay + HUD painted with QPainter, as the window does) → the 3D view
(texture accumulation + render on a standalone EGL context, read back as the "swap") — reporting
frames/s shown and end-to-end latency (capture timestamp → frame read back) percentiles."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

NAME = "app"
HELP = "headless live pipeline incl. overlay + EGL render: frames/s, end-to-end latency percentiles"
WARMUP_FRAMES = 15  # model warm-up and the first detection are not steady state
RECONSTRUCTION_STAGES = ("detect", "crop", "infer", "decode", "smooth")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from face3d_live.training.data import default_data_dir

    default = default_data_dir() / "videos" / "single_face.mp4"
    p.add_argument(
        "--source", default=str(default) if default.exists() else "demo", help="video file or 'demo'"
    )
    p.add_argument("--frames", type=int, default=300, help="frames shown per round (default 300)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default 3)")
    p.add_argument("--model", default=None, help="face model (default: r50 on a CUDA GPU, else r50-int8)")
    p.add_argument("--backend", default="auto")
    p.add_argument(
        "--fps",
        type=float,
        default=None,
        help="capture rate (default: the file's own, like a camera; 0: unpaced)",
    )
    p.add_argument("--view", default="640x480", help="3D view size WxH (default 640x480)")
    p.add_argument("--texture-size", type=int, default=None, help="UV texture side (default: by device)")
    p.add_argument(
        "--texture-hz", type=float, default=None, help="texture bakes per second (default: by device)"
    )


def _load() -> dict:
    try:
        la = os.getloadavg()
        return {"load_1m": round(la[0], 2), "load_5m": round(la[1], 2), "cores": os.cpu_count()}
    except OSError:
        return {}


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # QPainter + fonts need a QGuiApplication only
    from PyQt6.QtCore import QPointF, QRectF
    from PyQt6.QtGui import QGuiApplication, QImage, QPainter

    from face3d_live.capture import open_source
    from face3d_live.detect.tracker import TrackerConfig
    from face3d_live.errors import ConfigError
    from face3d_live.monitor.gpu import GpuMonitor
    from face3d_live.monitor.stats import FrameRecord, Percentiles, RollingStats
    from face3d_live.pipeline.channels import Closed
    from face3d_live.pipeline.live import LiveConfig, LivePipeline, describe
    from face3d_live.reconstructor import Reconstructor
    from face3d_live.render import OffscreenTarget, create_context
    from face3d_live.ui.hud import hud_lines
    from face3d_live.ui.overlay import annotate, frame_qimage, paint_frame, paint_hud
    from face3d_live.ui.scene import FaceScene, SceneConfig

    try:
        view = tuple(int(v) for v in args.view.lower().split("x"))
        assert len(view) == 2 and min(view) > 0
    except (ValueError, AssertionError):
        raise ConfigError(f"--view must be WxH, e.g. 640x480, got {args.view!r}") from None
    if args.frames <= WARMUP_FRAMES:
        raise ConfigError(f"--frames must be > {WARMUP_FRAMES} (the warm-up frames are not measured)")
    own_app = QGuiApplication.instance() is None
    app = QGuiApplication.instance() or QGuiApplication(["face3d-live-bench"])
    load_before = _load()
    ctx = create_context("egl")
    gl_renderer = str(ctx.info.get("GL_RENDERER", "?"))
    scene = FaceScene(ctx, SceneConfig(texture_size=args.texture_size, texture_hz=args.texture_hz))
    target = OffscreenTarget(ctx, view)
    gpu = GpuMonitor()
    from face3d_live.models.registry import default_model

    args.model = args.model or default_model()
    rec = Reconstructor(args.model, args.backend, tracker=TrackerConfig(max_faces=1))
    canvas: QImage | None = None
    rounds = []
    try:
        for _ in range(args.rounds):
            rec.reset()
            scene.reset_texture()
            stats = RollingStats()
            pipeline = LivePipeline(
                lambda: open_source(args.source, realtime_demo=args.fps is None),
                rec,
                LiveConfig(pace_fps=args.fps),
                prepare=lambda f: annotate(f.image, f.faces),  # on the worker, as the window does
            )
            shown: list[FrameRecord] = []
            hud: list[str] = []
            t_hud = 0
            with pipeline:
                while len(shown) < args.frames:
                    try:
                        result = pipeline.results.get(timeout=10.0)
                    except Closed:
                        break
                    if result is None:
                        raise TimeoutError("no frame from the pipeline within 10 s")
                    frame = result.frame
                    # the 3D view first: its GL commands are queued and the GPU runs them while the CPU
                    # paints the camera view; reading the pixels back then waits like a swap does
                    scene.show(frame, frame.faces[0] if frame.faces else None)
                    scene.draw(target.fbo)
                    # the camera view, as CameraView paints it
                    t0 = time.perf_counter_ns()
                    annotated = result.display if result.display is not None else frame.image
                    image = frame_qimage(annotated)
                    if canvas is None or canvas.size() != image.size():
                        canvas = QImage(image.size(), QImage.Format.Format_RGB32)
                    painter = QPainter(canvas)
                    paint_frame(painter, QRectF(canvas.rect()), image)
                    if hud:
                        paint_hud(painter, QPointF(8, 8), hud)
                    painter.end()
                    t1 = time.perf_counter_ns()
                    target.read()
                    now = time.perf_counter_ns()
                    stages = {**frame.timings_ns, **scene.timings_ns, "overlay": t1 - t0}
                    stages["display"] = now - result.t_ready_ns
                    record = FrameRecord(now, now - frame.t_capture_ns, stages, len(frame.faces))
                    stats.add(record)
                    shown.append(record)
                    if now - t_hud > 250e6:  # the window refreshes its HUD at 4 Hz
                        stats.set_dropped(pipeline.dropped, now)
                        hud = hud_lines(stats.snapshot(now), pipeline.description, gpu.read(), gpu.reason)
                        t_hud = now
                dropped = pipeline.dropped
            rounds.append(_round_summary(shown[WARMUP_FRAMES:], dropped, Percentiles))
        description = describe(rec)
    finally:
        rec.close()
        gpu.close()
        target.close()
        scene.close()
        ctx.release()
        canvas = None
        if own_app:  # leave no offscreen QGuiApplication behind in a process that may open windows later
            from PyQt6 import sip

            sip.delete(app)
    load_after = _load()
    fps = [r["fps"] for r in rounds]
    result = {
        "source": args.source,
        **description,
        "gl_renderer": gl_renderer,
        "view": list(view),
        "texture_size": scene.config.texture_size,
        "texture_hz": scene.config.texture_hz,
        "pace_fps": args.fps,
        "frames_per_round": args.frames,
        "warmup_frames_skipped": WARMUP_FRAMES,
        "fps_median": float(np.median(fps)),
        "e2e_ms_median": {
            k: float(np.median([r["e2e_ms"][k] for r in rounds])) for k in ("p50", "p95", "p99")
        },
        "added_ms_median": {
            k: float(np.median([r["added_ms"][k] for r in rounds])) for k in ("p50", "p95", "p99")
        },
        "stage_p50_ms_median": {
            k: float(np.median([r["stage_p50_ms"].get(k, 0.0) for r in rounds]))
            for k in rounds[0]["stage_p50_ms"]
        },
        "load_before": load_before,
        "load_after": load_after,
        "rounds": rounds,
    }
    e = result["e2e_ms_median"]
    print(
        f"bench app: {description['model']} on {description['backend']} ({description['precision']}), "
        f"{args.source}, {args.rounds} rounds x {args.frames} frames, 3D view {view[0]}x{view[1]} "
        f"texture {scene.config.texture_size} @ {scene.config.texture_hz:g} Hz"
    )
    print(
        f"  frames/s shown (median): {result['fps_median']:.1f}   per round: {', '.join(f'{f:.1f}' for f in fps)}"
    )
    print(
        f"  end-to-end latency ms (median of rounds): p50 {e['p50']:.1f}  p95 {e['p95']:.1f}  p99 {e['p99']:.1f}"
    )
    a = result["added_ms_median"]
    print(
        f"  added by the app around the model, ms: p50 {a['p50']:.1f}  p95 {a['p95']:.1f}  p99 {a['p99']:.1f}"
    )
    print("  stage p50 ms: " + ", ".join(f"{k} {v:.1f}" for k, v in result["stage_p50_ms_median"].items()))
    print(
        f"  dropped per round: {', '.join(str(r['dropped']) for r in rounds)}   CPU load {load_before} -> {load_after}"
    )
    return result


def _round_summary(records, dropped: int, percentiles) -> dict:
    t = np.array([r.t_shown_ns for r in records], np.float64)
    fps = (len(t) - 1) / ((t[-1] - t[0]) / 1e9) if len(t) > 1 and t[-1] > t[0] else 0.0
    e2e = percentiles.of(np.array([r.e2e_ns for r in records]))
    # what the app adds around the reconstruction: capture, queueing, texture, render, overlay, display
    added = percentiles.of(
        np.array([r.e2e_ns - sum(r.stages_ns.get(k, 0) for k in RECONSTRUCTION_STAGES) for r in records])
    )
    stages: dict[str, list[int]] = {}
    for r in records:
        for k, v in r.stages_ns.items():
            stages.setdefault(k, []).append(v)
    return {
        "fps": fps,
        "frames": len(records),
        "frames_with_face": sum(r.faces > 0 for r in records),
        "dropped": dropped,
        "e2e_ms": {"p50": e2e.p50, "p95": e2e.p95, "p99": e2e.p99, "mean": e2e.mean},
        "added_ms": {"p50": added.p50, "p95": added.p95, "p99": added.p99},
        "stage_p50_ms": {k: float(np.median(v)) / 1e6 for k, v in stages.items()},
    }
