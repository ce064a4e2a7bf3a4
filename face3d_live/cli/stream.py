"""`face3d-live stream INPUT [--vmc HOST:PORT] [--livelink HOST:PORT]`: drive avatar apps over UDP."""

from __future__ import annotations

import argparse
import time

from face3d_live.cli.options import add_model_options, reconstructor_from_args
from face3d_live.stream.address import DEFAULT_VMC


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stream",
        help="stream blendshapes and head/eye rotation to avatar apps (VMC, Live Link Face)",
        description="Reconstructs INPUT and sends every frame over UDP: VMC (OSC; VSeeFace, VNyan, Warudo, "
        "EVMC4U) and/or Live Link Face (Unreal). With neither --vmc nor --livelink: VMC to "
        f"{DEFAULT_VMC}. Ctrl+C stops a camera stream and prints the summary.",
    )
    p.add_argument("input", help="video file, image file, folder of images, camera index, or 'demo'")
    p.add_argument("--vmc", metavar="HOST:PORT", default=None, help=f"VMC receiver (VSeeFace: {DEFAULT_VMC})")
    p.add_argument(
        "--livelink", metavar="HOST:PORT", default=None, help="Live Link Face receiver (Unreal: HOST:11111)"
    )
    p.add_argument("--subject", default="face3d", help="Live Link subject name of the first face (face3d)")
    p.add_argument(
        "--no-mirror",
        action="store_true",
        help="VMC: keep the subject's sides (default: mirror like VSeeFace)",
    )
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="pace files at their frame rate (default: as fast as possible; cameras and demo are live)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from face3d_live.capture import open_source
    from face3d_live.stream.session import stream_source
    from face3d_live.stream.streamer import FaceStreamer

    vmc = args.vmc if (args.vmc or args.livelink) else DEFAULT_VMC
    # the demo stands in for a camera: paced like one
    with (
        FaceStreamer(
            vmc=vmc, livelink=args.livelink, subject=args.subject, mirror=not args.no_mirror
        ) as streamer,
        open_source(args.input, realtime_demo=True, demo_frames=args.max_frames) as source,
        reconstructor_from_args(args, still=source.still) as rec,
    ):
        total = (
            source.frame_count
            if args.max_frames is None
            else min(args.max_frames, source.frame_count or args.max_frames)
        )
        bar = tqdm(
            total=total, unit="frame", desc=f"stream {source.name}", disable=args.no_progress, leave=False
        )
        last = [0.0]

        def progress(frame, summary) -> None:
            bar.update()
            now = time.monotonic()
            if now - last[0] >= 0.5:
                last[0] = now
                s = streamer.stats
                bar.set_postfix_str(f"{s['packets_sent']} packets, {s['dropped']} dropped", refresh=False)

        try:
            summary = stream_source(
                source, rec, streamer, max_frames=args.max_frames, realtime=args.realtime, on_frame=progress
            )
        finally:
            bar.close()
        status = streamer.status
    end = "interrupted" if summary.interrupted else "done"
    print(
        f"stream {end}: {summary.frames} frames ({summary.frames_with_face} with a face, "
        f"{summary.corrupt_frames} corrupt skipped) in {summary.wall_s:.1f} s = {summary.fps:.1f} frames/s; "
        f"{status}"
    )
    return 0
