"""FaceR50Slim: FaceR50 with per-layer widths, the shape a structured-pruned face3d-r50 takes.

Channel pruning shrinks every convolution on its own (a bottleneck's two inner convolutions keep
different numbers of channels; every block of a stage shares one output width, because of the
residual adds), so the plain ``FaceR50(width)`` cannot describe it. This class can, from a small JSON
config saved beside the weights:

    {"stem": 32, "stages": [{"out": 128, "mid": [[32, 32], [32, 32], [32, 32]]}, ...]}

Parameter and buffer names are FaceR50's (``stem.0.weight``, ``layers.2.3.conv2.weight``, ``head.bias``…),
so the same state-dict tools, exports and backends serve both. Input/output as FaceR50:
(N, 3, 224, 224) float in [0, 1] → (N, 1639) (models/layout.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from face3d_live.errors import ModelError
from face3d_live.models.r50 import MEAN, OUTPUT_DIM, STD, Bottleneck, FaceR50, make_stem

ARCH = "FaceR50Slim"


class FaceR50Slim(nn.Module):
    """FaceR50 with explicit widths (see module docstring for ``config``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = check_config(config)
        stem = self.config["stem"]
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.stem = make_stem(stem)
        stages, in_ch = [], stem
        for i, stage in enumerate(self.config["stages"]):
            blocks = []
            for j, (mid1, mid2) in enumerate(stage["mid"]):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                blocks.append(Bottleneck(in_ch, mid1, stage["out"], stride, mid2=mid2, downsample=j == 0))
                in_ch = stage["out"]
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_ch, OUTPUT_DIM)

    forward = FaceR50.forward  # same modules by the same names: only the widths differ


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """A normalised copy of a width config, or ModelError saying what is wrong."""
    try:
        out = {
            "stem": int(config["stem"]),
            "stages": [
                {"out": int(s["out"]), "mid": [[int(a), int(b)] for a, b in s["mid"]]}
                for s in config["stages"]
            ],
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"bad FaceR50Slim width config {config!r} ({exc})") from None
    widths = (
        [out["stem"]]
        + [w for s in out["stages"] for m in s["mid"] for w in m]
        + [s["out"] for s in out["stages"]]
    )
    if not out["stages"] or any(w < 1 for w in widths) or any(not s["mid"] for s in out["stages"]):
        raise ModelError(f"bad FaceR50Slim width config {config!r}: empty stage or width < 1")
    return out


def widths_of(model: nn.Module) -> dict[str, Any]:
    """The width config of a FaceR50 or FaceR50Slim as it is now (e.g. after in-place pruning)."""
    return check_config(
        {
            "stem": model.stem[0].out_channels,
            "stages": [
                {
                    "out": stage[0].conv3.out_channels,
                    "mid": [[b.conv1.out_channels, b.conv2.out_channels] for b in stage],
                }
                for stage in model.layers
            ],
        }
    )


def to_slim(model: nn.Module) -> FaceR50Slim:
    """A FaceR50Slim holding ``model``'s weights (a FaceR50 pruned in place, or an unpruned one)."""
    slim = FaceR50Slim(widths_of(model))
    slim.load_state_dict(model.state_dict())  # same names; strict: a shape mismatch is a bug here
    return slim.train(model.training)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_slim(model: nn.Module, path: str | Path, **metadata: str) -> str:
    """Save as FP16 safetensors with the width config (models/weights.py format); returns the sha256."""
    from face3d_live.models.weights import save_weights

    return save_weights(path, model.state_dict(), arch=ARCH, config=widths_of(model), metadata=metadata)


def load_slim(path: str | Path) -> FaceR50Slim:
    """Rebuild a FaceR50Slim from its weights file (widths from the file), eval mode. ModelError if bad."""
    from face3d_live.models.layout import check_head
    from face3d_live.models.r50_face import model_head_rows
    from face3d_live.models.weights import load_into, read_metadata

    config = json.loads(read_metadata(path).get("config") or "{}")
    check_head(model_head_rows(path), path)  # a v1 rung (no iris / 68 heads) gets a clear error
    model = FaceR50Slim(config)
    load_into(model, path, arch=ARCH)  # checks arch, sha256, names and shapes
    return model.eval()
