"""Fold ReLU (and the residual add before it) into the convolution that feeds it: cuDNN's fused
convolution + bias + (add) + ReLU kernels (``torch.cudnn_convolution_relu`` / ``_add_relu``).

After BatchNorm folding every ResNet50 convolution still writes its output and a separate kernel
reads it back to add the bias, another to apply ReLU, another for the residual add: at batch 256
those element-wise passes move several GB per forward. The fused kernels do it in the convolution's
epilogue. Patterns rewritten on the ``torch.fx`` graph (each intermediate used once):

    relu(conv(x))                 -> ConvReLU(x)
    relu(conv(x) + z)             -> ConvAddReLU(x, z)    (either operand order)

The cuDNN ops exist only on CUDA; on the CPU the fused modules compute the same function with
``F.conv2d`` so the rewrite can be checked anywhere.
"""

from __future__ import annotations

import logging
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

log = logging.getLogger(__name__)


def _conv_args(conv: nn.Conv2d) -> tuple:
    return (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)


class ConvReLU(nn.Module):
    """relu(conv(x) + bias) in one cuDNN kernel on CUDA."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.is_cuda:
            return torch.cudnn_convolution_relu(x, c.weight, c.bias, *_conv_args(c))
        return F.relu(c(x))


class ConvAddReLU(nn.Module):
    """relu(conv(x) + bias + z) in one cuDNN kernel on CUDA."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.is_cuda:
            return torch.cudnn_convolution_add_relu(x, c.weight, z, 1.0, c.bias, *_conv_args(c))
        return F.relu(c(x) + z)


def _is_relu(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.ReLU)
    return node.op == "call_function" and node.target in (F.relu, torch.relu)


def _conv_module(node: fx.Node, modules: dict) -> nn.Conv2d | None:
    """The plain 2-D convolution ``node`` calls, if it is one the cuDNN fused ops accept."""
    if node.op != "call_module" or len(node.users) != 1:
        return None
    m = modules.get(node.target)
    if type(m) is not nn.Conv2d or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None
    return m


def fuse_conv_activations(module: nn.Module) -> tuple[nn.Module, int]:
    """``module`` with conv→ReLU and conv→add→ReLU chains fused; returns (module, chains fused).
    Modules torch.fx cannot trace come back unchanged with 0."""
    try:
        gm = module if isinstance(module, fx.GraphModule) else fx.symbolic_trace(module)
    except Exception as exc:  # data-dependent control flow: leave it alone
        log.info("activation fusion skipped (%s: %s)", type(exc).__name__, exc)
        return module, 0
    modules = dict(gm.named_modules())
    graph = gm.graph
    fused = 0
    for relu in list(graph.nodes):
        if not _is_relu(relu, modules):
            continue
        src = relu.args[0]
        if not isinstance(src, fx.Node):
            continue
        conv = _conv_module(src, modules)
        if conv is not None:  # relu(conv(x))
            name = _register(gm, src.target, ConvReLU(conv))
            with graph.inserting_before(relu):
                new = graph.call_module(name, (src.args[0],))
        elif (
            src.op == "call_function"
            and src.target in (operator.add, torch.add)
            and len(src.users) == 1
            and len(src.args) == 2
            and not src.kwargs
        ):  # relu(conv(x) + z) or relu(z + conv(x))
            a, b = src.args
            pick = next(
                (
                    (c, z)
                    for c, z in ((a, b), (b, a))
                    if isinstance(c, fx.Node) and isinstance(z, fx.Node) and _conv_module(c, modules)
                ),
                None,
            )
            if pick is None:
                continue
            c, z = pick
            name = _register(gm, c.target, ConvAddReLU(modules[c.target]))
            with graph.inserting_before(relu):
                new = graph.call_module(name, (c.args[0], z))
        else:
            continue
        relu.replace_all_uses_with(new)
        graph.erase_node(relu)
        if src.op == "call_function":  # the add, then its conv
            conv_node = c
            graph.erase_node(src)
            graph.erase_node(conv_node)
        else:
            graph.erase_node(src)
        fused += 1
    graph.lint()
    gm.recompile()
    return gm, fused


def _register(gm: fx.GraphModule, conv_target: str, fused: nn.Module) -> str:
    name = conv_target.replace(".", "_") + "_act"
    gm.add_submodule(name, fused)
    return name
