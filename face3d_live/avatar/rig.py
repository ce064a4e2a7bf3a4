"""The learned ARKit rig in the face-mesh topology: a neutral face plus one offset per ARKit blendshape.

``shape(w) = neutral + Σ_i w_i · deltas[i]`` gives the pose-free face for 52 ARKit weights (``Face.blendshapes``)
in the canonical mesh's frame and units (x right, y down, +z away from the camera, outer eye corners 9.0
apart ≈ cm), so ``Face.pose`` places it in the image like the canonical mesh. The asset
``face3d_live/assets/arkit_rig.npz`` is fitted by ``face3d_live/training/arkit_rig.py`` (least squares of
pose-free teacher and model meshes against their blendshapes); its metadata says on what and how well.

Pose-free here means aligned to the canonical mesh by a similarity fitted on rigid points only (forehead,
nose bridge, eye corners, temples: ``RIGID_POINTS``), so an open jaw does not tilt or shift the whole head;
``pose_free`` and ``rigid_pose`` give that alignment for image-space vertices.
"""

from __future__ import annotations

import functools
import json
import zipfile
from pathlib import Path

import numpy as np

from face3d_live.errors import ModelError
from face3d_live.expression.arkit import ARKIT_BLENDSHAPES
from face3d_live.expression.blendshapes import ALIGN_POINTS, batched_umeyama
from face3d_live.geometry import mesh
from face3d_live.types import Pose

ASSET = Path(__file__).resolve().parents[1] / "assets" / "arkit_rig.npz"
ASSET_FORMAT = "face3d-arkit-rig/1"
N_SHAPES = len(ARKIT_BLENDSHAPES)
RIGID_POINTS = np.asarray([i for i in ALIGN_POINTS if i < mesh.NUM_VERTICES], np.int64)


