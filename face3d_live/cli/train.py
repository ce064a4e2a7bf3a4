"""`face3d-live train`: label a data folder with both teachers (cached), fit the point maps, train face3d-r50.

Retraining on other data is one command: ``face3d-live train --data FOLDER`` where FOLDER holds tar
shards and/or folders of face images (AFLW label files beside them are used when present). The teachers
(MediaPipe's Face Landmarker bundle for the 478 points, 3DDFA_V2 for the 68 points) are read from
../shared/teachers (or $FACE3D_TEACHERS); an accelerator machine without them trains from ``--packed``
parts made here with ``--pack``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from face3d_live.errors import ConfigError

DEFAULT_CACHE = Path(".cache") / "teacher"
DEFAULT_RUN = Path(".cache") / "run"


def register(sub: argparse._SubParsersAction) -> None:
    from face3d_live.training.data import default_data_dir

    p = sub.add_parser("train", help="teacher-label face images and train face3d-r50 (resumable)")
    p.add_argument(
        "--data",
        type=Path,
        default=default_data_dir(),
        help="tar shards / image folders (default: ../shared/data)",
    )
    p.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="teacher label cache (default .cache/teacher)"
    )
    p.add_argument(
        "--run-dir", type=Path, default=DEFAULT_RUN, help="checkpoints and logs (resumes from here)"
    )
    p.add_argument("--out", type=Path, default=None, help="write the trained FP16 safetensors here")
    p.add_argument("--label-only", action="store_true", help="only teacher-label the data (and fit the map)")
    p.add_argument(
        "--pack",
        type=Path,
        default=None,
        help="write the labelled data as ≤58 MB parts (WebP + compact labels) into this folder and stop",
    )
    p.add_argument(
        "--packed",
        type=Path,
        nargs="+",
        default=None,
        help="train from parts written by --pack (no labelling)",
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from a trained r50 file (v1: new heads blended from its mesh)",
    )
    p.add_argument("--workers", type=int, default=2, help="teacher labelling processes")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget (sets the step count)")
    p.add_argument("--steps", type=int, default=0, help="fixed step count (overrides --minutes)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument(
        "--limit", type=int, default=0, help="use only the first N images of each source (smoke runs)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling, augmentation, init)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate the held-out split every N steps")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --run-dir")
    p.add_argument("--fit-map", action="store_true", help="refit the AFLW-21 → mesh map from the data")
    p.add_argument(
        "--fit-blend", action="store_true", help="refit the 68-point and iris → mesh blends from the data"
    )
    p.add_argument(
        "--no-label", action="store_true", help="use cached labels only (a machine without mediapipe)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from face3d_live.training import pipeline, points21
    from face3d_live.training.pack import load_parts, pack_parts
    from face3d_live.training.train import TrainConfig, Trainer, export_fp16

    log = logging.getLogger("face3d_live.train")
    if args.packed:
        data = load_parts(args.packed)
    else:
        if not args.no_label:
            pipeline.label_all_v2(args.data, args.cache, limit=args.limit)
        data = pipeline.load_all_v2(args.data, args.cache, limit=args.limit)
        if args.pack is not None:
            pipeline.fit_blends(data)  # ships as assets/blend68.npz: fitted where the data lives
            for path in pack_parts(data, args.pack):
                print(path)
            return 0
    W = pipeline.fit_map(data) if args.fit_map or not points21.MAP_PATH.exists() else points21.load_mapping()
    W68, W_iris = pipeline.fit_blends(data) if args.fit_blend else pipeline.load_blends()
    if args.label_only:
        return 0
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.batch < 2:
        raise ConfigError("--batch must be at least 2")
    cfg = TrainConfig(batch=args.batch, lr=args.lr, steps=args.steps, minutes=args.minutes, seed=args.seed)
    trainer = Trainer(cfg, data, W, args.run_dir, device, W68=W68, init=args.init, W_iris=W_iris)
    trainer.run(resume=not args.fresh, eval_every=args.eval_every)
    result = trainer.evaluate()
    print(json.dumps({"step": trainer.step, "held_out": result}, indent=1))
    (Path(args.run_dir) / "eval.json").write_text(json.dumps(result, indent=1))
    out = args.out or Path(args.run_dir) / "face3d-r50.safetensors"
    export_fp16(trainer.ema, out, {"steps": trainer.step, "held_out_nme": json.dumps(result)})
    log.info("wrote %s", out)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m face3d_live.cli.train``) for a training machine without the GUI deps."""
    parser = argparse.ArgumentParser(prog="face3d-live")
    register(parser.add_subparsers())
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
