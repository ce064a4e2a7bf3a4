"""Quantisation-aware training (INT8) of a FaceR50Slim and its Q/DQ ONNX export.

The QAT model is the slim network with every BatchNorm folded into its convolution and *fake
quantisation* where the deployed INT8 graph quantises:

- weights: per output channel, symmetric INT8 (scale = max|w| / 127), re-derived every step;
- activations: per tensor, symmetric INT8 (zero point 0), at the input of every convolution and of
  the head, after every ReLU, on the conv3 / downsample outputs that meet in the residual add and
  on the add's output. Scales come from a min-max calibration on real crops, then stay fixed.

Training runs through these (straight-through gradients), so the weights learn to live on the INT8
grid. The export (``export_qdq``) writes exactly the simulated graph: QuantizeLinear/DequantizeLinear
pairs with the trained scales, weights stored as INT8 initializers (a quarter of the FP32 size).

Two ONNX flavours of the same numbers:

- ``int8`` (symmetric, zero point 0, INT8 everywhere): what TensorRT(-RTX) takes.
- ``int8-ort`` for onnxruntime on CPU: every activation Q/DQ pair re-typed to UINT8 (zero point 128 on
  the same grid; or zero point 0 where a ReLU feeds it, which lets onnxruntime drop the ReLU and fuse
  QLinearConv/QLinearAdd; with signed zero-point-0 activations it leaves the ReLUs and runs many
  convolutions in float). A post-ReLU tensor keeps the symmetric graph's range [0, amax], clipping where
  it clips, on a grid twice as fine (255 steps instead of 127): re-using the INT8 scale there let values
  run to 2·amax unclipped, which a QAT-trained network never saw (2.1 px mean output error on the v2 rung,
  against 0.3 px with the range kept).

The rung file (``save_int8`` / ``load_int8``) stores the INT8 weights, their FP16 per-channel scales,
the biases and the activation ranges: everything needed to rebuild both ONNX files exactly.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from face3d_live.errors import ModelError
from face3d_live.models.onnx_build import const_values, ort_flavour  # noqa: F401 (ort_flavour re-exported)
from face3d_live.models.r50 import MEAN, STD
from face3d_live.training.slim import FaceR50Slim, check_config, widths_of

log = logging.getLogger(__name__)

ARCH = "FaceR50SlimInt8"
QMAX = 127


class ActQuant(nn.Module):
    """Per-tensor symmetric INT8 fake quantisation. ``observe`` mode records max|x| (calibration)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("amax", torch.zeros(()))
        self.observe = False
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe:
            self.amax.copy_(torch.maximum(self.amax, x.detach().abs().max().float()))
            return x
        if not self.enabled:
            return x
        scale = (self.amax / QMAX).clamp_min(1e-8).float()
        if torch.onnx.is_in_onnx_export():  # a constant scale: plain Q/DQ nodes, no scale arithmetic
            return torch.fake_quantize_per_tensor_affine(x, float(scale), 0, -128, 127)
        zero = torch.zeros((), dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, -128, 127)


class QConv(nn.Module):
    """Conv2d or Linear with a bias (BatchNorm folded in) and per-channel symmetric INT8 weights.

    While training, the weight scale follows the weights; ``freeze()`` snaps them to the grid of a
    fixed FP16-representable scale (what the rung file and the ONNX hold).
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        self.is_conv = isinstance(layer, nn.Conv2d)
        self.weight = nn.Parameter(layer.weight.detach().clone())
        bias = layer.bias.detach().clone() if layer.bias is not None else torch.zeros(layer.weight.shape[0])
        self.bias = nn.Parameter(bias)
        if self.is_conv:
            self.stride, self.padding = layer.stride, layer.padding
        self.register_buffer("w_scale", torch.zeros(layer.weight.shape[0]))
        self.frozen = False

    def scale(self) -> torch.Tensor:
        if self.frozen:
            return self.w_scale
        dims = tuple(range(1, self.weight.ndim))
        return (self.weight.detach().abs().amax(dims) / QMAX).clamp_min(1e-12)

    def qweight(self) -> torch.Tensor:
        s = self.scale().float()
        zp = torch.zeros(s.shape, dtype=torch.int32, device=s.device)
        return torch.fake_quantize_per_channel_affine(self.weight, s, zp, 0, -128, 127)

    def freeze(self) -> None:
        """Fix the scale (rounded to FP16, as stored) and put the weights exactly on its grid."""
        with torch.no_grad():
            s = self.scale().half().float().clamp_min(2**-24)
            shape = (-1,) + (1,) * (self.weight.ndim - 1)
            q = torch.clamp(torch.round(self.weight / s.view(shape)), -QMAX, QMAX)
            self.weight.copy_(q * s.view(shape))
            self.w_scale.copy_(s)
            self.bias.copy_(self.bias.half().float())  # stored in FP16
        self.frozen = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.qweight()
        if self.is_conv:
            return F.conv2d(x, w, self.bias, self.stride, self.padding)
        return F.linear(x, w, self.bias)


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing bn(conv(x)) in eval mode."""
    out = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True
    )
    with torch.no_grad():
        k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        out.weight.copy_(conv.weight * k.view(-1, 1, 1, 1))
        b0 = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        out.bias.copy_((b0 - bn.running_mean) * k + bn.bias)
    return out


