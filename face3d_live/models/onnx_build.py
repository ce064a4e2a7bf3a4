"""ONNX graphs of the r50 family written straight from a weights file: no torch needed to run on a CPU.

``pip install face3d-live`` carries no torch (a bare torch requirement pulls a multi-GB CUDA build), yet
onnxruntime and TensorRT want an ONNX file. The network is a plain ResNet bottleneck stack, so its graph is
written here with ``onnx.helper`` from the safetensors tensors:

- FaceR50 / FaceR50Slim (``face3d-r50``, ``r50-lite``): every BatchNorm folded into its convolution (what
  torch's exporter does in eval mode), float32.
- FaceR50SlimInt8 (the ``r50-int8`` rung file, training/qat.py): the QAT graph exactly as
  ``qat.export_qdq`` writes it: a Q/DQ pair per activation quantiser (scale = amax / 127, zero point 0),
  INT8 weight initializers with per-channel scales (axis 0). ``ort_flavour`` re-types it for onnxruntime.

Both take ``input_format`` "float32" ((N, 3, 224, 224) in [0, 1]) or "uint8" ((N, 224, 224, 3) RGB,
converted inside the graph). Tests check these graphs against torch's own export (tests/test_onnx_build.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from face3d_live.errors import ModelError
from face3d_live.models.layout import MEAN, STD

log = logging.getLogger(__name__)

INPUT_NAME = "input"  # models/export.py uses the same names
OUTPUT_NAME = "output"
OPSET = 17
QMAX = 127
BN_EPS = 1e-5
FLOAT_ARCHS = ("FaceR50", "FaceR50Slim")
INT8_ARCH = "FaceR50SlimInt8"


class _Graph:
    """A growing ONNX graph: constants become initializers, every node gets a fresh output name."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        from onnx import numpy_helper

        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _stage_blocks(tensors: Mapping[str, np.ndarray], weight: str) -> list[list[str]]:
    """Block prefixes ``layers.i.j`` grouped by stage, from the tensor names."""
    found: dict[int, set[int]] = {}
    for key in tensors:
        m = re.match(rf"layers\.(\d+)\.(\d+)\.conv1\.{weight}$", key)
        if m:
            found.setdefault(int(m[1]), set()).add(int(m[2]))
    if not found:
        raise ModelError("weights hold no ResNet stages (layers.i.j.conv1)")
    return [[f"layers.{i}.{j}" for j in sorted(found[i])] for i in sorted(found)]


