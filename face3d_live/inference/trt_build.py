"""TensorRT / TensorRT-RTX: one import shim, the engine builder and the engine cache.

The same thin code path serves ``import tensorrt`` and ``import tensorrt_rtx``. Networks are built
strongly typed (TensorRT-RTX only knows that mode), so the precision comes from the ONNX types:
export the FP16 or Q/DQ INT8 variant (models/export.py), never a builder flag.

Cache: ``engines/<name>-<precision>-sm<cc>-<key16>.engine`` plus a ``.json`` sidecar. The key hashes
the ONNX *content*, precision, target compute capability, TensorRT flavour and version, input shape
and optimisation profile. The sidecar also holds the engine's sha256: a truncated, corrupt or foreign
file (another key, no sidecar) is reported in one line and rebuilt, never loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from face3d_live.errors import BackendUnavailable, ConfigError, EngineBuildError
from face3d_live.models.export import INPUT_NAME, file_sha256

log = logging.getLogger(__name__)

TRT_MODULE_ENV = "FACE3D_TRT"  # force "tensorrt" or "tensorrt_rtx" when both are installed
SIDECAR_VERSION = 1


@functools.cache
def import_trt(preferred: str | None = None) -> Any:
    """``tensorrt`` if installed, else ``tensorrt_rtx`` (or $FACE3D_TRT)."""
    names = (
        [preferred or os.environ.get(TRT_MODULE_ENV)] if (preferred or os.environ.get(TRT_MODULE_ENV)) else []
    )
    names += [n for n in ("tensorrt", "tensorrt_rtx") if n not in names]
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendUnavailable(
        "neither tensorrt nor tensorrt_rtx is installed: pip install 'tensorrt-rtx-cu13==1.7.1.116' cuda-python"
    )


def is_rtx(trt: Any) -> bool:
    return trt.__name__.startswith("tensorrt_rtx")


def flavour(trt: Any) -> str:
    return f"{trt.__name__}-{trt.__version__}"


# ---- compute capabilities ----------------------------------------------------------------------------
def parse_cc(text: str | tuple[int, int]) -> str:
    """'86', '8.6', 'sm86', 'SM_86', (8, 6) -> '86'."""
    if isinstance(text, tuple):
        return f"{text[0]}{text[1]}"
    m = re.fullmatch(r"(?:sm_?)?(\d+)(?:\.(\d))?", str(text).strip().lower())
    if not m:
        raise ConfigError(f"cannot read compute capability {text!r}; write it like 86, 8.6 or sm86")
    return m.group(1) + (m.group(2) or "")


def buildable_ccs(trt: Any) -> list[str]:
    """Compute capabilities the builder can target ahead of time (TensorRT-RTX only)."""
    if not is_rtx(trt):
        return []
    return [name[2:] for name in trt.ComputeCapability.__members__ if name.startswith("SM")]


def check_runtime_cc(trt: Any, cc: str, gpu_name: str = "this GPU") -> None:
    """BackendUnavailable if engines of this TensorRT flavour cannot run on compute capability ``cc``."""
    if is_rtx(trt) and cc not in buildable_ccs(trt):
        raise BackendUnavailable(
            f"TensorRT-RTX does not support compute capability {cc[:-1]}.{cc[-1]} ({gpu_name}); "
            f"it runs on {', '.join(c[:-1] + '.' + c[-1] for c in buildable_ccs(trt))}"
        )


# ---- logging -----------------------------------------------------------------------------------------
@functools.cache
def trt_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to ``logging`` and remembers the last errors."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:  # noqa: A003 (TensorRT's name)
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(str(msg))
                del self.errors[:-20]
                log.debug("TensorRT: %s", msg)  # surfaced through the exception that follows
            elif severity == sev.WARNING:
                log.info("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Logger()


def _last_errors(trt: Any) -> str:
    errs = trt_logger(trt).errors
    text = errs[-1] if errs else "no detail"
    errs.clear()
    return text.splitlines()[0][:300]


# ---- ONNX precision ----------------------------------------------------------------------------------
def onnx_precision(path: str | Path) -> str:
    """'int8' (Q/DQ nodes), 'fp16' (float16 initializers) or 'fp32', read from the ONNX itself."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    if "QuantizeLinear" in ops or "DequantizeLinear" in ops:
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


