"""What a backend runs: a torch module and/or ONNX files, with the I/O shapes.

Any torch module works (FaceR50, a pruned or quantised variant of it, something else with one
(N, C, H, W) float32 input and one (N, D) float32 output). Exports are cached by the module's
*content* hash (structure + weights) and engines by the ONNX file's hash, never by name, so a
retrained or pruned model can never pick up a stale export or engine.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from face3d_live.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INPUT_FORMATS = ("float32", "uint8")  # (N, C, H, W) float32 in [0, 1] | (N, H, W, C) uint8 RGB
ENGINES_ENV = "FACE3D_ENGINES"


def default_cache_dir() -> Path:
    """$FACE3D_ENGINES, else the checkout's engines/ (development), else ~/.cache/face3d_live/engines."""
    env = os.environ.get(ENGINES_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2] / "engines"
    return repo if repo.is_dir() else Path.home() / ".cache" / "face3d_live" / "engines"


def check_input_format(input_format: str) -> str:
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"unknown input format {input_format!r}; choose one of: {', '.join(INPUT_FORMATS)}")
    return input_format


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return precision


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """A model for the inference backends.

    name:         label for logs and engine file names (not a cache key).
    module:       an ``nn.Module`` or a zero-argument callable returning one (loaded on first use).
    onnx_files:   ready ONNX per precision, e.g. ``{"int8": "qat.onnx"}`` from quantisation-aware
                  training; used instead of exporting ``module`` at that precision.
    input_shape:  (C, H, W) of one sample; the batch axis is dynamic.
    output_dim:   D of the (N, D) float32 output.
    calibration:  zero-argument callable giving (N, C, H, W) float32 crops for INT8 calibration.
    weights:      the model's weights file (r50 family): its FP32 ONNX is then written straight from the
                  file (models/onnx_build.py), so onnxruntime and TensorRT need no torch.
    """

    name: str
    module: torch.nn.Module | Callable[[], torch.nn.Module] | None = None
    onnx_files: Mapping[str, str | Path] = field(default_factory=dict)
    input_shape: tuple[int, int, int] = (3, 224, 224)
    output_dim: int = 1639  # models/layout.py OUTPUT_DIM
    calibration: Callable[[], np.ndarray] | None = None
    weights: str | Path | None = None

    @classmethod
    def from_module(cls, module: torch.nn.Module, name: str | None = None, **kwargs) -> ModelSpec:
        return cls(name=name or type(module).__name__.lower(), module=module, **kwargs)

    @functools.cached_property
    def torch_module(self) -> torch.nn.Module:
        """The eval-mode module (loaded once). ModelError if this spec has none."""
        import torch

        if self.module is None:
            raise ModelError(
                f"model {self.name!r} has no torch module (ONNX only); use onnxruntime or tensorrt"
            )
        module = self.module if isinstance(self.module, torch.nn.Module) else self.module()
        return module.eval()

    @functools.cached_property
    def module_sha256(self) -> str:
        from face3d_live.models.export import module_sha256

        return module_sha256(self.torch_module)

    def sample_shape(self, input_format: str = "float32") -> tuple[int, int, int]:
        """One sample's shape in ``input_format``: (C, H, W) float32 or (H, W, C) uint8."""
        c, h, w = self.input_shape
        return (c, h, w) if check_input_format(input_format) == "float32" else (h, w, c)

    def onnx(
        self, precision: str, cache_dir: str | Path | None = None, input_format: str = "float32"
    ) -> Path:
        """ONNX file at ``precision``: given in ``onnx_files``, or made once into ``cache_dir/onnx``.

        fp32 is exported from the module (keyed by its content hash); fp16 and int8 are converted from
        the fp32 file (keyed by its sha256, plus the calibration data's for int8), so an ONNX-only spec
        (``onnx_files={"fp32": …}``) gets every precision too. ``input_format="uint8"`` exports the
        model behind a uint8 NHWC -> float NCHW conversion (``onnx_files`` are float32 input only).
        """
        from face3d_live.models import export

        check_precision(precision)
        if check_input_format(input_format) == "uint8":
            return self._onnx_uint8(precision, cache_dir)
        if precision in self.onnx_files:
            path = Path(self.onnx_files[precision])
            if not path.is_file():
                raise ModelError(f"ONNX file {path} for model {self.name!r} ({precision}) not found")
            return path
        if precision == "fp32":
            if self.weights is not None:
                return self._from_weights("float32", cache_dir)
            key = self.module_sha256

            def make(dst: Path) -> Path:
                module = self.torch_module
                if next(module.parameters()).device.type != "cpu":  # export a CPU copy; leave the GPU alone
                    import copy

                    module = copy.deepcopy(module).cpu().float()
                return export.export_onnx(module, dst, self.input_shape)

            return self._cached(f"{key[:16]}-{precision}", cache_dir, make)
        return self._converted(self.onnx("fp32", cache_dir), precision, cache_dir, "", lambda x: x)

    def _onnx_uint8(self, precision: str, cache_dir: str | Path | None) -> Path:
        from face3d_live.models import export

        if precision == "fp32":
            if self.weights is not None:
                return self._from_weights("uint8", cache_dir)
            key = hashlib.sha256(f"{self.module_sha256}|uint8".encode()).hexdigest()

            def make(dst: Path) -> Path:
                import copy

                module = copy.deepcopy(self.torch_module).cpu().float()
                return export.export_onnx(module, dst, self.input_shape, input_format="uint8")

            return self._cached(f"{key[:16]}-{precision}-u8", cache_dir, make)

        def to_uint8_nhwc(crops: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(
                np.clip(crops * 255 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
            )

        return self._converted(
            self._onnx_uint8("fp32", cache_dir), precision, cache_dir, "-u8", to_uint8_nhwc
        )

    def _from_weights(self, input_format: str, cache_dir: str | Path | None) -> Path:
        """FP32 ONNX written from the weights file without torch, keyed by the file's content sha256."""
        from face3d_live.models.onnx_build import write_onnx
        from face3d_live.models.weights import read_metadata

        digest = read_metadata(self.weights)["sha256"]
        key = hashlib.sha256(f"{digest}|{input_format}|onnx_build".encode()).hexdigest()
        suffix = "-u8" if input_format == "uint8" else ""
        return self._cached(
            f"{key[:16]}-fp32{suffix}", cache_dir, lambda dst: write_onnx(self.weights, dst, input_format)
        )

    def _converted(
        self,
        fp32: Path,
        precision: str,
        cache_dir: str | Path | None,
        suffix: str,
        to_input: Callable[[np.ndarray], np.ndarray],
    ) -> Path:
        """fp16 / int8 ONNX converted from an fp32 export, keyed by the fp32 file's sha256 (plus the
        calibration data's for int8). ``to_input`` turns float NCHW calibration crops into the model's input."""
        from face3d_live.models import export

        key = hashlib.sha256(f"{export.file_sha256(fp32)}|{precision}".encode()).hexdigest()
        if precision == "fp16":

            def make(dst: Path) -> Path:
                return export.convert_fp16(fp32, dst)

        else:
            if self.calibration is None:
                raise ModelError(
                    f"model {self.name!r} has no INT8 calibration data; give ModelSpec(calibration=...) "
                    "or an int8 ONNX in onnx_files"
                )
            calibration = to_input(np.ascontiguousarray(self.calibration(), np.float32))
            key = hashlib.sha256(
                (key + hashlib.sha256(calibration.tobytes()).hexdigest()).encode()
            ).hexdigest()

            def make(dst: Path) -> Path:
                return export.quantize_int8(fp32, dst, calibration)

        return self._cached(f"{key[:16]}-{precision}{suffix}", cache_dir, make)

    def _cached(self, stem: str, cache_dir: str | Path | None, make: Callable[[Path], Path]) -> Path:
        from filelock import FileLock

        path = Path(cache_dir or default_cache_dir()) / "onnx" / f"{self.name}-{stem}.onnx"
        if path.is_file():
            log.debug("ONNX cache hit: %s", path)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        # processes that start together (Ray workers, service replicas) would write one .partial file at once:
        # one exports, the others wait and then find it
        with FileLock(str(path) + ".lock"):
            if path.is_file():
                return path
            log.info("exporting %s to ONNX -> %s", self.name, path)
            tmp = path.with_name(path.stem + ".partial.onnx")
            make(tmp)
            tmp.replace(path)
        return path
