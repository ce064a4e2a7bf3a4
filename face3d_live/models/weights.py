"""Model weights as safetensors, FP16, with a sha256 of the tensor data in the file's metadata.

One file holds everything needed to rebuild the model: the state dict (floats stored as FP16, which
halves the file and is what the GPU runs anyway), the architecture name and its constructor
arguments as JSON, and ``sha256`` over the tensor bytes (names sorted), checked at load. A missing,
truncated, foreign or bit-flipped file is a ``ModelError`` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from face3d_live.errors import ModelError

if TYPE_CHECKING:
    import torch

FORMAT = "face3d-weights/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
R50_WEIGHTS = WEIGHTS_DIR / "face3d-r50.safetensors"
R50_WEIGHTS_ENV = "FACE3D_R50_WEIGHTS"  # points model="r50" at another file (retrained, tests)
TRAIN_HINT = "train it with `face3d-live train` (see README), or set FACE3D_R50_WEIGHTS to a weights file"


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about itself."""

    path: Path
    arch: str
    config: dict
    sha256: str
    metadata: dict


def default_r50_weights() -> Path:
    """The r50 weights file: $FACE3D_R50_WEIGHTS if set, else the one shipped in the package."""
    env = os.environ.get(R50_WEIGHTS_ENV)
    return Path(env).expanduser() if env else R50_WEIGHTS


def tensors_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in sorted name order (independent of file layout)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.asarray(tensors[name]).copy(order="C")  # not ascontiguousarray: it turns 0-d into 1-d
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def save_weights(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor | np.ndarray],
    *,
    arch: str,
    config: Mapping | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write ``state_dict`` (floats as FP16) to ``path``; returns the sha256 stored in the file."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float16)
        tensors[name] = arr.copy(order="C")
    digest = tensors_sha256(tensors)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(format=FORMAT, arch=arch, config=json.dumps(dict(config or {})), sha256=digest)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)  # never leave a half-written weights file under the real name
    return digest


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header's metadata (cheap: no tensor data read). ModelError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} not found; {TRAIN_HINT}")
    try:
        with open(path, "rb") as f:  # header: 8-byte little-endian length, then JSON
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= min(path.stat().st_size - 8, 100 << 20):
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"weights file {path} is not a safetensors file ({exc}); {TRAIN_HINT}") from None
    meta = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    if meta.get("format") != FORMAT:
        raise ModelError(
            f"{path} is not a face3d_live weights file (format {meta.get('format')!r}); {TRAIN_HINT}"
        )
    return meta


def load_weights(path: str | Path, *, arch: str | None = None) -> tuple[dict[str, np.ndarray], WeightsInfo]:
    """Read and verify a weights file; floats come back as float32 numpy arrays."""
    path = Path(path)
    meta = read_metadata(path)
    if arch is not None and meta.get("arch") != arch:
        raise ModelError(f"{path} holds a {meta.get('arch')!r} model, expected {arch!r}")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights file {path} is corrupt ({exc}); re-download or retrain it") from None
    digest = tensors_sha256(tensors)
    if digest != meta.get("sha256"):
        raise ModelError(f"weights file {path} is corrupt (sha256 mismatch); re-download or retrain it")
    info = WeightsInfo(
        path=path,
        arch=meta["arch"],
        config=json.loads(meta.get("config") or "{}"),
        sha256=digest,
        metadata={k: v for k, v in meta.items() if k not in ("format", "arch", "config", "sha256")},
    )
    return {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in tensors.items()}, info


def load_into(module: torch.nn.Module, path: str | Path, *, arch: str | None = None) -> WeightsInfo:
    """Load a weights file into ``module`` (strict: names and shapes must match)."""
    import torch

    tensors, info = load_weights(path, arch=arch)
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or extra or bad:
        detail = "; ".join(
            f"{what}: {', '.join(names[:3])}{'…' if len(names) > 3 else ''}"
            for what, names in (("missing", missing), ("unexpected", extra), ("shape mismatch", bad))
            if names
        )
        raise ModelError(f"weights file {path} does not fit {type(module).__name__} ({detail})")
    module.load_state_dict({k: torch.from_numpy(v).to(own[k].dtype) for k, v in tensors.items()})
    return info
