"""Structured channel pruning of face3d-r50: whole channels leave every convolution.

torch-pruning builds the dependency graph of the model (which layers must lose the same channels:
a conv's output with its BatchNorm and the next conv's input, and every block output of a stage
together, because of the residual adds) and removes the lowest-importance channel *groups*
(L2 norm of all weights in the group). The result is a smaller dense network (fewer MACs, really
faster on every backend), unlike unstructured weight masking, which only writes zeros.

The head's outputs (468×3 vertices + presence) and the 3 input channels stay; ``ratio`` is the
fraction of channels removed from every other layer, rounded so widths stay multiples of
``round_to`` (fast kernels want 8/16-aligned channel counts).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from face3d_live.errors import ConfigError, ModelError
from face3d_live.training.slim import FaceR50Slim, count_params, to_slim, widths_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneConfig:
    ratio: float = 0.5  # fraction of channels removed per layer (0 < ratio < 1)
    round_to: int = 16  # keep widths multiples of this
    norm: int = 2  # importance: L-p norm over each channel group's weights
    min_stem: int = 32  # the 7×7 stem is cheap and sets the first features: never below this

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"pruning ratio must be in (0, 1), got {self.ratio}")
        if self.round_to < 1:
            raise ConfigError(f"round_to must be >= 1, got {self.round_to}")


@dataclass(frozen=True)
class PruneReport:
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    widths: dict

    def as_dict(self) -> dict:
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "param_ratio": round(self.params_after / self.params_before, 4),
            "mac_ratio": round(self.macs_after / self.macs_before, 4),
            "widths": self.widths,
        }


def load_r50_any(path: str | Path | None = None) -> nn.Module:
    """The trained FaceR50 (eval): the project's weights format, or a plain FP16 safetensors state dict
    (what ``face3d-live train`` writes before conversion)."""
    from face3d_live.models.r50 import FaceR50
    from face3d_live.models.r50_face import build_r50
    from face3d_live.models.weights import default_r50_weights

    path = Path(path) if path else default_r50_weights()
    try:
        return build_r50(path)
    except ModelError:
        if not path.is_file():
            raise
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path}: not a weights file ({exc})") from None
    model = FaceR50()
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
    missing = set(own) - set(state) - {k for k in own if k.endswith("num_batches_tracked")}
    if missing:
        raise ModelError(f"{path} does not fit FaceR50 (missing {sorted(missing)[:3]}…)")
    model.load_state_dict(state, strict=False)
    return model.eval()


def macs(model: nn.Module, size: int = 224) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (convolutions and the head)."""
    total = 0

    def hook(m: nn.Module, inp, out) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return total


def prune_in_place(model: nn.Module, cfg: PruneConfig = PruneConfig()) -> nn.Module:
    """Remove channels from ``model`` itself (a FaceR50 or FaceR50Slim on the CPU, eval mode); returns it."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise ModelError("structured pruning needs torch-pruning: pip install 'face3d-live[torch]'") from None
    stem = model.stem[0].out_channels
    # the stem has few channels and feeds everything: prune it less (never below min_stem)
    stem_ratio = max(0.0, 1.0 - max(cfg.min_stem, stem * (1 - cfg.ratio)) / stem)
    with torch.enable_grad():  # torch-pruning traces the dependency graph through autograd
        pruner = tp.pruner.MetaPruner(
            model,
            torch.rand(1, 3, 224, 224),
            importance=tp.importance.GroupMagnitudeImportance(p=cfg.norm),
            pruning_ratio=cfg.ratio,
            pruning_ratio_dict={model.stem[0]: stem_ratio},
            ignored_layers=[model.head],  # its outputs are the vertices: keep all; its inputs get pruned
            round_to=cfg.round_to,
        )
        pruner.step()
    return model


def prune_r50(model: nn.Module, cfg: PruneConfig = PruneConfig()) -> tuple[FaceR50Slim, PruneReport]:
    """A pruned FaceR50Slim from a trained FaceR50 (or FaceR50Slim); ``model`` itself is left as it was."""
    model = copy.deepcopy(model).cpu().float().eval()
    before_p, before_m = count_params(model), macs(model)
    slim = to_slim(prune_in_place(model, cfg)).eval()
    with torch.no_grad():
        out = slim(torch.rand(1, 3, 224, 224))
    if out.shape != (1, model.head.out_features):
        raise ModelError(f"pruned model gives {tuple(out.shape)}, expected (1, {model.head.out_features})")
    report = PruneReport(before_p, count_params(slim), before_m, macs(slim), widths_of(slim))
    log.info(
        "pruned %.0f%% of channels: %.2fM -> %.2fM params, %.2f -> %.2f GMACs",
        100 * cfg.ratio,
        before_p / 1e6,
        report.params_after / 1e6,
        before_m / 1e9,
        report.macs_after / 1e9,
    )
    return slim, report
