"""`face3d-live optimize`: the lightweighting ladder — prune, distil, QAT, export, build engines.

    face3d-live optimize                         # prune 50 %, distil, QAT on this machine's best device
    face3d-live optimize --pack .devcarry/ladder/data.npz   # small data pack for an accelerator machine
    face3d-live optimize --packed data.npz --ratio 0.5 --distill-minutes 4 --qat-minutes 1.5
    face3d-live optimize --packed data.npz --from-lite face3d-r50-lite.safetensors --qat-steps 250 --batch 16
    face3d-live optimize --export-only --cc 86,89,120       # ONNX of every rung + TensorRT-RTX engines

Rung files go to --out (default: the package's models/weights/): face3d-r50-lite.safetensors
(FP16 pruned + distilled FaceR50Slim with its widths) and face3d-r50-int8.safetensors (INT8 QAT).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from face3d_live.errors import ConfigError
from face3d_live.training.ladder_config import LadderConfig


def register(sub: argparse._SubParsersAction) -> None:
    from face3d_live.training.data import default_data_dir

    p = sub.add_parser(
        "optimize",
        help="lightweighting ladder: structured pruning + distillation, INT8 QAT, ONNX/engines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--teacher", type=Path, default=None, help="unpruned r50 weights (default: shipped)")
    p.add_argument("--data", type=Path, default=default_data_dir(), help="face data (default ../shared/data)")
    p.add_argument("--cache", type=Path, default=Path(".cache/teacher"), help="teacher label cache")
    p.add_argument(
        "--packed",
        type=Path,
        nargs="+",
        default=None,
        help="train on a data pack (from --pack) or `face3d-live train --pack` parts instead",
    )
    p.add_argument("--pack", type=Path, default=None, help="write a data pack here and stop")
    p.add_argument("--pack-mb", type=float, default=9.0, help="data pack size budget (default 9 MB)")
    LadderConfig.add_arguments(p)
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--out", type=Path, default=None, help="rung files here (default: models/weights/)")
    p.add_argument("--export-only", action="store_true", help="only export ONNX and build engines")
    p.add_argument("--cc", default="86,89,120", help="TensorRT-RTX targets ('' = build none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.ratio < 1:
        raise ConfigError(f"--ratio must be in (0, 1), got {args.ratio}")
    if args.batch < 2:
        raise ConfigError("--batch must be at least 2")
    if args.pack is not None:
        from face3d_live.training import pipeline
        from face3d_live.training.distill import pack_data

        data = pipeline.load_all_v2(args.data, args.cache)
        print(json.dumps(pack_data(data, args.pack, budget_mb=args.pack_mb)))
        return 0
    if not args.export_only:
        _train(args)
    print(json.dumps(export_rungs([c.strip() for c in args.cc.split(",") if c.strip()]), indent=1))
    return 0


def _train(args: argparse.Namespace) -> None:
    import torch

    from face3d_live.models.weights import WEIGHTS_DIR
    from face3d_live.training.lightweight import run_ladder
    from face3d_live.training.points21 import load_mapping
    from face3d_live.training.prune import load_r50_any

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.packed is not None:
        from face3d_live.training.pack import load_any

        data = load_any(args.packed)
    else:
        from face3d_live.training import pipeline

        pipeline.label_all_v2(args.data, args.cache)
        data = pipeline.load_all_v2(args.data, args.cache)
    cfg = LadderConfig.from_args(args)
    out = args.out or WEIGHTS_DIR
    teacher = load_r50_any(args.teacher)
    if args.from_lite is not None:
        from face3d_live.training.lightweight import run_qat
        from face3d_live.training.slim import load_slim

        report = run_qat(cfg, data, load_mapping(), teacher, load_slim(args.from_lite), out, device)
        print(json.dumps(report, indent=1, default=str))
        return
    report = run_ladder(cfg, data, load_mapping(), teacher, out, device)
    print(json.dumps({k: report[k] for k in ("prune", "total_s")}, indent=1, default=str))


def export_rungs(ccs: list[str]) -> dict:
    """ONNX of every rung (fp32, fp16, int8) into the engine cache, and TensorRT-RTX engines for ``ccs``."""
    from face3d_live.bench.ladder import RUNGS, build_engines, rung_files

    out = {}
    for key, (_, model, precision) in RUNGS.items():
        files = rung_files(key)
        onnx = Path(files.get("onnx_trt", files["onnx"]))
        out[key] = {"onnx": str(onnx), "onnx_mb": round(onnx.stat().st_size / 1e6, 2)}
        if ccs:
            out[key]["tensorrt_rtx"] = build_engines(onnx, model, precision, ccs)
    return out
