"""PyTorch port of the BlazeFace detectors (detect.blazeface), so the service can detect faces in many images
per call on a CUDA GPU.

The network is rebuilt at load time from the bundled .tflite file (no second copy of the weights): the graph
and the op options (strides, padding, fused activations, resize mode) come from the flatbuffer, read with the
schema module that ai-edge-litert ships; the dense float32 weights come from the interpreter itself (the
full-range model stores them sparse and fp16, DENSIFY + DEQUANTIZE, which its reference kernels undo). The
layers then run as a small interpreter of the tflite ops over NCHW tensors. Decoding and NMS are
detect.blazeface's own (BlazeFaceDecoder), on CPU: the outputs of a batch are a few hundred KB.

torch is an optional dependency: only this module imports it; nothing imports this module at import time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from face3d_live.detect.blazeface import (
    FULL_RANGE,
    SHORT_RANGE,
    BlazeFaceDecoder,
    Detection,
    letterbox,
)
from face3d_live.models.tflite import bundled_model_path

# tflite ops that only compute constants from constants (weights): folded at load time
_CONST_OPS = {"DEQUANTIZE", "DENSIFY"}
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)


@dataclass
class _Layer:
    """One tflite op over activations: its inputs/outputs by tensor index, constants by buffer name."""

    op: str
    inputs: list[int]
    output: int
    attrs: dict[str, Any] = field(default_factory=dict)


def _op_name(schema: Any, model: Any, op: Any) -> str:
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    code = model.operatorCodes[op.opcodeIndex]
    # builtinCode holds codes >= 127; older files keep small codes in deprecatedBuiltinCode only
    return names[max(code.builtinCode, code.deprecatedBuiltinCode)]


def _same_pads(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """tflite's SAME padding along one axis: (before, after), the extra pixel after (unlike torch's)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _activation(schema: Any, code: int) -> str:
    kinds = schema.ActivationFunctionType
    table = {kinds.NONE: "none", kinds.RELU: "relu", kinds.RELU6: "relu6", kinds.RELU_N1_TO_1: "relu1"}
    if code not in table:
        raise NotImplementedError(f"fused activation {code} not supported")
    return table[code]


