"""`face3d-live process INPUT --out DIR`: reconstruct every frame of a video, image or folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from face3d_live.cli.options import add_model_options, reconstructor_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "process",
        help="reconstruct a video, image or folder of images; writes one NPZ per frame",
        description="Writes OUT/frames/frame_NNNNNN.npz (vertices, landmarks68, iris, gaze, ARKit-52 blendshapes, pose, "
        "bbox, score, timestamps, frame index), OUT/mesh.npz (triangles, uv), OUT/summary.json, and with --obj one OBJ per face.",
    )
    p.add_argument("input", help="video file, image file, folder of images, camera index, or 'demo'")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--obj", action="store_true", help="also write an OBJ mesh per face and frame")
    p.add_argument(
        "--max-frames", type=int, default=None, help="stop after N frames (needed for camera/demo)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from face3d_live.capture import open_source
    from face3d_live.pipeline.frame_writer import FrameResultWriter
    from face3d_live.pipeline.offline import run_offline

    max_frames = args.max_frames
    if args.input == "demo" and max_frames is None:
        max_frames = 300
    with open_source(args.input, demo_frames=max_frames) as source:
        if source.live and max_frames is None:
            max_frames = 300
        with reconstructor_from_args(args, still=source.still) as rec:
            model_name = rec.model.name
            writer = FrameResultWriter(args.out, write_obj_files=args.obj)
            summary = run_offline(
                source, rec, writer.write, max_frames=max_frames, progress=not args.no_progress
            )
    writer.close(
        {
            "input": str(args.input),
            "model": model_name,
            "frames": summary.frames,
            "frames_with_face": summary.frames_with_face,
            "frames_without_face": summary.frames - summary.frames_with_face,
            "faces": summary.faces,
            "corrupt_frames_skipped": summary.corrupt_frames,
            "wall_s": summary.wall_s,
            "fps": summary.fps,
            "stage_median_ms": summary.stage_median_ms(),
        }
    )
    print(f"{args.out}: {summary.line()}")
    return 0
