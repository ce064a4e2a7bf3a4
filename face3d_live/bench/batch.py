"""`face3d-live bench batch`: a library job on Ray, end to end (decode and writing included).

The library: ``--inputs`` (default: the shared clips), each linked ``--copies`` times under distinct names, or
with ``--loop K`` re-encoded K times back and forth into one longer file (mp4v: OpenCV's wheels have no H.264
encoder, and MPEG-4 part 2 decodes faster than H.264). Reports frames/s and videos/hour of the job
(``processing_s``: first task sent → last result in; ``wall_s`` adds Ray's start, hashing and planning), per
input frames/s, the model actors' batch sizes, and with ``--baseline`` the single-process ``process`` on the
same inputs, one after another, in this process. Target reported against: ≥ 1,000 frames/s on one H200 for a
library of 720p videos.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

NAME = "batch"
HELP = "library job on Ray: frames/s and videos/hour, decode included (--baseline: single process too)"
TARGET_FPS = 1000.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from face3d_live.cli.options import add_model_options, add_photo_options

    p.add_argument(
        "--inputs", nargs="+", default=None, help="videos / folders / list files (default: shared clips)"
    )
    p.add_argument("--copies", type=int, default=1, help="link each input N times (a larger library)")
    p.add_argument("--loop", type=int, default=0, help="re-encode each video K times back and forth (mp4v)")
    p.add_argument("--max-frames", type=int, default=None, help="per video")
    p.add_argument("--ray", default="auto", metavar="ADDRESS", help="Ray (default: RAY_ADDRESS or local)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    p.add_argument("--workers", type=int, default=None, help="input workers (default: per CPU)")
    p.add_argument(
        "--model-actors", type=int, default=None, help="model actors (default 0: each worker owns its model)"
    )
    p.add_argument(
        "--tasks-per-worker", type=int, default=None, help="tasks a worker runs at once (4 with a GPU model)"
    )
    p.add_argument(
        "--chunk-frames",
        type=int,
        default=None,
        help="chunk videos longer than this (0 = whole; default: auto, as `process --ray`)",
    )
    p.add_argument("--max-batch", type=int, default=64, help="crops per model-actor batch (64)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="model-actor batch window, ms (2)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one, removed)")
    p.add_argument("--baseline", action="store_true", help="also run single-process `process` on the inputs")
    add_model_options(p)
    add_photo_options(p)  # photo folders' passes, as `process --ray` takes them


def _default_inputs() -> list[str]:
    from face3d_live.training.data import default_data_dir

    videos = sorted((default_data_dir() / "videos").glob("*.mp4"))
    if not videos:
        raise SystemExit("bench batch: no --inputs and no shared clips in ../shared/data/videos")
    return [str(v) for v in videos]


def _looped(src: Path, dst: Path, times: int) -> None:
    """src played forwards and backwards ``times`` times, written with mp4v at the source's size and rate."""
    import cv2

    from face3d_live.capture.video import VideoFileSource

    with VideoFileSource(src) as s:
        frames = [cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR) for f in s]
        fps = s.fps
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for k in range(times):
            for f in frames if k % 2 == 0 else frames[::-1]:
                writer.write(f)
    finally:
        writer.release()


def _library(inputs: list[str], copies: int, loop: int, folder: Path) -> list[str]:
    from face3d_live.scale.inputs import expand_inputs

    items, bad = expand_inputs(inputs)
    if bad:
        raise SystemExit(f"bench batch: {bad[0].spec}: {bad[0].reason}")
    out = []
    for item in items:
        src = item.path
        if loop and item.kind == "video":
            src = folder / f"{item.name}-loop{loop}.mp4"
            _looped(item.path, src, loop)
        if copies == 1:
            out.append(str(src))
            continue
        for k in range(copies):
            link = folder / f"{item.name}-{k:03d}{src.suffix if item.kind == 'video' else ''}"
            link.symlink_to(src)
            out.append(str(link))
    return out


def _baseline(inputs: list[str], max_frames: int | None, args, folder: Path) -> dict:
    from face3d_live.cli import main

    t0 = time.perf_counter()
    frames = 0
    for k, path in enumerate(inputs):
        out = folder / f"baseline-{k}"
        argv = ["process", path, "--out", str(out), "--no-progress"]
        argv += ["--max-frames", str(max_frames)] if max_frames else []
        argv += ["--model", args.model] if args.model else []
        argv += ["--passes", "1"] if args.passes == 1 else []  # the job's photo settings
        argv += ["--first-pass", args.first_pass] if args.first_pass else []
        argv += ["--no-flip"] if args.no_flip else []
        if main(argv) == 0:
            frames += json.loads((out / "summary.json").read_text())["frames"]
        shutil.rmtree(out, ignore_errors=True)
    wall = time.perf_counter() - t0
    return {
        "frames": frames,
        "wall_s": round(wall, 3),
        "frames_per_s": round(frames / wall, 2),
        "videos_per_hour": round(len(inputs) / wall * 3600, 1),
    }


def run(args: argparse.Namespace) -> dict:
    from face3d_live.scale.batch import run_batch
    from face3d_live.scale.config import BatchConfig, ModelOptions

    with tempfile.TemporaryDirectory(prefix="face3d-bench-batch-") as tmp:
        tmp = Path(tmp)
        inputs = _library(args.inputs or _default_inputs(), max(1, args.copies), args.loop, tmp)
        out = args.out or tmp / "out"
        if args.out is not None and out.exists():
            shutil.rmtree(out)  # a benchmark measures the work, not the resume check
        config = BatchConfig(
            model=ModelOptions.from_args(args),
            max_frames=args.max_frames,
            workers=args.workers,
            model_actors=args.model_actors,
            tasks_per_worker=args.tasks_per_worker,
            chunk_frames=args.chunk_frames,
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            ray_address=args.ray,
            num_cpus=args.num_cpus,
            progress=False,
        )
        summary = run_batch(inputs, out, config)
        for line in summary.lines():
            print(line)
        job = summary.to_dict()
        items = job.pop("items")
        result = {
            "inputs": len(inputs),
            "copies": args.copies,
            "loop": args.loop,
            "max_frames": args.max_frames,
            "chunk_frames": "auto" if args.chunk_frames is None else args.chunk_frames,
            "model_options": asdict(config.model),
            "job": job,
            "per_input": [
                {
                    "input": Path(i["input"]).name,
                    "frames": i["frames"],
                    "fps": round(i["frames"] / i["wall_s"], 2) if i["wall_s"] else 0.0,
                }
                for i in items
            ],
            "targets": {"fps_min": TARGET_FPS, "met": summary.frames_per_s >= TARGET_FPS},
        }
        if args.baseline:
            result["baseline_single_process"] = base = _baseline(inputs, args.max_frames, args, tmp)
            print(
                f"single process, one input after another: {base['frames']} frames in {base['wall_s']:.1f} s = "
                f"{base['frames_per_s']:.1f} frames/s"
            )
    return result
