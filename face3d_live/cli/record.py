"""`face3d-live record INPUT --out FILE.glb`: record a performance as a game/VR asset.

`--rig arkit` writes every tracked face as a personal ARKit rig (52 named morph targets animated by the
blendshapes, head pose on the node); `--format livelink-csv` writes Live Link Face CSV takes.
`face3d-live record --recover DIR [--out FILE]` rebuilds the asset from the journal a killed
recording left behind.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from face3d_live.cli.options import add_model_options, reconstructor_from_args

SUFFIX_FORMAT = {".glb": "glb", ".npz": "npz", ".csv": "livelink-csv"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record",
        help="record a video/image as an animated GLB (morph targets + head pose + texture), OBJ sequence or NPZ",
        description="Frames stream to OUT.journal/ as they arrive (crash safe); the asset is built at the end. "
        "Ctrl-C stops early and still writes the asset; after a crash use --recover OUT.journal.",
    )
    p.add_argument("input", nargs="?", help="video file, image, folder of images, camera index or 'demo'")
    p.add_argument("--out", type=Path, help="output: FILE.glb, FILE.npz or a folder for --format obj")
    p.add_argument("--recover", type=Path, metavar="DIR", help="build the asset from a left-over journal DIR")
    p.add_argument(
        "--format",
        choices=("glb", "obj", "npz", "livelink-csv"),
        help="default: from --out's suffix (.glb, .npz, .csv = livelink-csv, none = obj)",
    )
    p.add_argument(
        "--rig",
        choices=("none", "arkit"),
        default=None,
        help="arkit: GLB with every face as its own node: 52 ARKit-named morph targets (the learned rig on "
        "the person's neutral face) animated by the blendshapes (default none: a morph target per frame)",
    )
    p.add_argument(
        "--texture-size", type=int, default=None, help="texture side in px, ≤ 4096; 0 = none (2048)"
    )
    p.add_argument("--texture-format", choices=("auto", "jpeg", "png"), default=None, help="default auto")
    p.add_argument(
        "--texture-baker", choices=("auto", "gl", "cpu"), default=None, help="auto: GL (EGL) when available"
    )
    p.add_argument("--jpeg-quality", type=int, default=None, help="1…100 (90)")
    p.add_argument(
        "--keyframe-tolerance",
        type=float,
        default=None,
        metavar="MM",
        help="new morph target only when a vertex moved more than MM millimetres (0 = every frame)",
    )
    p.add_argument("--quantize", action="store_true", default=None, help="KHR_mesh_quantization (smaller)")
    p.add_argument("--interpolation", choices=("linear", "step"), default=None, help="default linear")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--journal", type=Path, default=None, help="journal folder (default OUT.journal)")
    p.add_argument("--keep-journal", action="store_true", help="keep the journal after a successful write")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_options(p)
    p.set_defaults(func=run)


def _config(args: argparse.Namespace, base: dict | None = None):
    from face3d_live.record import RecordConfig

    values = dict(base or {})
    fmt = args.format
    if fmt is None and args.out is not None:
        fmt = SUFFIX_FORMAT.get(args.out.suffix.lower(), "obj" if args.out.suffix == "" else "glb")
    flags = {
        "format": fmt,
        "texture_size": args.texture_size,
        "texture_format": args.texture_format,
        "texture_baker": args.texture_baker,
        "jpeg_quality": args.jpeg_quality,
        "keyframe_tolerance_mm": args.keyframe_tolerance,
        "quantize": args.quantize,
        "interpolation": args.interpolation,
        "rig": args.rig,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.rig is None and values.get("format", "glb") != "glb":
        values["rig"] = "none"  # e.g. --recover of a rig take as livelink-csv: the rig applies to GLB only
    return RecordConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from face3d_live.errors import ConfigError

    if args.recover is not None:
        return _recover(args)
    if not args.input or args.out is None:
        raise ConfigError("record needs INPUT and --out FILE (or --recover DIR)")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be ≥ 1, got {args.max_frames}")
    config = _config(args)
    return _record(args, config)


def _recover(args: argparse.Namespace) -> int:
    from face3d_live.record import read_journal, recover

    header = read_journal(args.recover).header
    config = _config(args, header.get("config"))
    summary = recover(args.recover, args.out, config)
    print(f"recovered {_describe(summary, config)} from {args.recover} (journal kept)")
    return 0


def _record(args: argparse.Namespace, config) -> int:
    from tqdm import tqdm

    from face3d_live.capture import open_source
    from face3d_live.record import SequenceWriter

    if args.input == "demo" and args.max_frames is None:
        args.max_frames = 300  # the demo source never ends by itself
    with open_source(args.input, demo_frames=args.max_frames) as source:
        total = source.frame_count
        if args.max_frames is not None:
            total = min(total, args.max_frames) if total else args.max_frames
        writer = SequenceWriter(
            args.out,
            config,
            journal_dir=args.journal,
            fps=None if source.live else source.fps,
            keep_journal=args.keep_journal,
            source=str(args.input),
        )
        with reconstructor_from_args(args, still=source.still) as rec, writer:
            bar = tqdm(total=total, unit="frame", disable=args.no_progress, desc="record", leave=False)
            t0, n = time.perf_counter(), 0
            try:
                for frame in source:
                    if source.still:
                        faces = rec.reconstruct(frame.image)
                    else:
                        faces = rec.track(frame.image, frame.timestamp_s)
                    writer.write(frame.frame_id, frame.timestamp_s, faces, image=frame.image)
                    n += 1
                    bar.update(1)
                    if args.max_frames is not None and n >= args.max_frames:
                        break
            except KeyboardInterrupt:
                bar.write("stopping: writing what was recorded")
            finally:
                bar.close()
        wall = time.perf_counter() - t0  # includes building the asset
        summary = writer.summary
    speed = f"{n / wall:.1f} fps" if wall > 0 else "-"
    rt = summary.get("duration_s", 0) / wall if wall > 0 else 0
    print(f"recorded {_describe(summary, config)} in {wall:.1f} s ({speed}, {rt:.1f}× real time)")
    return 0


def _describe(summary: dict, config) -> str:
    parts = [f"{summary['frames']} frames ({summary.get('duration_s', 0):.2f} s) → {summary['path']}"]
    if "paths" in summary and len(summary["paths"]) > 1:
        parts[0] += " … " + ", ".join(str(p) for p in summary["paths"][1:])
    if summary.get("rig"):
        n = summary["tracks"]
        parts.append(f"{n} face{'s' if n != 1 else ''} × 52 ARKit shapes")
    elif "rows" in summary:
        parts.append(f"{summary['tracks']} Live Link take(s), {sum(summary['rows'])} rows")
    elif "targets" in summary:
        parts.append(f"{summary['targets']} morph targets")
    size = summary["bytes"]
    parts.append(f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB")
    if config.texture_size and config.format != "livelink-csv":
        parts.append(f"texture {config.texture_size}²")
    if config.quantize and config.format == "glb":
        parts.append("quantised")
    return ", ".join(parts)
