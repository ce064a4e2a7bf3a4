"""The conv→ReLU / conv→add→ReLU fusion pass (inference/fuse_act.py): which chains it fuses, and that the
rewritten network computes the same function. The cuDNN kernels themselves run in test_inference_gpu."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from face3d_live.inference.fuse_act import ConvAddReLU, ConvReLU, fuse_conv_activations  # noqa: E402
from face3d_live.inference.torch_backend import fold_batchnorm  # noqa: E402
from face3d_live.models.r50 import FaceR50  # noqa: E402


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so folding and fusion are exercised on real numbers."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.2, 0.2, generator=g)
    return model.eval()


def test_r50_fuses_every_relu_chain_and_keeps_the_function():
    torch.manual_seed(0)
    model = _randomise_bn(FaceR50())
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
        fused, n = fuse_conv_activations(fold_batchnorm(copy.deepcopy(model)))
        out = fused(x)
    # stem + 16 bottlenecks × (conv1→relu, conv2→relu, conv3→add→relu)
    assert n == 1 + 16 * 3
    kinds = [type(m) for m in fused.modules()]
    assert kinds.count(ConvReLU) == 1 + 16 * 2 and kinds.count(ConvAddReLU) == 16
    relu_calls = [
        n
        for n in fused.graph.nodes
        if n.op == "call_module" and isinstance(fused.get_submodule(n.target), nn.ReLU)
    ]
    assert relu_calls == []  # no separate ReLU kernel left
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max()) + 1e-6


def test_pruned_rung_fuses_too():
    from face3d_live.training.prune import PruneConfig, prune_r50

    pytest.importorskip("torch_pruning")
    torch.manual_seed(1)
    slim, _ = prune_r50(_randomise_bn(FaceR50()), PruneConfig(0.5, 16))
    slim = _randomise_bn(slim)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        ref = slim(x)
        fused, n = fuse_conv_activations(fold_batchnorm(copy.deepcopy(slim)))
        assert n == 49
        assert float((fused(x) - ref).abs().max()) <= 1e-5 * float(ref.abs().max()) + 1e-6


def test_chains_that_cannot_fuse_are_left_alone():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")

        def forward(self, x):
            y = self.a(x)
            keep = y * 2  # the conv output has two users: fusing would drop the pre-ReLU value
            return torch.relu(y) + keep, torch.relu(self.b(torch.relu(y)))

    net = Net().eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
        fused, n = fuse_conv_activations(copy.deepcopy(net))
        out = fused(x)
    assert n == 0  # two users of conv a; conv b pads by reflection (cuDNN's fused op pads with zeros)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
