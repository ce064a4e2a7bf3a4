"""Inference: backends (tensorrt / tensorrt_rtx, torch, onnxruntime), engine builder + cache, executor.

    from face3d_live.inference import create_backend, InferenceExecutor
    with create_backend("auto", model="r50") as backend:          # activated; logs what it chose and why
        out = backend.infer_sync(batch)                            # (N, 3, 224, 224) f32 -> (N, 1639) f32
        with InferenceExecutor(backend, streams=2) as ex:          # double-buffered, results in order
            for out in ex.map(batches): ...

Heavy packages (torch, onnxruntime, tensorrt) load only when a backend activates.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from face3d_live.errors import BackendUnavailable, ConfigError, EngineBuildError
from face3d_live.inference.base import InferenceBackend, Slot
from face3d_live.inference.executor import InferenceExecutor
from face3d_live.inference.spec import PRECISIONS, ModelSpec

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "InferenceBackend",
    "InferenceExecutor",
    "ModelSpec",
    "Slot",
    "backend_class",
    "create_backend",
    "model_spec",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "torch", "onnxruntime")
# fastest first: "auto" takes the first that activates
AUTO_ORDER = (("tensorrt", "cuda"), ("torch", "cuda"), ("onnxruntime", "cpu"), ("torch", "cpu"))


def backend_class(name: str) -> type[InferenceBackend]:
    if name == "tensorrt":
        from face3d_live.inference.trt_backend import TensorRTBackend

        return TensorRTBackend
    if name == "torch":
        from face3d_live.inference.torch_backend import TorchBackend

        return TorchBackend
    if name == "onnxruntime":
        from face3d_live.inference.ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


def model_spec(model: str | ModelSpec | torch.nn.Module) -> ModelSpec:
    """A ModelSpec from a registered name ("r50"), a ModelSpec, or any torch module."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        if model == "r50":
            from face3d_live.models.r50_face import r50_spec

            return r50_spec()
        raise ConfigError(
            f"unknown model {model!r} for the inference backends; choose 'r50' or pass a ModelSpec"
        )
    return ModelSpec.from_module(model)


def create_backend(
    name: str = "auto",
    *,
    model: str | ModelSpec | torch.nn.Module = "r50",
    precision: str | None = None,
    device: str | None = None,
    max_batch: int = 16,
    cache_dir: str | None = None,
    **options,
) -> InferenceBackend:
    """An *activated* backend (the caller owns it: ``deactivate()`` or ``with``).

    ``name="auto"``: the fastest that activates here (tensorrt, torch-cuda, onnxruntime, torch-cpu),
    logging which one and why the faster ones were skipped. ``precision=None``: each backend's own
    best (fp16 on GPU, fp32 on CPU). ``name="tensorrt"`` on a GPU that TensorRT cannot serve (none
    installed, or TensorRT-RTX on compute capability 9.0) falls back to torch with one warning.
    ``options`` go to the backend class (``cuda_graphs``, ``channels_last``, ``profile``, ``threads``…).
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if device not in (None, "cuda", "cpu"):
        raise ConfigError(f"unknown device {device!r}; choose 'cuda' or 'cpu'")
    known = set().union(*(_options_of(backend_class(b)) for b in BACKENDS[1:])) - {"precision", "device"}
    if unknown := sorted(set(options) - known):
        raise ConfigError(
            f"unknown backend option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    spec = model_spec(model)
    common = dict(precision=precision, max_batch=max_batch, cache_dir=cache_dir)

    def make(backend: str, dev: str | None) -> InferenceBackend:
        cls = backend_class(backend)
        accepted = {k: v for k, v in options.items() if k in _options_of(cls)}
        instance = cls(spec, device=dev, **common, **accepted)
        try:
            return instance.activate()
        except BaseException:
            instance.deactivate()
            raise

    if name != "auto":
        try:
            return make(name, device)
        except (BackendUnavailable, EngineBuildError) as exc:
            from face3d_live.inference.cuda import cuda_status

            if name != "tensorrt" or cuda_status() or device == "cpu":
                raise
            log.warning("tensorrt unavailable (%s); falling back to torch on the GPU", exc)
            return make("torch", "cuda")

    skipped: list[str] = []
    for backend, dev in AUTO_ORDER:
        if device is not None and dev != device:
            continue
        try:
            chosen = make(backend, dev)
        except (BackendUnavailable, EngineBuildError) as exc:
            skipped.append(f"{backend}/{dev}: {exc}")
            continue
        log.info("backend auto -> %s%s", chosen.label, f"; skipped {'; '.join(skipped)}" if skipped else "")
        return chosen
    raise BackendUnavailable("no inference backend works here: " + "; ".join(skipped))


def _options_of(cls: type) -> set[str]:
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values() if p.kind == p.KEYWORD_ONLY}
    return names
