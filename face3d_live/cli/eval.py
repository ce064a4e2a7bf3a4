"""`face3d-live eval`: held-out AFLW NME per |yaw| bin for r50 and the teacher side by side (JSON out)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from face3d_live.training.data import default_data_dir

    p = sub.add_parser("eval", help="NME of the 21 AFLW points on the held-out split, r50 vs the teacher")
    p.add_argument(
        "--data", type=Path, default=default_data_dir(), help="shared data folder (default ../shared/data)"
    )
    p.add_argument(
        "--models", default="r50,mediapipe", help="comma-separated model names (default r50,mediapipe)"
    )
    p.add_argument("--backend", default="auto", help="backend for the r50 models (default auto)")
    p.add_argument("--limit", type=int, default=0, help="first N held-out crops only (0 = all)")
    p.add_argument(
        "--box",
        choices=("crop", "inner"),
        default="crop",
        help="given box: the whole crop (first pass sees it ×1.5) or its central 2/3 (first pass = the crop)",
    )
    p.add_argument("--json", type=Path, default=Path("eval-aflw.json"), help="write the result here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from face3d_live.training.evaluate import EvalConfig, evaluate

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    result = evaluate(
        args.data, EvalConfig(models=models, backend=args.backend, limit=args.limit, box=args.box)
    )
    keys = ["nme_0_30", "nme_30_60", "nme_60_90", "nme_mean", "failure_rate", "median_ms_per_image"]
    print(f"held-out AFLW crops: {result['n']}")
    print(f"{'model':<12}" + "".join(f"{k:>20}" for k in keys))
    for name, r in result["models"].items():
        print(f"{name:<12}" + "".join(f"{str(r[k]):>20}" for k in keys))
    if "r50_vs_teacher_vertex_distance_pct" in result:
        print("r50 ↔ teacher mean vertex distance (% of box):", result["r50_vs_teacher_vertex_distance_pct"])
        print("r50 beats the teacher in every bin and in failures:", result["r50_beats_teacher"])
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0