# ---- builder -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """Optimisation profile over the batch axis: engines accept min..max, tuned for opt."""

    min: int = 1
    opt: int = 4
    max: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")

    @classmethod
    def parse(cls, text: str) -> Profile:
        try:
            a, b, c = (int(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(f"profile must be MIN,OPT,MAX batch sizes like 1,4,16, got {text!r}") from None
        return cls(a, b, c)


def _progress_monitor(trt: Any) -> Any:
    """A builder progress monitor: one tqdm bar for the top phase, current sub-phase as its postfix."""
    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bar = None

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            if parent_phase is None:
                self.bar = tqdm(total=num_steps, desc=phase_name, unit="step", leave=False)
            elif self.bar is not None:
                self.bar.set_postfix_str(phase_name, refresh=True)

        def step_complete(self, phase_name, step) -> bool:
            if self.bar is not None and phase_name == self.bar.desc:
                self.bar.update(1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name) -> None:
            if self.bar is not None and phase_name == self.bar.desc:
                self.bar.close()
                self.bar = None

    return Monitor()


def build_engine(
    onnx_path: str | Path,
    *,
    cc: str | None = None,
    profile: Profile = Profile(),
    input_shape: tuple[int, int, int] = (3, 224, 224),
    progress: bool = False,
    timing_cache: Path | None = None,
    trt: Any = None,
) -> bytes:
    """Serialised engine for ``onnx_path``.

    ``cc``: target compute capability ('86'); TensorRT-RTX builds it ahead of time without a GPU.
    Full TensorRT builds for the GPU in this machine only (``cc`` must be None or match it).
    """
    trt = trt or import_trt()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    if builder is None:
        raise EngineBuildError(f"cannot create a TensorRT builder: {_last_errors(trt)}")
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {errors[:400]}")
    config = builder.create_builder_config()
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(
        INPUT_NAME, (profile.min, *input_shape), (profile.opt, *input_shape), (profile.max, *input_shape)
    )
    config.add_optimization_profile(opt_profile)
    if is_rtx(trt):
        if cc is None:
            raise EngineBuildError("TensorRT-RTX ahead-of-time builds need a target compute capability")
        if cc not in buildable_ccs(trt):
            raise EngineBuildError(
                f"TensorRT-RTX cannot target compute capability {cc}; choose from {', '.join(buildable_ccs(trt))}"
            )
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{cc}"), 0)
    else:  # full TensorRT builds for the GPU it runs on; its timing cache speeds up rebuilds
        from face3d_live.inference import cuda

        here = parse_cc(cuda.compute_capability()) if not cuda.cuda_status() else None
        if here is None or (cc is not None and cc != here):
            raise EngineBuildError(
                f"full TensorRT builds only for this machine's GPU ({'sm' + here if here else 'none here'}), "
                f"not sm{cc}; install tensorrt-rtx for ahead-of-time builds"
            )
        cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=True)
    monitor = _progress_monitor(trt) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if monitor is not None and monitor.bar is not None:
        monitor.bar.close()
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {onnx_path} for sm{cc}: {_last_errors(trt)}")
    if not is_rtx(trt) and timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


# ---- cache -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    precision: str
    cc: str
    trt: str  # flavour-version, e.g. tensorrt_rtx-1.7.1.116
    input_shape: tuple[int, int, int]
    profile: tuple[int, int, int]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CachedEngine:
    path: Path
    key: EngineKey
    built: bool  # False: cache hit
    build_s: float
    size_mb: float


class EngineCache:
    """Engines on disk, found by key, verified by their sidecar before use."""

    def __init__(self, directory: str | Path = "engines") -> None:
        self.directory = Path(directory)

    def key(
        self, onnx_path: str | Path, precision: str, cc: str, *, profile: Profile, input_shape, trt: Any
    ) -> EngineKey:
        return EngineKey(
            onnx_sha256=file_sha256(onnx_path),
            precision=precision,
            cc=cc,
            trt=flavour(trt),
            input_shape=tuple(input_shape),
            profile=(profile.min, profile.opt, profile.max),
        )

    def path_for(self, name: str, key: EngineKey) -> Path:
        return self.directory / f"{name}-{key.precision}-sm{key.cc}-{key.digest[:16]}.engine"

    def verify(self, path: Path, key: EngineKey) -> str:
        """'' if ``path`` is the engine for ``key``, else why not (one line)."""
        if not path.is_file():
            return "missing"
        sidecar = path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
        except FileNotFoundError:
            return "no sidecar (foreign or half-written file)"
        except (OSError, ValueError) as exc:
            return f"unreadable sidecar ({exc})"
        if meta.get("key") != json.loads(json.dumps(dataclasses.asdict(key))):  # tuples -> lists
            return "sidecar belongs to another model, precision or TensorRT version"
        if path.stat().st_size != meta.get("size") or file_sha256(path) != meta.get("sha256"):
            return "file is corrupt (size or sha256 differs from its sidecar)"
        return ""

    def get(
        self,
        onnx_path: str | Path,
        *,
        name: str,
        precision: str,
        cc: str,
        profile: Profile = Profile(),
        input_shape: tuple[int, int, int] = (3, 224, 224),
        progress: bool = False,
        rebuild: bool = False,
        trt: Any = None,
    ) -> CachedEngine:
        """The engine file for this ONNX/precision/cc/profile: from the cache, or built now."""
        trt = trt or import_trt()
        actual = onnx_precision(onnx_path)
        if actual != precision:
            raise EngineBuildError(
                f"{onnx_path} is a {actual} model, not {precision}: networks are strongly typed, export the "
                f"{precision} variant (face3d_live.models.export)"
            )
        key = self.key(onnx_path, precision, cc, profile=profile, input_shape=input_shape, trt=trt)
        path = self.path_for(name, key)
        if not rebuild and not self.verify(path, key):
            log.info("engine cache hit: %s", path)
            return CachedEngine(path, key, False, 0.0, path.stat().st_size / 2**20)
        from filelock import FileLock

        self.directory.mkdir(parents=True, exist_ok=True)
        # workers and replicas that start together would each build (minutes) into one .partial file: one
        # builds, the others wait and then load its engine
        with FileLock(str(path.with_suffix(".lock"))):
            if not rebuild:
                reason = self.verify(path, key)
                if not reason:
                    log.info("engine cache hit: %s (built by another process meanwhile)", path)
                    return CachedEngine(path, key, False, 0.0, path.stat().st_size / 2**20)
                if reason != "missing":
                    log.warning("engine %s is unusable (%s); rebuilding it", path.name, reason)
            log.info(
                "building %s engine for sm%s from %s (%s)", precision, cc, Path(onnx_path).name, flavour(trt)
            )
            t0 = time.perf_counter()
            data = build_engine(
                onnx_path,
                cc=cc,
                profile=profile,
                input_shape=input_shape,
                progress=progress,
                timing_cache=self.directory / f"timing-{flavour(trt)}.cache",
                trt=trt,
            )
            build_s = time.perf_counter() - t0
            self._write(path, key, data, build_s, Path(onnx_path))
            self._drop_stale(name, key, keep=path)
        return CachedEngine(path, key, True, build_s, len(data) / 2**20)

    def _write(self, path: Path, key: EngineKey, data: bytes, build_s: float, onnx_path: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".engine.partial")
        tmp.write_bytes(data)
        meta = {
            "version": SIDECAR_VERSION,
            "key": dataclasses.asdict(key),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "build_s": round(build_s, 3),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "onnx": onnx_path.name,
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        tmp.replace(path)  # sidecar first, engine last: a crash leaves no engine without its sidecar

    def _drop_stale(self, name: str, key: EngineKey, keep: Path) -> None:
        """Remove engines of the same model/precision/cc built from another ONNX or TensorRT version."""
        for old in self.directory.glob(f"{name}-{key.precision}-sm{key.cc}-*.engine"):
            if old != keep:
                log.info("removing stale engine %s", old.name)
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
                old.with_suffix(".runtime-cache").unlink(missing_ok=True)