class QBlock(nn.Module):
    def __init__(self, block) -> None:
        super().__init__()
        self.conv1 = QConv(fold_bn(block.conv1, block.bn1))
        self.q1 = ActQuant()
        self.conv2 = QConv(fold_bn(block.conv2, block.bn2))
        self.q2 = ActQuant()
        self.conv3 = QConv(fold_bn(block.conv3, block.bn3))
        self.q3 = ActQuant()
        self.downsample = None
        if block.downsample is not None:
            self.downsample = QConv(fold_bn(block.downsample[0], block.downsample[1]))
            self.qd = ActQuant()
        self.qout = ActQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x is already on the INT8 grid
        identity = x if self.downsample is None else self.qd(self.downsample(x))
        out = self.q1(F.relu(self.conv1(x)))
        out = self.q2(F.relu(self.conv2(out)))
        out = self.q3(self.conv3(out))
        return self.qout(F.relu(out + identity))


class QuantFaceR50(nn.Module):
    """The INT8 fake-quantised FaceR50Slim (BatchNorm folded). Same I/O as FaceR50."""

    def __init__(self, slim: FaceR50Slim | nn.Module) -> None:
        super().__init__()
        slim = slim.eval()
        self.config = widths_of(slim)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.q_in = ActQuant()
        self.stem = QConv(fold_bn(slim.stem[0], slim.stem[1]))
        self.q_stem = ActQuant()
        self.pool_stem = nn.MaxPool2d(3, 2, 1)
        self.layers = nn.Sequential(*(nn.Sequential(*(QBlock(b) for b in stage)) for stage in slim.layers))
        self.q_head = ActQuant()
        self.head = QConv(slim.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # FP32 inside, also under an autocast region: the INT8 simulation must not round through bf16
        with torch.autocast(x.device.type, enabled=False):
            return self._forward(x.float())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.q_in((x - self.mean) / self.std)
        # max-pooling values on the INT8 grid stays on it: one quantiser before and after (same scale)
        x = self.q_stem(self.pool_stem(self.q_stem(F.relu(self.stem(x)))))
        x = self.layers(x)
        x = self.q_head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return self.head(x)

    def act_quants(self) -> list[ActQuant]:
        return [m for m in self.modules() if isinstance(m, ActQuant)]

    def qconvs(self) -> list[QConv]:
        return [m for m in self.modules() if isinstance(m, QConv)]

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> int:
        """Set every activation range to the max |x| seen over ``batches`` (float forward). Returns images seen."""
        was_training = self.training
        self.eval()
        qs = self.act_quants()
        for q in qs:
            q.amax.zero_()
            q.observe = True
        n = 0
        try:
            for x in batches:
                self(x)
                n += len(x)
        finally:
            for q in qs:
                q.observe = False
                q.amax.copy_(q.amax.half().float())  # stored in FP16
        self.train(was_training)
        if n == 0:
            raise ModelError("INT8 calibration got no images")
        return n

    def freeze(self) -> None:
        for c in self.qconvs():
            c.freeze()


# ---- the rung file -----------------------------------------------------------------------------------
def save_int8(model: QuantFaceR50, path: str | Path, **metadata: str) -> str:
    """INT8 weights + FP16 scales/biases/ranges as safetensors (models/weights.py format); returns sha256."""
    from face3d_live.models.weights import save_weights

    model.freeze()
    state: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, QConv):
            shape = (-1,) + (1,) * (m.weight.ndim - 1)
            state[f"{name}.qweight"] = torch.round(m.weight / m.w_scale.view(shape)).to(torch.int8)
            state[f"{name}.w_scale"] = m.w_scale
            state[f"{name}.bias"] = m.bias
        elif isinstance(m, ActQuant):
            state[f"{name}.amax"] = m.amax
    state["mean"], state["std"] = model.mean, model.std
    return save_weights(path, state, arch=ARCH, config=model.config, metadata=metadata)


