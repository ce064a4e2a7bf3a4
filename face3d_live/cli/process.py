"""`face3d-live process INPUT --out DIR`: reconstruct every frame of a video, image or folder.

With ``--ray``: ``process INPUTS… --out DIR --ray [auto|ADDRESS]`` runs a library job on Ray (face3d_live/scale):
any number of videos, image folders, list files or glob patterns, one ``DIR/NAME/`` each, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from face3d_live.cli.options import add_model_options, add_photo_options, reconstructor_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "process",
        help="reconstruct a video, image or folder of images; writes one NPZ per frame",
        description="Writes OUT/frames/frame_NNNNNN.npz (vertices, landmarks68, iris, gaze, ARKit-52 blendshapes, pose, "
        "bbox, score, timestamps, frame index), OUT/mesh.npz (triangles, uv), OUT/summary.json, and with --obj one OBJ per face.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video file, image file, folder of images, camera index, or 'demo'; with --ray: any number of "
        "videos, image folders, folders of videos, list files (.txt, one path a line) or glob patterns",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--obj", action="store_true", help="also write an OBJ mesh per face and frame")
    p.add_argument(
        "--max-frames", type=int, default=None, help="stop after N frames (needed for camera/demo)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_options(p)
    add_photo_options(p)
    _add_ray_options(p)
    p.set_defaults(func=run)


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out on Ray (with --ray; pip install 'face3d-live[ray]')")
    g.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="ADDRESS",
        help="run INPUTS as a library job on Ray: auto (RAY_ADDRESS if set, else a local instance) or a "
        "cluster's address (HOST:6379, ray://HOST:10001); writes DIR/NAME/ per input and DIR/job-summary.json",
    )
    g.add_argument("--workers", type=int, default=None, help="input workers (default: one per CPU)")
    g.add_argument(
        "--model-actors",
        type=int,
        default=None,
        help="model actors that take every worker's crops (default 0: each worker owns its model, on a share of "
        "the GPUs where there are GPUs: measured faster on the H200)",
    )
    g.add_argument(
        "--tasks-per-worker",
        type=int,
        default=None,
        help="tasks a worker runs at once (default: 4 with a GPU model, which hides its round trips; else 1)",
    )
    g.add_argument(
        "--chunk-frames",
        type=int,
        default=None,
        help="split longer videos into chunks of N frames (0 = keep whole; default: auto, chunks only when the "
        "job has fewer tasks than workers, about two per worker, at least 300 frames)",
    )
    g.add_argument(
        "--chunk-overlap",
        type=int,
        default=None,
        help="frames decoded before a chunk to settle tracking (30)",
    )
    g.add_argument("--photo-batch", type=int, default=None, help="photos per task, across inputs (32)")
    g.add_argument(
        "--glb",
        action="store_true",
        help="also a textured GLB per video (animated) and per photo (its largest face)",
    )
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    g.add_argument("--max-batch", type=int, default=None, help="crops per model-actor batch (64)")
    g.add_argument("--batch-wait-ms", type=float, default=None, help="batch gathering window, ms (2)")


_RAY_ONLY = (
    "workers",
    "model_actors",
    "tasks_per_worker",
    "chunk_frames",
    "chunk_overlap",
    "photo_batch",
    "num_cpus",
    "max_batch",
    "batch_wait_ms",
)


def run(args: argparse.Namespace) -> int:
    from face3d_live.errors import ConfigError

    if args.ray is not None:
        return _run_on_ray(args)
    used = [f"--{k.replace('_', '-')}" for k in _RAY_ONLY if getattr(args, k) is not None] + (
        ["--glb"] if args.glb else []
    )
    if used:
        raise ConfigError(f"{', '.join(used)} apply to library jobs: add --ray")
    if len(args.inputs) != 1:
        raise ConfigError(f"{len(args.inputs)} inputs given: several INPUTs run as a library job, add --ray")
    args.input = args.inputs[0]
    from face3d_live.capture import open_source
    from face3d_live.pipeline.frame_writer import FrameResultWriter
    from face3d_live.pipeline.offline import run_offline
    from face3d_live.scale.config import ModelOptions  # plain dataclasses: no Ray

    max_frames = args.max_frames
    if args.input == "demo" and max_frames is None:
        max_frames = 300
    with open_source(args.input, demo_frames=max_frames) as source:
        if source.live and max_frames is None:
            max_frames = 300
        with reconstructor_from_args(args, still=source.still) as rec:
            model_name = rec.model.name
            photo_passes = ModelOptions.from_args(args).photo_summary(source.still)
            writer = FrameResultWriter(args.out, write_obj_files=args.obj)
            summary = run_offline(
                source, rec, writer.write, max_frames=max_frames, progress=not args.no_progress
            )
    info = {**summary.to_dict(str(args.input), model_name), **photo_passes}
    writer.close(info)
    print(f"{args.out}: {summary.line()}")
    return 0


def _run_on_ray(args: argparse.Namespace) -> int:
    from face3d_live.scale.batch import JOB_SUMMARY, run_batch
    from face3d_live.scale.config import BatchConfig, ModelOptions

    inputs, address = list(args.inputs), args.ray
    if address != "auto" and Path(address).expanduser().exists():  # `--ray INPUT …`: --ray took an input
        inputs, address = [address, *inputs], "auto"
    given = {k: getattr(args, k) for k in _RAY_ONLY if getattr(args, k) is not None}
    config = BatchConfig(
        model=ModelOptions.from_args(args),
        max_frames=args.max_frames,
        obj=args.obj,
        glb=args.glb,
        ray_address=address,
        progress=not args.no_progress,
        **given,
    )
    summary = run_batch(inputs, args.out, config)
    for line in summary.lines():
        print(line)
    print(f"job summary: {args.out / JOB_SUMMARY}")
    return 1 if summary.failed else 0
