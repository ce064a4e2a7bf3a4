"""`face3d-live bench record`: file size and writing speed of recordings.

Two measurements, medians over ``--rounds``:
  * writer: a SECONDS × FPS sequence (the clip's reconstructed frames played back and forth, so the
    faces and images are real) written through SequenceWriter — journal, texture baking, GLB build —
    for float and quantised GLB; speed is sequence seconds per wall second (≥ 1 = real time);
  * end to end: ``record`` of the clip itself: decode + track + write.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

NAME = "record"
HELP = "GLB size and writing speed (real-time factor) of a recorded sequence"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from face3d_live.training.data import default_data_dir

    default = default_data_dir() / "videos" / "WolfgangLanger_Pexels.mp4"
    p.add_argument("--source", default=str(default), help="video with one face (default: the Pexels clip)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the written sequence (default 20)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the written sequence (default 30)")
    p.add_argument("--texture-size", type=int, default=2048, help="texture side (default 2048)")
    p.add_argument("--texture-baker", choices=("auto", "gl", "cpu"), default="auto")
    p.add_argument("--rounds", type=int, default=3, help="repetitions; medians are reported (default 3)")


def _clip(source: str) -> tuple[float, list]:
    from face3d_live.capture import open_source
    from face3d_live.reconstructor import Reconstructor

    frames = []
    with open_source(source) as src, Reconstructor("mediapipe") as rec:
        for frame in src:
            faces = rec.track(frame.image, frame.timestamp_s)
            if faces:
                frames.append((frame.image, faces))
        fps = src.fps
    if not frames:
        from face3d_live.errors import SourceError

        raise SourceError(f"no face found in {source}; give a video with a face")
    return fps, frames


def _writer_round(frames: list, n: int, fps: float, config, out: Path) -> dict:
    from face3d_live.record import SequenceWriter

    period = 2 * len(frames) - 2 if len(frames) > 1 else 1
    write_ms = []
    t0 = time.perf_counter()
    with SequenceWriter(out, config, fps=fps) as w:
        for i in range(n):
            k = i % period
            image, faces = frames[k if k < len(frames) else period - k]  # back and forth through the clip
            t = time.perf_counter()
            w.write(i, i / fps, faces, image=image)
            write_ms.append((time.perf_counter() - t) * 1e3)
        t_close = time.perf_counter()
    t1 = time.perf_counter()
    return {
        "wall_s": t1 - t0,
        "close_s": t1 - t_close,
        "write_ms_median": statistics.median(write_ms),
        "write_ms_p95": sorted(write_ms)[int(0.95 * (len(write_ms) - 1))],
        "bytes": w.summary["bytes"],
        "texture_bytes": w.summary["texture_bytes"],
        "targets": w.summary["targets"],
    }


def _end_to_end(source: str, config, out: Path) -> dict:
    from face3d_live.capture import open_source
    from face3d_live.reconstructor import Reconstructor
    from face3d_live.record import SequenceWriter

    t0 = time.perf_counter()
    with (
        open_source(source) as src,
        Reconstructor("mediapipe") as rec,
        SequenceWriter(out, config, fps=src.fps) as w,
    ):
        for frame in src:
            w.write(
                frame.frame_id,
                frame.timestamp_s,
                rec.track(frame.image, frame.timestamp_s),
                image=frame.image,
            )
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "duration_s": w.summary["duration_s"], "bytes": w.summary["bytes"]}


def run(args: argparse.Namespace) -> dict:
    from face3d_live.record import RecordConfig

    _, frames = _clip(args.source)
    n = int(round(args.seconds * args.fps))
    results: dict = {"sequence": {"seconds": args.seconds, "fps": args.fps, "frames": n}, "writer": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, quantize in (("quantized", True), ("float", False)):
            cfg = RecordConfig(
                quantize=quantize, texture_size=args.texture_size, texture_baker=args.texture_baker
            )
            rounds = [
                _writer_round(frames, n, args.fps, cfg, Path(tmp) / f"{label}.glb")
                for _ in range(args.rounds)
            ]
            med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
            med["realtime_factor"] = args.seconds / med["wall_s"]
            results["writer"][label] = med
        cfg = RecordConfig(quantize=True, texture_size=args.texture_size, texture_baker=args.texture_baker)
        e2e = [_end_to_end(args.source, cfg, Path(tmp) / "e2e.glb") for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in e2e) for k in e2e[0]}
        med["realtime_factor"] = med["duration_s"] / med["wall_s"]
        results["end_to_end"] = med

    print(
        f"writer: {n} frames ({args.seconds:g} s at {args.fps:g} fps), texture {args.texture_size}², medians of {args.rounds}"
    )
    print(
        f"{'GLB':<10} {'MB':>6} {'texture MB':>10} {'wall s':>7} {'× real time':>11} {'write ms':>9} {'p95 ms':>7} {'close s':>7}"
    )
    for label, r in results["writer"].items():
        print(
            f"{label:<10} {r['bytes'] / 1e6:6.2f} {r['texture_bytes'] / 1e6:10.2f} {r['wall_s']:7.2f} "
            f"{r['realtime_factor']:11.2f} {r['write_ms_median']:9.2f} {r['write_ms_p95']:7.2f} {r['close_s']:7.2f}"
        )
    e = results["end_to_end"]
    print(
        f"end to end (decode + track + write, quantised): {Path(args.source).name} {e['duration_s']:.1f} s "
        f"in {e['wall_s']:.2f} s = {e['realtime_factor']:.2f}× real time, {e['bytes'] / 1e6:.2f} MB"
    )
    return results