def _apply_activation(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "relu":
        return F.relu(x)
    if kind == "relu6":
        return F.relu6(x)
    if kind == "relu1":
        return x.clamp(-1.0, 1.0)
    return x


def _fuse(layers: list[_Layer], outputs: list[int]) -> list[_Layer]:
    """Fewer kernels, same arithmetic: a zero PAD of H and W feeding one VALID convolution becomes that
    convolution's padding (the full-range model pads before each of its 91 convolutions), and a RELU
    after an op without activation becomes its fused activation (the short-range model's 17 ADD + RELU)."""
    uses: dict[int, int] = {i: 1 for i in outputs}
    for layer in layers:
        for i in layer.inputs:
            uses[i] = uses.get(i, 0) + 1
    producer = {layer.output: layer for layer in layers}
    dropped: set[int] = set()
    for layer in layers:
        src = producer.get(layer.inputs[0])
        if src is None or uses[src.output] != 1:
            continue
        if (
            layer.op == "conv"
            and src.op == "pad"
            and not any(src.attrs["pad"][4:])
            and not any(layer.attrs["pad"])
        ):
            layer.attrs["pad"], layer.inputs = src.attrs["pad"][:4], list(src.inputs)
            dropped.add(id(src))
        elif layer.op == "act" and src.op in ("conv", "add") and src.attrs["act"] == "none":
            src.attrs["act"], src.output = layer.attrs["act"], layer.output
            dropped.add(id(layer))
    return [layer for layer in layers if id(layer) not in dropped]


class TorchBlazeFace(nn.Module):
    """A BlazeFace .tflite graph as a torch module: ``forward(x)`` with x (N, 3, S, S) float32 in [-1, 1]
    returns the tflite model's raw outputs in its output order, (regressors (N, A, 16), logits (N, A, 1)).

    On CUDA the convolutions run in full fp32 (see _fp32_convolutions): cuDNN's TF32, PyTorch's default for
    convolutions on Ampere and later, moved the short-range logits by up to 3.7 on the H200 (fp32: 2e-3, as
    on CPU)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        model = schema.ModelT.InitFromPackedBuf(bytearray(Path(path).read_bytes()), 0)
        if len(model.subgraphs) != 1:
            raise NotImplementedError(f"{path}: {len(model.subgraphs)} subgraphs, expected 1")
        graph = model.subgraphs[0]
        if len(graph.inputs) != 1:
            raise NotImplementedError(f"{path}: {len(graph.inputs)} inputs, expected 1")
        self.input_index = int(graph.inputs[0])
        self.output_indices = [int(i) for i in graph.outputs]
        self.input_size = int(graph.tensors[self.input_index].shape[1])
        shapes = {i: [int(v) for v in t.shape] for i, t in enumerate(graph.tensors)}

        # constants: tensors with data in the file, and what DENSIFY/DEQUANTIZE make of them
        const = {
            i
            for i, t in enumerate(graph.tensors)
            if model.buffers[t.buffer].data is not None or getattr(model.buffers[t.buffer], "offset", 0) > 1
        }
        ops = [(_op_name(schema, model, op), op) for op in graph.operators]
        for name, op in ops:
            if name in _CONST_OPS and all(i in const for i in op.inputs if i >= 0):
                const.update(int(o) for o in op.outputs)
        # the reference kernels (no XNNPACK, which takes the weights over and leaves zeros behind) compute
        # the folded constants; one invoke on zeros fills them
        interp = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        )
        interp.allocate_tensors()
        interp.set_tensor(self.input_index, np.zeros(shapes[self.input_index], np.float32))
        interp.invoke()

        def value(i: int) -> np.ndarray:
            return np.asarray(interp.get_tensor(i))

        def weight(name: str, array: np.ndarray) -> str:
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array, np.float32)))
            return name

        layers: list[_Layer] = []
        for n, (name, op) in enumerate(ops):
            ins, out = [int(i) for i in op.inputs], int(op.outputs[0])
            opts = op.builtinOptions
            if name in _CONST_OPS and out in const:
                continue
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                x, w, b = ins[0], value(ins[1]), value(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
                if name == "CONV_2D":  # (O, kh, kw, I) -> (O, I, kh, kw)
                    wt, groups = w.transpose(0, 3, 1, 2), 1
                else:  # (1, kh, kw, C*m) -> (C*m, 1, kh, kw), output channel c*m + j as torch's groups
                    wt, groups = w[0].transpose(2, 0, 1)[:, None], shapes[x][3]
                kh, kw = wt.shape[2:]
                stride = (opts.strideH, opts.strideW)
                dilation = (opts.dilationHFactor, opts.dilationWFactor)
                if opts.padding == schema.Padding.SAME:
                    ph = _same_pads(shapes[x][1], kh, stride[0], dilation[0])
                    pw = _same_pads(shapes[x][2], kw, stride[1], dilation[1])
                else:
                    ph, pw = (0, 0), (0, 0)
                attrs = {
                    "weight": weight(f"w{n}", wt),
                    "bias": weight(f"b{n}", b) if b is not None else None,
                    "stride": stride,
                    "dilation": dilation,
                    "groups": groups,
                    "pad": (pw[0], pw[1], ph[0], ph[1]),
                    "act": _activation(schema, opts.fusedActivationFunction),
                }
                layers.append(_Layer("conv", [x], out, attrs))
            elif name == "MAX_POOL_2D":
                k, stride = (opts.filterHeight, opts.filterWidth), (opts.strideH, opts.strideW)
                if opts.padding == schema.Padding.SAME:
                    ph = _same_pads(shapes[ins[0]][1], k[0], stride[0], 1)
                    pw = _same_pads(shapes[ins[0]][2], k[1], stride[1], 1)
                else:
                    ph, pw = (0, 0), (0, 0)
                act = _activation(schema, opts.fusedActivationFunction)
                attrs = {"kernel": k, "stride": stride, "pad": (pw[0], pw[1], ph[0], ph[1]), "act": act}
                layers.append(_Layer("maxpool", ins[:1], out, attrs))
            elif name == "PAD":
                p = value(ins[1]).astype(int)
                if len(shapes[ins[0]]) != 4 or p[0].any():
                    raise NotImplementedError(f"PAD {p.tolist()} of a {shapes[ins[0]]} tensor")
                # NHWC pads → F.pad's (W, H, C) order over NCHW
                pad = (p[2, 0], p[2, 1], p[1, 0], p[1, 1], p[3, 0], p[3, 1])
                layers.append(_Layer("pad", ins[:1], out, {"pad": tuple(int(v) for v in pad)}))
            elif name == "ADD":
                if any(i in const for i in ins):
                    raise NotImplementedError("ADD of a constant")
                act = _activation(schema, opts.fusedActivationFunction)
                layers.append(_Layer("add", ins, out, {"act": act}))
            elif name in ("RELU", "RELU6", "RELU_N1_TO_1"):
                kind = {"RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu1"}[name]
                layers.append(_Layer("act", ins[:1], out, {"act": kind}))
            elif name == "RESIZE_BILINEAR":
                if not (opts.alignCorners or opts.halfPixelCenters):
                    raise NotImplementedError("RESIZE_BILINEAR without half-pixel centres or aligned corners")
                size = tuple(int(v) for v in value(ins[1]))
                attrs = {"size": size, "align_corners": bool(opts.alignCorners)}
                layers.append(_Layer("resize", ins[:1], out, attrs))
            elif name == "DEPTH_TO_SPACE":
                layers.append(_Layer("d2s", ins[:1], out, {"block": int(opts.blockSize)}))
            elif name == "RESHAPE":
                shape = shapes[out]
                if len(shape) == 4:
                    raise NotImplementedError("RESHAPE to a 4-D tensor")
                layers.append(
                    _Layer("reshape", ins[:1], out, {"shape": shape, "nhwc": len(shapes[ins[0]]) == 4})
                )
            elif name == "CONCATENATION":
                axis = opts.axis % len(shapes[out])
                if len(shapes[out]) == 4:
                    axis = _NHWC_TO_NCHW_AXIS[axis]
                act = _activation(schema, opts.fusedActivationFunction)
                layers.append(_Layer("concat", ins, out, {"axis": axis, "act": act}))
            else:
                raise NotImplementedError(f"{path}: tflite op {name} not supported")
        self.layers = _fuse(layers, self.output_indices)
        layers = self.layers
        # free each activation after its last use (a large batch would otherwise hold every layer's output)
        last_use: dict[int, int] = {}
        for n, layer in enumerate(layers):
            for i in layer.inputs:
                last_use[i] = n
        self._free_after = [
            [i for i in layer.inputs if last_use[i] == n and i not in self.output_indices]
            for n, layer in enumerate(layers)
        ]

    @classmethod
    def bundled(cls, full_range: bool = False) -> TorchBlazeFace:
        """The short-range (128² input) or full-range (192²) model shipped in assets/mediapipe."""
        spec = FULL_RANGE if full_range else SHORT_RANGE
        return cls(bundled_model_path(spec.file))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected (N, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}")
        env: dict[int, torch.Tensor] = {self.input_index: x}
        with _fp32_convolutions(x.is_cuda):
            for layer, free in zip(self.layers, self._free_after):
                env[layer.output] = self._run(layer, [env[i] for i in layer.inputs])
                for i in free:
                    del env[i]
        return tuple(env[i] for i in self.output_indices)

    def _run(self, layer: _Layer, xs: list[torch.Tensor]) -> torch.Tensor:
        a = layer.attrs
        op = layer.op
        if op == "conv":
            x = xs[0]
            pad = a["pad"]
            if pad[0] == pad[1] and pad[2] == pad[3]:  # symmetric: the conv's own zero padding
                padding = (pad[2], pad[0])
            else:
                x, padding = F.pad(x, pad), (0, 0)
            bias = getattr(self, a["bias"]) if a["bias"] else None
            y = F.conv2d(
                x, getattr(self, a["weight"]), bias, a["stride"], padding, a["dilation"], a["groups"]
            )
            return _apply_activation(y, a["act"])
        if op == "add":
            return _apply_activation(xs[0] + xs[1], a["act"])
        if op == "act":
            return _apply_activation(xs[0], a["act"])
        if op == "pad":
            return F.pad(xs[0], a["pad"])
        if op == "maxpool":
            x = xs[0]
            if any(a["pad"]):  # tflite's SAME max pool ignores the padding: pad with -inf
                x = F.pad(x, a["pad"], value=float("-inf"))
            return _apply_activation(F.max_pool2d(x, a["kernel"], a["stride"]), a["act"])
        if op == "resize":
            # align_corners=False in torch is tflite's half_pixel_centers (sources clamped at the border)
            return F.interpolate(xs[0], size=a["size"], mode="bilinear", align_corners=a["align_corners"])
        if op == "d2s":
            # tflite's DEPTH_TO_SPACE is DCR: channel (i * b + j) * C + c goes to pixel (h * b + i, w * b + j)
            x, b = xs[0], a["block"]
            n, cb, h, w = x.shape
            c = cb // (b * b)
            return x.reshape(n, b, b, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * b, w * b)
        if op == "reshape":
            x = xs[0].permute(0, 2, 3, 1) if a["nhwc"] else xs[0]
            return x.reshape(x.shape[0], *a["shape"][1:])
        if op == "concat":
            return _apply_activation(torch.cat(xs, dim=a["axis"]), a["act"])
        raise AssertionError(op)


@contextlib.contextmanager
def _fp32_convolutions(active: bool) -> Iterator[None]:
    """cuDNN convolutions in full fp32 for the duration. The flag is process-wide: other threads'
    convolutions in that window run in fp32 too (slower, not wrong); it is put back after."""
    if not active or not torch.backends.cudnn.allow_tf32:
        yield
        return
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = True


_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


@functools.lru_cache(maxsize=16)
def _pyr_kernel(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    taps = torch.tensor(_BINOMIAL, dtype=dtype)
    return torch.outer(taps, taps).view(1, 1, 5, 5).to(device)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown on uint8 values held in float: 5-tap binomial filter (1 4 6 4 1) each way with
    BORDER_REFLECT_101, every other pixel, rounded as OpenCV does ((sum + 128) >> 8). One stride-2
    convolution over all channels: the sums are integers, exact in any order."""
    if x.shape[2] < 3 or x.shape[3] < 3:
        raise ValueError(f"image too small for pyrDown: {tuple(x.shape[2:])}")
    b, c, h, w = x.shape
    x = F.pad(x.reshape(b * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    s = F.conv2d(x, _pyr_kernel(x.dtype, x.device), stride=2)
    return torch.div(s + 128.0, 256.0, rounding_mode="floor").view(b, c, *s.shape[2:])


@functools.lru_cache(maxsize=64)
def _area_matrix(length: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, length): row i averages exactly the source span [i·length/n, (i+1)·length/n) (OpenCV's INTER_AREA
    going down), each source pixel weighted by the part of it the span covers."""
    edges = np.arange(n + 1, dtype=np.float64) * length / n
    pix = np.arange(length, dtype=np.float64)
    overlap = np.clip(np.minimum(edges[1:, None], pix + 1) - np.maximum(edges[:-1, None], pix), 0.0, None)
    return torch.as_tensor(overlap * (n / length), dtype=dtype, device=device)


def _area_down(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """INTER_AREA of a (B, C, H, W) batch down to (height, width): the box average of each output pixel's
    span, as two matmuls (rows, then columns)."""
    rows = _area_matrix(x.shape[2], height, x.dtype, x.device)
    cols = _area_matrix(x.shape[3], width, x.dtype, x.device)
    return rows @ x @ cols.T


@functools.lru_cache(maxsize=256)
def _cv2_upscale_taps(length: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA taps when the image grows (resize.cpp's area_mode): source pixels (sx, sx + 1) and
    11-bit fixed-point weights per output, computed in the same double/float steps (so the same source
    pixel wins where an output edge falls on an input edge and rounding lands on either side of it)."""
    inv = n / length
    scale = 1.0 / inv
    dx = np.arange(n, dtype=np.float64)
    sx = np.floor(dx * scale)
    fx = ((dx + 1) - (sx + 1) * inv).astype(np.float32)
    fx = np.where(fx <= 0, np.float32(0), fx - np.floor(fx)).astype(np.float32)
    sx = sx.astype(np.int64)
    last = sx >= length - 1
    fx[last], sx[last] = 0, length - 1
    w0 = np.rint((np.float32(1) - fx) * np.float32(2048)).astype(np.int64)
    w1 = np.rint(fx * np.float32(2048)).astype(np.int64)
    return sx, np.minimum(sx + 1, length - 1), w0, w1


def _cv2_area_upscale(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """cv2.resize(INTER_AREA) of uint8 values when the image grows: 2-tap fixed-point rows then columns,
    rounded as OpenCV's SIMD vertical pass does ((S >> 4) · b >> 16, summed, + 2 >> 2)."""
    dev = x.device
    xi = x.to(torch.int64)
    c0, c1, a0, a1 = (torch.as_tensor(v, device=dev) for v in _cv2_upscale_taps(x.shape[3], width))
    rows = xi.index_select(3, c0) * a0 + xi.index_select(3, c1) * a1  # scale 2048
    r0, r1, b0, b1 = (torch.as_tensor(v, device=dev) for v in _cv2_upscale_taps(x.shape[2], height))
    top = ((rows.index_select(2, r0) >> 4) * b0.view(-1, 1)) >> 16
    bottom = ((rows.index_select(2, r1) >> 4) * b1.view(-1, 1)) >> 16
    return ((top + bottom + 2) >> 2).clamp_(0, 255).to(x.dtype)


def shrink_torch(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """detect.blazeface.shrink for a (B, 3, H, W) float batch of uint8 values, as cv2 computes it: pyrDown
    while 3× too large, then INTER_AREA (the exact box average going down, its 2-tap form going up); the
    result rounded to integers like cv2.resize's uint8 output, in the input's dtype. A handful of ops whatever
    the size (each is a Python call and a launch in a service replica's request path: the strided sums and
    gathers before were ~40 ops and 11 % of a replica's CPU on the H200). pyrDown in float32: its sums are
    exact there even where cuDNN rounds inputs to TF32 (integer pixels and taps of ≤ 6 bits, integer sums
    below 2^16); in float64 cuDNN took 0.19 ms of GPU time an image for it, the largest item of the service's
    decoding and detection (H200, torch.profiler). The area step on a GPU in float64: no TF32 (cuBLAS may
    round its fractional weights to 10 mantissa bits, and switching that off is process-wide), and cheap at
    these sizes; on the CPU float32 is exact (and 6× faster)."""
    return _shrink(x.float(), width, height, torch.float64 if x.is_cuda else torch.float32).to(x.dtype)


def _shrink(x: torch.Tensor, width: int, height: int, dtype: torch.dtype) -> torch.Tensor:
    while x.shape[3] >= 3 * width and x.shape[2] >= 3 * height:
        x = _pyr_down(x)
    x = x.to(dtype)
    h, w = x.shape[2:]
    if (h, w) == (height, width):
        return x
    if h < height or w < width:
        return _cv2_area_upscale(x, height, width)
    y = _area_down(x, height, width)
    if (h, w) == (2 * height, 2 * width):  # OpenCV's 2×2 fast path rounds halves up: (sum + 2) >> 2
        return torch.floor(y + 0.5)
    return torch.round(y).clamp_(0.0, 255.0)


ImageInput = np.ndarray | torch.Tensor


class TorchBlazeFaceDetector(BlazeFaceDecoder):
    """BlazeFaceDetector's detections for a batch of images, the network run once for the whole batch on
    ``device``. Preprocessing (letterbox, shrink, normalisation) runs on the device too, so images decoded
    on the GPU (torchvision.io.decode_jpeg(device="cuda")) never go through the host."""

    def __init__(
        self,
        full_range: bool = False,
        device: str | torch.device = "cpu",
        min_score: float = 0.5,
        nms_iou: float = 0.3,
        channels_last: bool = True,
        cuda_graphs: bool = True,
        max_batch: int = 16,
    ) -> None:
        super().__init__(FULL_RANGE if full_range else SHORT_RANGE, min_score, nms_iou)
        self.device = torch.device(device)
        self.model = TorchBlazeFace.bundled(full_range).to(self.device).eval()
        # NHWC activations, where depthwise convolutions run faster: network alone, ms an image, short/full
        # range: 2-core CPU at batch 16 2.15/7.77 → 1.61/3.53; H200 at batch 256 0.018/0.047 → 0.013/0.039
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self._graphs = (
            _GraphedNetwork(self.model, self.size, max_batch, self.memory_format)
            if cuda_graphs and self.device.type == "cuda"
            else None
        )

    def detect(self, image: ImageInput) -> list[Detection]:
        """One image: ``detect_batch([image])[0]``."""
        return self.detect_batch([image])[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[ImageInput] | torch.Tensor) -> list[list[Detection]]:
        """Detections per image, highest score first, as BlazeFaceDetector.detect gives them.

        ``images``: a list of (H, W, 3) uint8 RGB numpy arrays or uint8 tensors, (3, H, W) or (H, W, 3), of
        any sizes (a tensor whose first dimension is 3 is taken as CHW, torchvision's layout); or one uint8
        tensor batch, (N, 3, H, W) or (N, H, W, 3).
        """
        regressors, logits, geometry = self.raw_batch(images)
        return [
            self.decode(regressors[k], logits[k, :, 0], ox, oy, side)
            for k, (ox, oy, side) in enumerate(geometry)
        ]

    @torch.inference_mode()
    def raw_batch(
        self, images: Sequence[ImageInput] | torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
        """The network's raw outputs for ``detect_batch``'s ``images``: regressors (N, anchors, 16) and logits
        (N, anchors, 1) on the host, and each image's letterbox (ox, oy, side); ``decode`` turns image k's
        into detections (the model host returns these, so that the per-image decoding runs in its clients)."""
        regressors, logits, geometry = self.raw_batch_on_device(images)
        return regressors.cpu().numpy(), logits.cpu().numpy(), geometry

    @torch.inference_mode()
    def raw_batch_on_device(
        self, images: Sequence[ImageInput] | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]]]:
        """``raw_batch`` with the outputs left on the device and nothing waited for: a caller with more to
        copy back (the GPU front end: the images too) waits once for all of it, on the current stream."""
        chw = _as_chw_list(images, self.device)
        if not chw:
            return torch.zeros((0, 0, 16)), torch.zeros((0, 0, 1)), []
        size = self.size
        canvas = torch.zeros((len(chw), 3, size, size), dtype=torch.float32, device=self.device)
        geometry: list[tuple[int, int, int]] = []
        # images of one size are resized together
        groups: dict[tuple[int, int], list[int]] = {}
        for k, img in enumerate(chw):
            h, w = img.shape[1:]
            nw, nh, ox, oy = letterbox(h, w, size)
            geometry.append((ox, oy, max(h, w)))
            groups.setdefault((h, w), []).append(k)
        # on CPU one at a time: a batch of full-size frames falls out of cache (640×360: 2.4 vs 1.6 ms each)
        step = 1 if self.device.type == "cpu" else len(chw)
        for (h, w), members in groups.items():
            nw, nh, ox, oy = letterbox(h, w, size)
            for start in range(0, len(members), step):
                part = members[start : start + step]
                batch = torch.stack([chw[k] for k in part]).float()
                canvas[part, :, oy : oy + nh, ox : ox + nw] = shrink_torch(batch, nw, nh)
        x = (canvas / 127.5 - 1.0).contiguous(memory_format=self.memory_format)
        regressors, logits = self._graphs(x) if self._graphs is not None else self.model(x)
        return regressors, logits, geometry

    def close(self) -> None:
        pass


class _GraphedNetwork:
    """The network as one CUDA graph per batch bucket (1, 2, 4, … ``max_batch``), captured once: a batch
    runs the smallest bucket that holds it (the rest of the bucket's input is left over and ignored). Why:
    eagerly, each of the ~117 layers is a Python call and a launch (batch 1: 3-4 ms on the H200, mostly
    CPU); and fixed shapes mean cuDNN never autotunes in a request (``cudnn.benchmark``, which the model's
    backend turns on for the process, autotuned every new batch size: 10 service replicas kept the GPU 99 %
    busy at 9 requests/s)."""

    def __init__(self, model: TorchBlazeFace, size: int, max_batch: int, memory_format) -> None:
        self.model = model
        self.buckets = [1 << k for k in range(max(1, max_batch).bit_length()) if 1 << k <= max_batch]
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, tuple[torch.Tensor, ...]] = {}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        device = next(model.buffers()).device
        stream = torch.cuda.Stream(device)  # its own capture stream (never torch's shared one)
        stream.wait_stream(torch.cuda.current_stream(device))
        with (
            torch.inference_mode(),
            torch.backends.cudnn.flags(enabled=True, benchmark=False),
            torch.cuda.stream(stream),
        ):
            for b in self.buckets:
                x = torch.zeros((b, 3, size, size), device=device).contiguous(memory_format=memory_format)
                for _ in range(2):  # lazy init outside the capture
                    model(x)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    out = model(x)
                self.inputs[b], self.outputs[b], self.graphs[b] = x, out, graph
        torch.cuda.current_stream(device).wait_stream(stream)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = self.buckets[-1]
        parts = []
        for start in range(0, x.shape[0], top):
            chunk = x[start : start + top]
            n = chunk.shape[0]
            b = next(k for k in self.buckets if k >= n)
            self.inputs[b][:n].copy_(chunk)
            self.graphs[b].replay()
            parts.append(tuple(o[:n].clone() for o in self.outputs[b]))
        if len(parts) == 1:
            return parts[0]  # type: ignore[return-value]
        return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]


def _as_chw_list(images: Sequence[ImageInput] | torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Each image as a (3, H, W) uint8 tensor on ``device``."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(
                f"a tensor batch must be (N, 3, H, W) or (N, H, W, 3), got {tuple(images.shape)}"
            )
        images = list(images if images.shape[1] == 3 else images.permute(0, 3, 1, 2))
        return [_check(img.to(device)) for img in images]
    out = []
    for img in images:
        if isinstance(img, np.ndarray):
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"expected an (H, W, 3) RGB array, got {img.shape}")
            img = torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1)
        elif img.dim() == 3 and img.shape[0] != 3:
            img = img.to(device).permute(2, 0, 1)
        out.append(_check(img.to(device)))
    return out


def _check(img: torch.Tensor) -> torch.Tensor:
    if img.dim() != 3 or img.shape[0] != 3 or img.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 RGB image, got {img.dtype} {tuple(img.shape)}")
    return img
