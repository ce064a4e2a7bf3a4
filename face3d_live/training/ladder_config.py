"""The ladder's training settings and their command-line flags.

Kept apart from ``lightweight`` (which imports torch) so that `face3d-live optimize` can declare its flags
without loading torch for every CLI command.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LadderConfig:
    ratio: float = 0.5  # fraction of channels pruned per layer
    round_to: int = 16
    batch: int = 256
    distill_minutes: float = 4.0
    distill_steps: int = 0  # 0: from minutes
    distill_lr: float = 6e-4
    # the AFLW-21 ground-truth term pulls the student away from the teacher: kept small, since the
    # ladder's quality targets are fidelity to the original (ΔNME, vertex distance, render SSIM)
    manual_weight: float = 0.1
    qat_minutes: float = 1.5
    qat_steps: int = 0
    qat_lr: float = 3e-5
    calib_batches: int = 8
    calib_batch: int = 64

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        """The training flags shared by `face3d-live optimize` and this module's entry point."""
        p.add_argument(
            "--ratio",
            type=float,
            default=cls.ratio,
            help=f"fraction of channels pruned per layer ({cls.ratio})",
        )
        p.add_argument("--distill-minutes", type=float, default=cls.distill_minutes)
        p.add_argument("--distill-steps", type=int, default=0, help="fixed steps (overrides minutes)")
        p.add_argument("--qat-minutes", type=float, default=cls.qat_minutes)
        p.add_argument("--qat-steps", type=int, default=0, help="fixed steps (overrides minutes)")
        p.add_argument("--batch", type=int, default=cls.batch)
        p.add_argument(
            "--manual-weight",
            type=float,
            default=cls.manual_weight,
            help=f"weight of the AFLW ground-truth term (default {cls.manual_weight})",
        )
        p.add_argument(
            "--distill-lr",
            type=float,
            default=cls.distill_lr,
            help=f"distillation learning rate ({cls.distill_lr})",
        )
        p.add_argument("--qat-lr", type=float, default=cls.qat_lr, help=f"QAT learning rate ({cls.qat_lr})")
        p.add_argument(
            "--from-lite", type=Path, default=None, help="skip pruning + distillation: QAT this r50-lite file"
        )

    @classmethod
    def from_args(cls, args) -> LadderConfig:
        """From the flags of :meth:`add_arguments`."""
        return cls(
            ratio=args.ratio,
            batch=args.batch,
            distill_minutes=args.distill_minutes,
            distill_steps=args.distill_steps,
            qat_minutes=args.qat_minutes,
            qat_steps=args.qat_steps,
            manual_weight=args.manual_weight,
            distill_lr=args.distill_lr,
            qat_lr=args.qat_lr,
        )
