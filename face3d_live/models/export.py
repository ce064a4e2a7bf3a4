"""ONNX export of any project model (dynamic batch axis) and its FP16 and INT8 (Q/DQ) variants.

Every variant keeps float32 input and output, so one set of I/O buffers serves all precisions:

- fp32: ``torch.onnx.export(dynamo=False)``, opset 17 (matches onnxruntime to ~3e-8).
- fp16: onnxruntime's float16 converter with ``keep_io_types`` (TensorRT-RTX networks are strongly
  typed: the ONNX types *are* the engine precision).
- int8: onnxruntime ``quantize_static`` in QDQ format, symmetric activations and weights, per-channel
  weights and ``QuantizeBias=False``: the only setting whose output TensorRT-RTX builds (measured).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from face3d_live.errors import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def module_sha256(module: torch.nn.Module) -> str:
    """Content hash of a module: its structure (repr) and every parameter and buffer.

    Keys the ONNX export cache, so a pruned or retrained variant of the same class never reuses
    another's export.
    """
    import torch

    h = hashlib.sha256(repr(module).encode())
    for name, t in module.state_dict().items():
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())  # raw bytes: works for bf16/fp16 too
    return h.hexdigest()


def uint8_nhwc_input(module: torch.nn.Module) -> torch.nn.Module:
    """Wrap a float NCHW [0, 1] model to take uint8 NHWC RGB crops (as they come from the cropper).

    The conversion then runs on the accelerator, inside the graph, and a crop crosses PCIe as 150 KB
    instead of 600 KB.
    """
    import torch

    class Uint8NHWC(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # cast first: TensorRT transposes no uint8. Div, not Mul: quantize_static would quantize a
            # Mul's constant, and TensorRT allows quantized constants only in front of a DequantizeLinear
            return self.inner((x.float() / 255.0).permute(0, 3, 1, 2))

    return Uint8NHWC(module).eval()


def export_onnx(
    module: torch.nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...] = (3, 224, 224),
    opset: int = OPSET,
    input_format: str = "float32",
) -> Path:
    """FP32 ONNX of ``module`` with input ``input`` and output ``output`` (N, D).

    ``input_format``: "float32" = (N, C, H, W) float32 in [0, 1]; "uint8" = (N, H, W, C) uint8 RGB,
    converted inside the graph (``input_shape`` is always the model's (C, H, W)).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    device = next(module.parameters()).device
    if input_format == "uint8":
        module = uint8_nhwc_input(module)
        c, h, w = input_shape
        dummy = torch.randint(0, 256, (2, h, w, c), dtype=torch.uint8, device=device)
    else:
        dummy = torch.rand(2, *input_shape, device=device)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (dummy,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    tmp.replace(path)
    return path


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """FP16 weights and activations, float32 I/O (casts at the edges)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to fp16" notices for tiny BN epsilons
        half = convert_float_to_float16(model, keep_io_types=True)
    dst = Path(dst)
    onnx.save(half, str(dst))
    return dst


class _Batches:
    """onnxruntime CalibrationDataReader over (N, C, H, W) float32 samples, in small batches."""

    def __init__(self, samples: np.ndarray, batch: int = 8) -> None:
        self._it: Iterator[np.ndarray] = iter([samples[i : i + batch] for i in range(0, len(samples), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: np.ascontiguousarray(x)}

    def rewind(self) -> None:  # older onnxruntime versions call it
        pass


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray) -> Path:
    """INT8 Q/DQ ONNX calibrated (min-max) on ``calibration``: real face crops in the model's input
    format ((N, C, H, W) float32 in [0, 1], or (N, H, W, C) uint8); the activation ranges come from them.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration.ndim != 4 or len(calibration) == 0:
        raise ModelError(f"INT8 calibration needs (N, C, H, W) samples, got shape {calibration.shape}")
    reader = type("Reader", (_Batches, CalibrationDataReader), {})(calibration)
    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing (BN folding, shape inference) is an optimisation only
            log.warning("onnx pre-processing skipped (%s)", exc)
            pre = Path(src)
        quantize_static(
            str(pre),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,  # TensorRT-RTX rejects int32 bias Q/DQ
            },
        )
    return dst


def export_variant(
    module: torch.nn.Module,
    path: str | Path,
    precision: str,
    *,
    input_shape: tuple[int, ...] = (3, 224, 224),
    calibration: np.ndarray | None = None,
) -> Path:
    """Export ``module`` at ``precision`` ("fp32", "fp16", "int8") to ``path``."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    path = Path(path)
    if precision == "fp32":
        return export_onnx(module, path, input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(module, Path(tmp) / "fp32.onnx", input_shape)
        if precision == "fp16":
            return convert_fp16(fp32, path)
        if calibration is None:
            raise ModelError("INT8 export needs calibration crops (N, C, H, W) float32 in [0, 1]")
        return quantize_int8(fp32, path, calibration)