def rigid_fit(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 468+, 3) image-space vertices → ``batched_umeyama``'s (R, s, t) taking them onto the canonical
    mesh, fitted on ``RIGID_POINTS``: ``canonical ≈ s * vertices @ R.T + t``."""
    ref = mesh.canonical_vertices()[RIGID_POINTS].astype(np.float64)
    return batched_umeyama(np.asarray(vertices, np.float64)[:, RIGID_POINTS], ref)


def rigid_pose(vertices: np.ndarray) -> Pose | list[Pose]:
    """Similarity from the canonical mesh to image-space vertices fitted on ``RIGID_POINTS``:
    ``vertices ≈ scale * canonical @ R.T + t`` (as ``Face.pose``, but blind to the expression).
    (468, 3) → Pose, (N, 468, 3) → list of Pose."""
    v = np.asarray(vertices, np.float64)
    one = v.ndim == 2
    # fit image → canonical (rigid_fit's direction), then invert to canonical → image
    rot, scale, t = rigid_fit(v[None] if one else v)
    poses = [
        Pose(rotation=r.T.copy(), translation=-(r.T @ ti) / s, scale=float(1.0 / s))
        for r, s, ti in zip(rot, scale, t)
    ]
    return poses[0] if one else poses


def pose_free(vertices: np.ndarray) -> np.ndarray:
    """(468, 3) or (N, 468, 3) image-space vertices → the same shape in the canonical frame (float32)."""
    v = np.asarray(vertices, np.float64)
    one = v.ndim == 2
    v = v[None] if one else v
    rot, scale, t = rigid_fit(v)
    out = (scale[:, None, None] * (v @ rot.transpose(0, 2, 1)) + t[:, None]).astype(np.float32)
    return out[0] if one else out


class ArkitRig:
    """``neutral`` (468, 3) float32 and ``deltas`` (52, 468, 3) float32 in ARKit order (``ARKIT_BLENDSHAPES``).

    ``ArkitRig.load()`` reads the shipped asset; ``shape(weights)`` evaluates the rig; ``personalised(neutral)``
    carries the learned deltas onto someone's own neutral face (see ``avatar/transfer.py``).
    """

    names: tuple[str, ...] = ARKIT_BLENDSHAPES

    def __init__(self, neutral: np.ndarray, deltas: np.ndarray, metadata: dict | None = None) -> None:
        neutral = np.asarray(neutral, np.float32)
        deltas = np.asarray(deltas, np.float32)
        if neutral.shape != (mesh.NUM_VERTICES, 3) or deltas.shape != (N_SHAPES, mesh.NUM_VERTICES, 3):
            raise ValueError(
                f"expected neutral (468, 3) and deltas (52, 468, 3), got {neutral.shape} and {deltas.shape}"
            )
        if not (np.isfinite(neutral).all() and np.isfinite(deltas).all()):
            raise ValueError("the rig holds non-finite values")
        self.neutral = neutral
        self.deltas = deltas
        self.metadata = dict(metadata or {})

    @classmethod
    def load(cls, path: Path | str | None = None) -> ArkitRig:
        """The shipped rig (or ``path``); a missing or damaged file is a one-line ``ModelError``."""
        return _load(str(Path(path or ASSET).resolve()))

    def save(self, path: Path | str) -> Path:
        """Write the rig as the asset format (float32 arrays + JSON metadata), atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(
            tmp,
            format=np.array(ASSET_FORMAT),
            names=np.array(self.names),
            neutral=self.neutral,
            deltas=self.deltas,
            triangles=mesh.triangles(),
            metadata=np.array(json.dumps(self.metadata, sort_keys=True)),
        )
        tmp.replace(path)
        return path

    @property
    def triangles(self) -> np.ndarray:
        """(852, 3) int32, the face-mesh topology (``geometry.mesh.triangles``)."""
        return mesh.triangles()

    @property
    def uv(self) -> np.ndarray:
        """(468, 2) float32 in [0, 1], the project's UV layout (``geometry.mesh.uv_coords``)."""
        return mesh.uv_coords()

    def shape(self, weights: np.ndarray) -> np.ndarray:
        """(52,) → (468, 3) or (N, 52) → (N, 468, 3) float32: ``neutral + weights @ deltas``."""
        w = np.asarray(weights, np.float32)
        if w.shape[-1:] != (N_SHAPES,) or w.ndim not in (1, 2):
            raise ValueError(f"expected (52,) or (N, 52) ARKit weights, got {w.shape}")
        flat = w @ self.deltas.reshape(N_SHAPES, -1)
        return (self.neutral.reshape(-1) + flat).reshape(w.shape[:-1] + self.neutral.shape)

    def personalised(self, neutral_vertices_canonical: np.ndarray) -> ArkitRig:
        """This rig on someone's own neutral face (468, 3), given in the canonical frame and units.

        Each delta is carried by the local linear map between the rig's neutral and the new one around its
        vertex (``transfer.local_maps``: one 3×3 per vertex, fitted on the vertex's mesh neighbours and
        pulled towards the faces' overall similarity), so a wider mouth gets a wider smile and a bigger face
        bigger offsets, and the rig's own neutral gives the rig back unchanged.
        """
        from face3d_live.avatar.transfer import local_maps

        target = np.asarray(neutral_vertices_canonical, np.float32)
        if target.shape != (mesh.NUM_VERTICES, 3) or not np.isfinite(target).all():
            raise ValueError(f"expected a finite (468, 3) neutral face, got {target.shape}")
        maps = local_maps(self.neutral, target, self.triangles)  # (468, 3, 3)
        deltas = np.einsum("vij,kvj->kvi", maps, self.deltas).astype(np.float32)
        meta = {**self.metadata, "personalised": True}
        return ArkitRig(target, deltas, meta)

    def __repr__(self) -> str:
        return f"ArkitRig(468 vertices, {N_SHAPES} shapes, {self.metadata.get('date', 'no date')})"


@functools.lru_cache(maxsize=4)
def _load(path: str) -> ArkitRig:
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ARKit rig {p} not found; rebuild it: python -m face3d_live.training.arkit_rig")
    try:
        with np.load(p, allow_pickle=False) as z:
            fmt = str(z["format"])
            names = tuple(str(n) for n in z["names"])
            neutral, deltas = z["neutral"], z["deltas"]
            metadata = json.loads(str(z["metadata"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"ARKit rig {p} is unreadable ({exc}); reinstall or rebuild it") from None
    if fmt != ASSET_FORMAT or names != ARKIT_BLENDSHAPES:
        raise ModelError(f"ARKit rig {p} is not a {ASSET_FORMAT} file in ARKit order; rebuild it")
    try:
        rig = ArkitRig(neutral, deltas, metadata)
    except ValueError as exc:
        raise ModelError(f"ARKit rig {p} is damaged: {exc}") from None
    rig.neutral.setflags(write=False)  # cached and shared: callers get read-only arrays
    rig.deltas.setflags(write=False)
    return rig
