"""The lightweighting ladder, end to end: prune → distil → QAT → rung files (+ GPU latencies).

    original FP32 ─► structured pruning ─► distillation fine-tune ─► r50-lite (FP16 file; runs FP32/FP16)
                                                           └─► INT8 QAT fine-tune ─► r50-int8 (INT8 file)

``run_ladder`` does the training part on one device (a GPU for real runs; the CPU with a few steps
for tests). ``python -m face3d_live.training.lightweight`` is the accelerator-machine entry point
(it needs only torch, numpy, safetensors, opencv and torch-pruning there).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from face3d_live.training.dataset import TrainData
from face3d_live.training.ladder_config import LadderConfig
from face3d_live.training.rungs import INT8_FILE, LITE_FILE

log = logging.getLogger(__name__)


def run_ladder(
    cfg: LadderConfig,
    data: TrainData,
    W: np.ndarray,
    teacher: torch.nn.Module,
    out_dir: Path,
    device: str,
    after_lite: Callable[[torch.nn.Module], None] | None = None,
    student: torch.nn.Module | None = None,
) -> dict:
    """Prune ``teacher``, distil, QAT; writes face3d-r50-lite / -int8 .safetensors into ``out_dir``.
    With ``student`` (an already pruned r50-lite) pruning is skipped and its distillation continues."""
    from face3d_live.training.distill import DistillConfig, Distiller
    from face3d_live.training.prune import PruneConfig, prune_r50
    from face3d_live.training.slim import save_slim

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    report: dict = {"config": asdict(cfg), "device": device, "samples": len(data)}
    t0 = time.time()
    if student is None:
        slim, pr = prune_r50(teacher, PruneConfig(cfg.ratio, cfg.round_to))
        report["prune"] = pr.as_dict()
    else:
        slim = student.float().train()
        report["continued_from"] = "given r50-lite"

    dcfg = DistillConfig(
        batch=cfg.batch,
        lr=cfg.distill_lr,
        steps=cfg.distill_steps,
        minutes=cfg.distill_minutes,
        manual_weight=cfg.manual_weight,
    )
    work = Path(tempfile.mkdtemp(prefix="ladder-"))  # trainer checkpoints: not beside the rung files
    dist = Distiller(dcfg, data, W, work / "distill", slim, teacher, device)
    report["before_distill"] = dist.evaluate(dist.model.eval())
    dist.run(resume=False)
    report["distill"] = {"steps": dist.step, "history": dist.history[-3:], **dist.compare()}
    lite = dist.ema.float().eval()
    save_slim(lite, out_dir / LITE_FILE.name, ratio=str(cfg.ratio), steps=str(dist.step))
    log.info("distilled in %.0f s: %s", time.time() - t0, json.dumps(report["distill"]["student"]))
    _write(out_dir, report)  # a run cut short keeps what it finished
    if after_lite is not None:
        after_lite(lite)

    report.update(run_qat(cfg, data, W, teacher, lite, out_dir, device, work))
    report["total_s"] = round(time.time() - t0, 1)
    _write(out_dir, report)
    return report


def run_qat(
    cfg: LadderConfig,
    data: TrainData,
    W: np.ndarray,
    teacher: torch.nn.Module,
    lite: torch.nn.Module,
    out_dir: Path,
    device: str,
    work: Path | None = None,
) -> dict:
    """INT8 QAT of a distilled FaceR50Slim (calibrate on training crops, fine-tune through fake
    quantisation against the teacher); writes face3d-r50-int8.safetensors into ``out_dir``."""
    from face3d_live.training.distill import DistillConfig, Distiller
    from face3d_live.training.qat import QuantFaceR50, save_int8

    work = work or Path(tempfile.mkdtemp(prefix="ladder-"))
    report: dict = {}
    t1 = time.time()
    qmodel = QuantFaceR50(lite.float().eval()).to(device)
    qcfg = DistillConfig(
        batch=cfg.batch,
        lr=cfg.qat_lr,
        steps=cfg.qat_steps,
        minutes=cfg.qat_minutes,
        ema=0.99,
        manual_weight=cfg.manual_weight,
    )
    qat = Distiller(qcfg, data, W, work / "qat", qmodel, teacher, device, autocast=False)
    report["qat_calibration_images"] = qmodel.calibrate(
        qat.calibration_batches(cfg.calib_batches, cfg.calib_batch)
    )
    report["qat_before"] = qat.evaluate(qmodel.eval())  # = post-training quantisation (calibrated, no QAT)
    qat.run(resume=False)
    qfinal = qat.ema.eval()
    qfinal.freeze()
    report["qat"] = {"steps": qat.step, "history": qat.history[-3:], "student": qat.evaluate(qfinal)}
    save_int8(qfinal.cpu(), Path(out_dir) / INT8_FILE.name, ratio=str(cfg.ratio), qat_steps=str(qat.step))
    log.info("QAT in %.0f s: %s", time.time() - t1, json.dumps(report["qat"]["student"]))
    return report


def load_lite_any(path: Path) -> torch.nn.Module:
    """An r50-lite rung file; a v1 file (no iris / 68 heads) gets its head widened to v2 with the new rows as
    blends of its mesh rows (``train.init_from_trained``), ready to be distilled from a v2 teacher."""
    from face3d_live.errors import ModelError
    from face3d_live.models.weights import read_metadata
    from face3d_live.training.pipeline import load_blends
    from face3d_live.training.slim import FaceR50Slim, load_slim
    from face3d_live.training.train import head_blend, init_from_trained

    try:
        return load_slim(path)
    except ModelError as exc:
        if "v1 file" not in str(exc):
            raise
    from face3d_live.geometry.landmarks68 import blend_matrix

    W68, W_iris = load_blends()
    model = FaceR50Slim(json.loads(read_metadata(path).get("config") or "{}"))
    init_from_trained(model, path, head_blend(W68 if W68 is not None else blend_matrix(), W_iris))
    log.info("%s: v1 rung widened to the v2 head", path)
    return model


def _write(out_dir: Path, report: dict) -> None:
    (Path(out_dir) / "ladder-train.json").write_text(json.dumps(report, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    """Accelerator-machine entry point: packed data + teacher weights in, rung files + report out."""
    p = argparse.ArgumentParser(prog="python -m face3d_live.training.lightweight")
    p.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="training data parts (`face3d-live train --pack`) or one pack from distill.pack_data",
    )
    p.add_argument("--teacher", type=Path, default=None, help="r50 weights (default: the shipped file)")
    p.add_argument("--out", type=Path, required=True)
    LadderConfig.add_arguments(p)
    p.add_argument(
        "--continue-lite",
        type=Path,
        default=None,
        help="skip pruning: distil this r50-lite further, then QAT",
    )
    p.add_argument("--gpu-bench", action="store_true", help="also time the rungs with the torch backend")
    p.add_argument(
        "--qat-original",
        action="store_true",
        help="skip pruning + distillation: QAT the unpruned original (the INT8-only reference point)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from face3d_live.training.pack import load_any
    from face3d_live.training.points21 import load_mapping
    from face3d_live.training.prune import load_r50_any

    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_any(args.data)
    teacher = load_r50_any(args.teacher)
    cfg = LadderConfig.from_args(args)

    def gpu_bench(lite: torch.nn.Module) -> None:  # before QAT: the GPU numbers survive a cut-short run
        import copy

        from face3d_live.bench.ladder import torch_gpu_latency

        rows = torch_gpu_latency({"r50": copy.deepcopy(teacher), "r50-lite": copy.deepcopy(lite)})
        (args.out / "ladder-gpu.json").write_text(json.dumps(rows, indent=1))

    if args.from_lite is not None or args.qat_original:
        from face3d_live.training.slim import load_slim, to_slim

        args.out.mkdir(parents=True, exist_ok=True)
        start = to_slim(teacher) if args.qat_original else load_slim(args.from_lite)
        report = run_qat(cfg, data, load_mapping(), teacher, start, args.out, device)
        (args.out / "ladder-qat.json").write_text(json.dumps(report, indent=1, default=str))
        return 0
    use_bench = args.gpu_bench and device == "cuda"
    student = None
    if args.continue_lite is not None:
        student = load_lite_any(args.continue_lite)
    run_ladder(
        cfg, data, load_mapping(), teacher, args.out, device, gpu_bench if use_bench else None, student
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
