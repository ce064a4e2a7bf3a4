"""Shared command-line options: model, backend, tracking and smoothing (flags → typed configs)."""

from __future__ import annotations

import argparse

from face3d_live.geometry.one_euro import OneEuroConfig


def add_model_options(p: argparse.ArgumentParser) -> None:
    from face3d_live.models.registry import CPU_MODEL, DEFAULT_MODEL, MODELS

    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        choices=sorted(MODELS),
        help=f"face model (default {DEFAULT_MODEL} on a CUDA GPU, else {CPU_MODEL} on onnxruntime)",
    )
    g.add_argument("--backend", default="auto", help="inference backend: auto, torch, onnxruntime, tensorrt")
    g.add_argument("--max-faces", type=int, default=4, help="faces tracked at once (default 4)")
    g.add_argument(
        "--redetect-every",
        type=int,
        default=30,
        help="frames between detector runs while tracking (0 = only when lost)",
    )
    g.add_argument("--no-smooth", action="store_true", help="turn off One Euro temporal smoothing (video)")
    g.add_argument(
        "--min-cutoff", type=float, default=OneEuroConfig.min_cutoff, help="One Euro min cutoff, Hz"
    )
    g.add_argument("--beta", type=float, default=OneEuroConfig.beta, help="One Euro speed coefficient")
    g.add_argument(
        "--no-flip",
        action="store_true",
        help="photos: the final pass without averaging with the mirrored crop (2 model runs a face instead "
        "of 3, slightly less accurate; video never flips)",
    )


def add_photo_options(p: argparse.ArgumentParser, service: bool = False) -> None:
    """Photos' passes (``process``, ``serve``): ``--passes``, and ``--first-pass`` (a lighter model places the
    final crop). ``service``: one pass by default (two with ``--first-pass``), ``ModelOptions.from_args``."""
    from face3d_live.models.registry import MODELS

    if service:  # None: ModelOptions.from_args picks one pass, two with --first-pass
        default = None
        what = (
            "default 1 (2 with --first-pass): through the detector, as here, one pass measured the same "
            "held-out AFLW error as two (r50 3.662 / 3.655, r50-int8 3.964 / 4.091) for one model call a "
            "photo instead of two; 2 = a first pass places the final crop (README, Python API)"
        )
    else:
        default = 2
        what = (
            "2 (default) = a first pass places the final crop; 1 = the final pass straight from the "
            "detection, one model call a photo instead of two (held-out AFLW: the same mean error, better for "
            "turned faces, up to 0.14 worse below |yaw| 60; README, Python API)"
        )
    p.add_argument("--passes", type=int, choices=(1, 2), default=default, help=f"photos: {what}")
    p.add_argument(
        "--first-pass",
        default=None,
        choices=sorted(MODELS),
        help="photos: the model whose first pass places the final crop (default: --model itself). With --model"
        " r50, r50-int8 or r50-lite measured the same held-out AFLW error for a third less CPU time a photo"
        " (README, Python API)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Not a command: shared options only (the CLI discovers every module in this package)."""


def reconstructor_from_args(args: argparse.Namespace, still: bool = False):
    from face3d_live.models.registry import default_model
    from face3d_live.scale.config import ModelOptions  # plain dataclasses: no Ray

    return ModelOptions.from_args(args).reconstructor(args.model or default_model(), still)