# ---- float (BatchNorm folded) ----------------------------------------------------------------------------
def _folded(t: Mapping[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of conv followed by eval-mode BatchNorm, in float32."""
    w = t[f"{conv}.weight"].astype(np.float32)
    k = t[f"{bn}.weight"] / np.sqrt(t[f"{bn}.running_var"] + BN_EPS)
    bias = t[f"{bn}.bias"] - t[f"{bn}.running_mean"] * k
    return (w * k.reshape(-1, 1, 1, 1)).astype(np.float32), bias.astype(np.float32)


def _conv(g: _Graph, x: str, w: np.ndarray, b: np.ndarray, stride: int) -> str:
    k = int(w.shape[-1])
    return g.op(
        "Conv",
        [x, g.const(w, "w"), g.const(b, "b")],
        kernel_shape=[k, k],
        strides=[stride, stride],
        pads=[k // 2] * 4,
    )


def _float_body(g: _Graph, t: Mapping[str, np.ndarray], x: str) -> str:
    x = g.op("Relu", [_conv(g, x, *_folded(t, "stem.0", "stem.1"), 2)])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for i, stage in enumerate(_stage_blocks(t, "weight")):
        for j, p in enumerate(stage):
            stride = 2 if i > 0 and j == 0 else 1
            identity = x
            if f"{p}.downsample.0.weight" in t:
                identity = _conv(g, x, *_folded(t, f"{p}.downsample.0", f"{p}.downsample.1"), stride)
            out = g.op("Relu", [_conv(g, x, *_folded(t, f"{p}.conv1", f"{p}.bn1"), 1)])
            out = g.op("Relu", [_conv(g, out, *_folded(t, f"{p}.conv2", f"{p}.bn2"), stride)])
            out = _conv(g, out, *_folded(t, f"{p}.conv3", f"{p}.bn3"), 1)
            x = g.op("Relu", [g.op("Add", [out, identity])])
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w, b = t["head.weight"].astype(np.float32), t["head.bias"].astype(np.float32)
    return g.op("Gemm", [x, g.const(w, "w"), g.const(b, "b")], transB=1)


# ---- INT8 (the QAT rung) -----------------------------------------------------------------------------------
def _qdq(g: _Graph, t: Mapping[str, np.ndarray], x: str, quantiser: str) -> str:
    """Fake quantisation as the QAT graph does it: per tensor, symmetric INT8, scale amax / 127."""
    amax = np.float32(np.asarray(t[f"{quantiser}.amax"]).reshape(()))
    scale = np.maximum(amax / np.float32(QMAX), np.float32(1e-8)).astype(np.float32)
    s, zp = g.const(scale, "scale"), g.const(np.zeros((), np.int8), "zp")
    return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, zp]), s, zp])


def _qweight(g: _Graph, t: Mapping[str, np.ndarray], layer: str) -> str:
    q = t[f"{layer}.qweight"]
    if q.dtype != np.int8:
        raise ModelError(f"{layer}.qweight is {q.dtype}, expected int8")
    scale = t[f"{layer}.w_scale"].astype(np.float32)
    zp = g.const(np.zeros(scale.shape, np.int8), "wzp")
    return g.op("DequantizeLinear", [g.const(q, "qw"), g.const(scale, "wscale"), zp], axis=0)


def _qconv(g: _Graph, t: Mapping[str, np.ndarray], x: str, layer: str, stride: int) -> str:
    k = int(t[f"{layer}.qweight"].shape[-1])
    bias = g.const(t[f"{layer}.bias"].astype(np.float32), "b")
    return g.op(
        "Conv",
        [x, _qweight(g, t, layer), bias],
        kernel_shape=[k, k],
        strides=[stride, stride],
        pads=[k // 2] * 4,
    )


def _int8_body(g: _Graph, t: Mapping[str, np.ndarray], x: str) -> str:
    x = _qdq(g, t, x, "q_in")
    x = _qdq(g, t, g.op("Relu", [_qconv(g, t, x, "stem", 2)]), "q_stem")
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = _qdq(g, t, x, "q_stem")  # max-pooling keeps values on the grid: same quantiser before and after
    for i, stage in enumerate(_stage_blocks(t, "qweight")):
        for j, p in enumerate(stage):
            stride = 2 if i > 0 and j == 0 else 1
            identity = x
            if f"{p}.downsample.qweight" in t:
                identity = _qdq(g, t, _qconv(g, t, x, f"{p}.downsample", stride), f"{p}.qd")
            out = _qdq(g, t, g.op("Relu", [_qconv(g, t, x, f"{p}.conv1", 1)]), f"{p}.q1")
            out = _qdq(g, t, g.op("Relu", [_qconv(g, t, out, f"{p}.conv2", stride)]), f"{p}.q2")
            out = _qdq(g, t, _qconv(g, t, out, f"{p}.conv3", 1), f"{p}.q3")
            x = _qdq(g, t, g.op("Relu", [g.op("Add", [out, identity])]), f"{p}.qout")
    x = _qdq(g, t, g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1), "q_head")
    bias = g.const(t["head.bias"].astype(np.float32), "b")
    return g.op("Gemm", [x, _qweight(g, t, "head"), bias], transB=1)


# ---- the model ------------------------------------------------------------------------------------------------
def build_onnx(
    tensors: Mapping[str, np.ndarray], arch: str, input_format: str = "float32", name: str = "face3d"
):
    """The ``onnx.ModelProto`` of an r50-family network from its weights (see module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    if arch not in (*FLOAT_ARCHS, INT8_ARCH):
        raise ModelError(f"no ONNX writer for architecture {arch!r}")
    head = "head.qweight" if arch == INT8_ARCH else "head.weight"
    try:
        out_dim = int(tensors[head].shape[0])
        g = _Graph()
        if input_format == "uint8":  # NHWC uint8 RGB -> NCHW float in [0, 1], inside the graph
            x_in = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", 224, 224, 3])
            x = g.op("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
            x = g.op("Transpose", [g.op("Div", [x, g.const(np.array(255.0, np.float32))])], perm=[0, 3, 1, 2])
        elif input_format == "float32":
            x_in = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, 224, 224])
            x = INPUT_NAME
        else:
            raise ModelError(f"unknown input format {input_format!r}")
        if arch == INT8_ARCH:  # the QAT model normalises with the exact constants, not the file's FP16 copy
            mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
        else:  # torch loads the file's (FP16-rounded) buffers: match them
            mean, std = tensors["mean"].astype(np.float32), tensors["std"].astype(np.float32)
        mean, std = mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1)
        x = g.op("Div", [g.op("Sub", [x, g.const(mean, "mean")]), g.const(std, "std")])
        body = _int8_body if arch == INT8_ARCH else _float_body
        y = body(g, tensors, x)
    except KeyError as exc:
        raise ModelError(f"{arch} weights lack tensor {exc}") from None
    g.nodes.append(helper.make_node("Identity", [y], [OUTPUT_NAME], name="output"))
    y_out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", out_dim])
    graph = helper.make_graph(g.nodes, name, [x_in], [y_out], g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="face3d_live"
    )
    model.ir_version = 8  # opset 17's IR: loads in every onnxruntime and TensorRT release we support
    onnx.checker.check_model(model)
    return model


def write_onnx(weights: str | Path, dst: str | Path, input_format: str = "float32") -> Path:
    """Write the ONNX graph of a weights file (any r50-family arch) to ``dst``; returns ``dst``."""
    import onnx

    from face3d_live.models.weights import load_weights

    tensors, info = load_weights(weights)
    model = build_onnx(tensors, info.arch, input_format, name=Path(weights).stem)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + ".partial.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(dst)
    return dst


# ---- onnxruntime flavour of the INT8 graph --------------------------------------------------------------------
def const_values(model) -> dict[str, np.ndarray]:
    """Every constant of a graph (initializers and Constant nodes) by output name."""
    from onnx import numpy_helper

    vals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def ort_flavour(src: str | Path, dst: str | Path) -> Path:
    """The same Q/DQ graph with UINT8 activations on the same grid, for onnxruntime's fused CPU kernels.

    Every activation QuantizeLinear (zero point 0, INT8) and its DequantizeLinear consumers become UINT8:
    with zero point 0 and scale × 127/255 when a ReLU produces the tensor (the same [0, amax] range;
    onnxruntime then drops the ReLU), else zero point 128 on the same scale. Weight DQ nodes (INT8
    initializers) stay as they are. Why UINT8: with signed zero-point-0 activations onnxruntime keeps the
    ReLUs and runs many convolutions in float (training/qat.py's docstring has the numbers).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    vals = const_values(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    zp_names: dict[int, str] = {}

    def zp_init(value: int) -> str:
        if value not in zp_names:
            name = f"ort_flavour_zp_u8_{value}"
            model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.uint8), name))
            zp_names[value] = name
        return zp_names[value]

    changed = 0
    for k, n in enumerate(list(model.graph.node)):
        if n.op_type != "QuantizeLinear" or n.input[0] in vals:
            continue
        zp = vals.get(n.input[2]) if len(n.input) > 2 else None
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            raise ModelError(f"{src}: activation quantiser {n.name} is not symmetric INT8")
        src_node = producer.get(n.input[0])
        after_relu = src_node is not None and src_node.op_type == "Relu"
        name = zp_init(0 if after_relu else 128)
        scale = n.input[1]
        if after_relu:  # [0, amax] on 255 steps: the symmetric graph's clipping, a finer grid
            scale = f"ort_flavour_scale_u8_{k}"
            value = np.asarray(vals[n.input[1]], np.float32) * np.float32(127.0 / 255.0)
            model.graph.initializer.append(numpy_helper.from_array(value, scale))
        n.input[1], n.input[2] = scale, name
        for c in consumers.get(n.output[0], []):
            if c.op_type != "DequantizeLinear":
                raise ModelError(
                    f"{src}: quantised tensor {n.output[0]} feeds {c.op_type}, not a DequantizeLinear"
                )
            c.input[1], c.input[2] = scale, name
        changed += 1
    onnx.checker.check_model(model)
    dst = Path(dst)
    onnx.save(model, str(dst))
    log.debug("ort flavour: %d activation quantisers re-typed to uint8", changed)
    return dst
