"""`face3d-live eval`: held-out AFLW NME per |yaw| bin for r50 and the teacher side by side (JSON out)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from face3d_live.models.registry import MODELS
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
        choices=("crop", "inner", "detect"),
        default="crop",
        help="given box: the whole crop (first pass sees it ×1.5) or its central 2/3 (first pass = the crop); "
        "detect: no box, the detector's (as process and serve do)",
    )
    p.add_argument(
        "--passes",
        type=int,
        choices=(1, 2),
        default=2,
        help="2 (default): a first pass places the final crop; 1: the final pass straight from the box",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/teacher"),
        help="training label caches for the v2 measures (68 points, iris, blendshapes; default .cache/teacher)",
    )
    p.add_argument("--no-videos", action="store_true", help="skip the blendshape agreement on the videos")
    p.add_argument(
        "--no-flip", action="store_true", help="the final pass without averaging with the mirrored crop"
    )
    p.add_argument(
        "--first-pass",
        default=None,
        choices=sorted(MODELS),
        help="the model whose first pass places the r50 models' final crop (default: the model itself)",
    )
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="skip 3DDFA_V2 on the same crops against the manual points (runs when its pack and torch are here)",
    )
    p.add_argument("--json", type=Path, default=Path("eval-aflw.json"), help="write the result here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from face3d_live.cli.bench import write_json
    from face3d_live.training.evaluate import EvalConfig, evaluate

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    cfg = EvalConfig(
        models=models,
        backend=args.backend,
        limit=args.limit,
        box=args.box,
        flip=not args.no_flip,
        first_pass=args.first_pass,
        passes=args.passes,
        videos=not args.no_videos,
        reference=not args.no_reference,
    )
    result = evaluate(args.data, cfg, cache_dir=args.cache)
    keys = ["nme_0_30", "nme_30_60", "nme_60_90", "nme_mean", "failure_rate", "median_ms_per_image"]
    print(f"held-out AFLW crops: {result['n']}")
    print(f"{'model':<12}" + "".join(f"{k:>20}" for k in keys))
    for name, r in result["models"].items():
        print(f"{name:<12}" + "".join(f"{str(r[k]):>20}" for k in keys))
    print("68 points vs the 16 manual AFLW points they share (NME %, [0,30] / (30,60] / (60,90] / all):")
    rows = {name: r["nme68_manual16"] for name, r in result["models"].items()}
    if "reference_3ddfa_v2" in result:
        rows["3DDFA_V2 (ref)"] = result["reference_3ddfa_v2"]["nme68_manual16"]
    for name, b in rows.items():
        print(f"  {name:<16}" + " / ".join(str(v) for v in b.values()))
    for name, r in result["models"].items():
        if "nme68" in r:
            print(
                f"{name}: 68-point NME vs 3D labels {r['nme68']}; iris error (% IOD) {r['iris_error_pct_iod']}"
            )
            b = r["blendshapes_crops"]
            print(f"{name}: blendshapes vs teacher, held-out crops: MAE {b['mae']}, median r {b['median_r']}")
        if r.get("blendshapes_videos"):
            b = r["blendshapes_videos"]["all"]
            print(f"{name}: blendshapes vs teacher, videos: MAE {b['mae']}, median r {b['median_r']}")
    if "r50_vs_teacher_vertex_distance_pct" in result:
        print("r50 ↔ teacher mean vertex distance (% of box):", result["r50_vs_teacher_vertex_distance_pct"])
        print("r50 beats the teacher in every bin and in failures:", result["r50_beats_teacher"])
    write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")
    return 0