def load_int8(path: str | Path) -> QuantFaceR50:
    """Rebuild the frozen QuantFaceR50 from its rung file (exactly: weights = int8 × FP16 scale)."""
    import json

    from face3d_live.models.weights import load_weights, read_metadata

    config = check_config(json.loads(read_metadata(path).get("config") or "{}"))
    tensors, _ = load_weights(path, arch=ARCH)
    from face3d_live.models.layout import check_head

    if "head.qweight" in tensors:  # a v1 rung (no iris / 68 heads) gets a clear error
        check_head(tensors["head.qweight"].shape[0], path)
    model = QuantFaceR50(FaceR50Slim(config))
    expected = set()
    for name, m in model.named_modules():
        try:
            if isinstance(m, QConv):
                keys = (f"{name}.qweight", f"{name}.w_scale", f"{name}.bias")
                expected.update(keys)
                q, s, b = (torch.from_numpy(tensors[k].copy()) for k in keys)
                m.weight.data = q.float() * s.float().view((-1,) + (1,) * (q.ndim - 1))
                m.w_scale.copy_(s)
                m.bias.data = b.float()
                m.frozen = True
            elif isinstance(m, ActQuant):
                expected.add(f"{name}.amax")
                m.amax.copy_(torch.from_numpy(np.asarray(tensors[f"{name}.amax"])).reshape(()))
        except KeyError as exc:
            raise ModelError(f"{path}: INT8 rung file lacks {exc}") from None
        except RuntimeError as exc:
            raise ModelError(f"{path}: INT8 rung file does not fit its width config ({exc})") from None
    if extra := set(tensors) - expected - {"mean", "std"}:
        raise ModelError(f"{path}: unexpected tensors {sorted(extra)[:3]}")
    return model.eval()


# ---- ONNX ----------------------------------------------------------------------------------------------
def export_qdq(model: QuantFaceR50, path: str | Path) -> Path:
    """The symmetric INT8 Q/DQ ONNX of a frozen QAT model (INT8 weight initializers, dynamic batch)."""
    import onnx

    from face3d_live.models.export import INPUT_NAME, OUTPUT_NAME

    model = model.cpu().eval()
    if not all(c.frozen for c in model.qconvs()):
        model.freeze()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(
            model,
            (torch.rand(2, 3, 224, 224),),
            str(raw),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
        graph_model = onnx.load(str(raw))
    graph_model = _int8_weight_initializers(graph_model)
    onnx.checker.check_model(graph_model)
    tmp_path = path.with_suffix(".partial.onnx")
    onnx.save(graph_model, str(tmp_path))
    tmp_path.replace(path)
    return path


def _int8_weight_initializers(model):
    """Replace QuantizeLinear(float constant weight) by the INT8 constant it yields (what quantize_static
    writes too): the file holds 1 byte per weight and the builders see plain weight DQ nodes."""
    from onnx import numpy_helper

    vals = const_values(model)
    keep, new_inits = [], []
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in vals and n.input[1] in vals:
            x = vals[n.input[0]].astype(np.float32)
            s = vals[n.input[1]].astype(np.float32)
            zp = vals[n.input[2]] if len(n.input) > 2 and n.input[2] in vals else np.zeros((), np.int8)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * x.ndim
            if s.ndim == 1 and s.size > 1:
                shape[axis] = -1
            q = np.clip(
                np.round(x / s.reshape(shape)) + zp.astype(np.float32).reshape(shape if zp.ndim else ()),
                -128,
                127,
            )
            new_inits.append(numpy_helper.from_array(q.astype(zp.dtype), n.output[0]))
            continue
        keep.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model.graph.initializer.extend(new_inits)
    # drop constants nothing uses any more (the FP32 weights)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    nodes = [n for n in model.graph.node if n.op_type != "Constant" or n.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
