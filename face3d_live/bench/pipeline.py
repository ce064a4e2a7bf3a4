"""`face3d-live bench pipeline`: frames/s and per-stage latency of the file pipeline (decode included),
against MediaPipe's own `solutions.face_mesh` video mode on the same file in the same run."""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

NAME = "pipeline"
HELP = "pipeline frames/s and per-stage latency vs mediapipe's own face mesh on the same video"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from face3d_live.training.data import default_data_dir

    default = default_data_dir() / "videos" / "WolfgangLanger_Pexels.mp4"
    p.add_argument(
        "--source", default=str(default) if default.exists() else "demo", help="video file (or 'demo')"
    )
    p.add_argument("--model", default=None, help="face model (default: r50 on a CUDA GPU, else r50-int8)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--rounds", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--max-faces", type=int, default=1, help="faces tracked (mediapipe's default is 1)")
    p.add_argument("--frames", type=int, default=None, help="limit frames per round (demo defaults to 300)")
    p.add_argument("--no-mediapipe", action="store_true", help="skip the mediapipe reference")


def _ours(args: argparse.Namespace) -> dict:
    from face3d_live.capture import open_source
    from face3d_live.detect.tracker import TrackerConfig
    from face3d_live.models.registry import default_model
    from face3d_live.pipeline.offline import run_offline
    from face3d_live.reconstructor import Reconstructor

    args.model = args.model or default_model()
    rec = Reconstructor(args.model, args.backend, tracker=TrackerConfig(max_faces=args.max_faces))
    rounds = []
    try:
        for _ in range(args.rounds):
            rec.reset()
            with open_source(args.source, demo_frames=args.frames or 300) as src:
                s = run_offline(src, rec, max_frames=args.frames, progress=False)
            rounds.append(
                {
                    "fps": s.fps,
                    "frames": s.frames,
                    "frames_with_face": s.frames_with_face,
                    "detector_runs": rec.tracker.detector_runs,
                    "stage_median_ms": s.stage_median_ms(),
                }
            )
            rec.tracker.detector_runs = 0
    finally:
        rec.close()
    return _combine(rounds)


def _mediapipe(args: argparse.Namespace) -> dict:
    import mediapipe as mp

    from face3d_live.capture import open_source

    rounds = []
    for _ in range(args.rounds):
        mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=args.max_faces)
        n = found = 0
        with open_source(args.source, demo_frames=args.frames or 300) as src:
            t0 = time.perf_counter()
            while args.frames is None or n < args.frames:
                frame = src.read()  # same decoder (cv2) and BGR→RGB conversion as ours
                if frame is None:
                    break
                res = mesh.process(frame.image)
                found += res.multi_face_landmarks is not None
                n += 1
            wall = time.perf_counter() - t0
        mesh.close()
        rounds.append({"fps": n / wall, "frames": n, "frames_with_face": found})
    return _combine(rounds)


def _combine(rounds: list[dict]) -> dict:
    out = {"fps_median": float(np.median([r["fps"] for r in rounds])), "rounds": rounds}
    if "stage_median_ms" in rounds[0]:
        stages = rounds[0]["stage_median_ms"].keys()
        out["stage_median_ms"] = {
            k: float(np.median([r["stage_median_ms"][k] for r in rounds])) for k in stages
        }
    return out


def run(args: argparse.Namespace) -> dict:
    ours = _ours(args)
    result = {"source": args.source, "model": args.model, "rounds": args.rounds, "ours": ours}
    line = f"face3d_live ({args.model}): {ours['fps_median']:.1f} frames/s (median of {args.rounds})"
    print(line)
    print("  stage medians (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in ours["stage_median_ms"].items()))
    if not args.no_mediapipe and importlib.util.find_spec("mediapipe") is None:
        print(
            "mediapipe reference skipped: mediapipe is not installed; "
            "pip install 'face3d-live[teacher]' (Python 3.10-3.12), or pass --no-mediapipe"
        )
        result["mediapipe_face_mesh"] = None
    elif not args.no_mediapipe:
        ref = _mediapipe(args)
        result["mediapipe_face_mesh"] = ref
        result["speed_ratio"] = ours["fps_median"] / ref["fps_median"]
        print(f"mediapipe solutions.face_mesh: {ref['fps_median']:.1f} frames/s (median of {args.rounds})")
        print(f"ratio: {result['speed_ratio']:.2f}x")
    return result
