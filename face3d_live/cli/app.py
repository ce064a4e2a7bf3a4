"""`face3d-live app`: the live window (camera or file → 3D face, HUD, alerts, recording)."""

from __future__ import annotations

import argparse
from pathlib import Path

from face3d_live.cli.options import add_model_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="the live app: camera/video → tracked mesh, textured 3D face or avatar, HUD, alerts, streaming",
    )
    p.add_argument(
        "--source",
        default="0",
        help="camera index, video/image/folder path, or 'demo' (default 0; no camera → demo)",
    )
    add_model_options(p)
    p.add_argument(
        "--texture-size",
        type=int,
        default=None,
        choices=(256, 512, 1024, 2048),
        help="UV texture side (default: 1024 on a GPU, 512 on a CPU rasteriser)",
    )
    p.add_argument(
        "--texture-hz",
        type=float,
        default=None,
        help="texture bakes per second (default: 15 on a GPU, 4 on a CPU)",
    )
    p.add_argument("--fps", type=float, default=None, help="file playback rate (default: the file's own)")
    p.add_argument("--record-dir", type=Path, default=Path("recordings"), help="where Record writes takes")
    p.add_argument("--record-format", default="glb", choices=("glb", "npz", "obj"), help="recording format")
    p.add_argument("--snapshot-dir", type=Path, default=Path("snapshots"), help="where Snapshot writes PNGs")
    p.add_argument(
        "--frames", type=int, default=None, help="close after this many frames shown (scripted runs)"
    )
    p.add_argument(
        "--screenshot", type=Path, default=None, help="with --frames: save both views to this PNG first"
    )
    p.add_argument(
        "--view",
        default="3d",
        choices=("3d", "avatar"),
        help="right-hand pane at start: the textured 3D face or the avatar with the blendshape bars",
    )
    p.add_argument(
        "--vmc", metavar="HOST:PORT", default=None, help="stream to a VMC receiver (e.g. 127.0.0.1:39539)"
    )
    p.add_argument(
        "--livelink",
        metavar="HOST:PORT",
        default=None,
        help="stream to Live Link Face (e.g. 127.0.0.1:11111)",
    )
    p.add_argument(
        "--virtual-camera",
        action="store_true",
        help="send the shown view to a virtual camera (pip install 'face3d-live[vcam]'; v4l2loopback or OBS)",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from face3d_live.detect.tracker import TrackerConfig
    from face3d_live.geometry.one_euro import OneEuroConfig
    from face3d_live.models.registry import default_model
    from face3d_live.ui.config import AppConfig, OutputConfig
    from face3d_live.ui.scene import SceneConfig

    return AppConfig(
        source=str(args.source),
        model=args.model or default_model(),
        backend=args.backend,
        tracker=TrackerConfig(max_faces=args.max_faces, redetect_every=args.redetect_every),
        smoothing=None if args.no_smooth else OneEuroConfig(min_cutoff=args.min_cutoff, beta=args.beta),
        scene=SceneConfig(texture_size=args.texture_size, texture_hz=args.texture_hz),
        pace_fps=args.fps,
        record_dir=args.record_dir,
        record_format=args.record_format,
        snapshot_dir=args.snapshot_dir,
        quit_after_frames=args.frames,
        screenshot=args.screenshot,
        view=args.view,
        output=OutputConfig(vmc=args.vmc, livelink=args.livelink, virtual_camera=args.virtual_camera),
    )


def run(args: argparse.Namespace) -> int:
    from face3d_live.ui.app import run_app

    return run_app(config_from_args(args))
