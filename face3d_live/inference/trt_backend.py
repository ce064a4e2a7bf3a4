"""TensorRT / TensorRT-RTX runner: one execution context per slot, on the slot's stream.

The hot path is the thin one both flavours share: ``set_input_shape`` + ``execute_async_v3`` (tensor
addresses are bound once per slot, the buffers never move).
"""

from __future__ import annotations

import logging
from pathlib import Path

from face3d_live.errors import BackendUnavailable, EngineBuildError
from face3d_live.inference import cuda
from face3d_live.inference.base import InferenceBackend, Slot
from face3d_live.inference.trt_build import (
    EngineCache,
    Profile,
    _last_errors,
    check_runtime_cc,
    flavour,
    import_trt,
    is_rtx,
    parse_cc,
    trt_logger,
)
from face3d_live.models.export import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)


class TensorRTBackend(InferenceBackend):
    name = "tensorrt"
    default_precision = "fp16"

    def __init__(self, spec, *, profile: Profile = Profile(), progress: bool = False, **kwargs) -> None:
        super().__init__(spec, **kwargs)
        if self.max_batch > profile.max:  # the engine must accept every batch a slot can hold
            profile = Profile(profile.min, profile.opt, self.max_batch)
        self.profile = profile
        self.progress = progress
        self._trt = None
        self._runtime = None
        self._engine = None
        self._runtime_config = None
        self._runtime_cache = None
        self._runtime_cache_path: Path | None = None

    def _activate(self) -> None:
        if self.device != "cuda":
            raise BackendUnavailable(
                f"tensorrt needs a CUDA GPU ({cuda.cuda_status() or 'device=cpu was asked'})"
            )
        trt = import_trt()
        cc = parse_cc(cuda.compute_capability())
        check_runtime_cc(trt, cc, cuda.device_name())
        onnx_path = self.spec.onnx(self.precision, self.cache_dir, self.input_format)
        cache = EngineCache(self.cache_dir)
        args = dict(
            name=self.spec.name + ("-u8" if self.input_format == "uint8" else ""),
            precision=self.precision,
            cc=cc,
            profile=self.profile,
            input_shape=self.sample_shape,
            progress=self.progress,
            trt=trt,
        )
        entry = cache.get(onnx_path, **args)
        runtime = trt.Runtime(trt_logger(trt))
        engine = runtime.deserialize_cuda_engine(entry.path.read_bytes())
        if engine is None:  # passed the sidecar check yet will not load (driver/plugin change): rebuild once
            log.warning("engine %s does not load (%s); rebuilding it", entry.path.name, _last_errors(trt))
            entry = cache.get(onnx_path, rebuild=True, **args)
            engine = runtime.deserialize_cuda_engine(entry.path.read_bytes())
            if engine is None:
                raise EngineBuildError(f"TensorRT cannot load {entry.path}: {_last_errors(trt)}")
        for name in (INPUT_NAME, OUTPUT_NAME):
            if str(engine.get_tensor_dtype(name)) != str(trt.DataType.FLOAT):
                raise EngineBuildError(
                    f"engine tensor {name!r} is {engine.get_tensor_dtype(name)}, expected float32"
                )
        self._trt, self._runtime, self._engine = trt, runtime, engine
        if is_rtx(trt):
            self._setup_runtime_cache(entry.path.with_suffix(".runtime-cache"))
        self.detail = f"engine={entry.path.name} ({'built' if entry.built else 'cached'}, {flavour(trt)})"

    def _setup_runtime_cache(self, path: Path) -> None:
        """TensorRT-RTX compiles kernels for the GPU at first use; its runtime cache keeps them."""
        try:
            config = self._engine.create_runtime_config()
            cache = config.create_runtime_cache()
            if path.is_file():
                cache.deserialize(path.read_bytes())
            config.set_runtime_cache(cache)
        except (AttributeError, RuntimeError, TypeError) as exc:  # older RTX builds: run without it
            log.info("TensorRT-RTX runtime cache not used (%s)", exc)
            return
        self._runtime_config, self._runtime_cache, self._runtime_cache_path = config, cache, path

    def _deactivate(self) -> None:
        if self._runtime_cache is not None and self._runtime_cache_path is not None:
            try:
                self._runtime_cache_path.write_bytes(bytes(self._runtime_cache.serialize()))
            except (OSError, RuntimeError) as exc:
                log.info("runtime cache not saved (%s)", exc)
        self._runtime_config = self._runtime_cache = None
        self._engine = self._runtime = None

    def _create_slot(self, slot: Slot) -> None:
        dev_in = cuda.DeviceBuffer(slot.host_in.nbytes)
        slot.resources.callback(dev_in.close)
        dev_out = cuda.DeviceBuffer(slot.host_out.nbytes)
        slot.resources.callback(dev_out.close)
        if self._runtime_config is not None:
            context = self._engine.create_execution_context(self._runtime_config)
        else:
            context = self._engine.create_execution_context()
        if context is None:
            raise EngineBuildError(f"cannot create a TensorRT execution context: {_last_errors(self._trt)}")
        context.set_tensor_address(INPUT_NAME, dev_in.ptr)
        context.set_tensor_address(OUTPUT_NAME, dev_out.ptr)
        slot.dev_in, slot.dev_out, slot.state = dev_in.ptr, dev_out.ptr, context
        slot.resources.callback(setattr, slot, "state", None)  # drop the context before its buffers

    def _infer(self, slot: Slot, n: int) -> None:
        context = slot.state
        context.set_input_shape(INPUT_NAME, (n, *self.sample_shape))
        if not context.execute_async_v3(slot.stream.ptr):
            raise EngineBuildError(f"TensorRT execution failed: {_last_errors(self._trt)}")
