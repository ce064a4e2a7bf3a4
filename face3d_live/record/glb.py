"""GLB (binary glTF 2.0) export of a recording: morph-target animation + head pose + baked texture.

Layout of the asset:
  * one node ``face`` carrying the mesh; its TRS animation is the head pose (coords.py explains the
    split), its ``weights`` animation steps (or blends linearly) through the morph targets so that at
    each capture timestamp exactly one target has weight 1;
  * the mesh: canonical neutral face (metres, +Y up) with NORMAL and TEXCOORD_0, one morph target per
    kept frame holding POSITION and NORMAL deltas of the pose-free shape;
  * the texture embedded as JPEG or PNG.
With ``quantize`` (KHR_mesh_quantization) target positions are normalised int16 (step 1/32767 m ≈ 31 µm),
target normals normalised int8, and the weight keys normalised uint8 (exact: they are 0 or 1).

The binary chunk is packed by hand: the JSON is small and explicit, and nothing is copied twice.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np

from face3d_live import __version__
from face3d_live.geometry import mesh
from face3d_live.record.config import RecordConfig
from face3d_live.record.coords import AssetFrames, base_shape, vertex_normals
from face3d_live.record.journal import atomic_write

log = logging.getLogger(__name__)

FLOAT, UBYTE, BYTE, USHORT, SHORT, UINT = 5126, 5121, 5120, 5123, 5122, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
GLB_MAGIC, GLB_VERSION, CHUNK_JSON, CHUNK_BIN = 0x46546C67, 2, 0x4E4F534A, 0x004E4942
QUANT_EXT = "KHR_mesh_quantization"
POSITION_STEP_M = 1.0 / 32767.0  # quantised target positions: normalised int16 in metres
DENSE_WEIGHTS_MAX = 1 << 22  # keys × targets above this: sparse weights (a 2-minute take at 30 fps)


def select_keyframes(
    shapes: np.ndarray, tolerance_m: float, own_face: np.ndarray | None = None
) -> np.ndarray:
    """(F,) int: the morph target each frame shows, counting up from 0.

    A frame with its own face starts a new target when some vertex moved more than ``tolerance_m``
    from the last target (tolerance 0: every such frame); frames without a face (``own_face`` False)
    keep showing the last target, and those before the first face show the first one.
    """
    own = np.ones(len(shapes), bool) if own_face is None else np.asarray(own_face, bool)
    first = int(np.argmax(own))
    target = np.zeros(len(shapes), np.int64)
    k, last = 0, shapes[first]
    for i in range(first + 1, len(shapes)):
        if own[i] and (tolerance_m <= 0 or np.sqrt(((shapes[i] - last) ** 2).sum(-1).max()) > tolerance_m):
            k, last = k + 1, shapes[i]
        target[i] = k
    return target


class _Packer:
    """Accumulates the BIN chunk, bufferViews and accessors."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None, stride: int | None = None) -> int:
        pad = (-self.size) % 4
        if pad:
            self.chunks.append(b"\0" * pad)
            self.size += pad
        v: dict = {"buffer": 0, "byteOffset": self.size, "byteLength": len(data)}
        if target is not None:
            v["target"] = target
        if stride is not None:
            v["byteStride"] = stride
        self.chunks.append(data)
        self.size += len(data)
        self.views.append(v)
        return len(self.views) - 1

    def accessor(self, view: int, offset: int, ctype: int, count: int, kind: str, **extra) -> int:
        a = {"bufferView": view, "componentType": ctype, "count": int(count), "type": kind}
        if offset:
            a["byteOffset"] = int(offset)
        a.update(extra)
        self.accessors.append(a)
        return len(self.accessors) - 1

    def array(self, arr: np.ndarray, kind: str, target: int | None = None, minmax: bool = False) -> int:
        """One tightly packed float/int array in its own bufferView."""
        arr = np.ascontiguousarray(arr)
        ctype = {np.dtype("<f4"): FLOAT, np.dtype("<u2"): USHORT, np.dtype("<u4"): UINT}[arr.dtype]
        view = self.view(arr.tobytes(), target)
        count = len(arr)
        extra = {}
        if minmax:
            flat = arr.reshape(count, -1)
            extra = {"min": flat.min(0).tolist(), "max": flat.max(0).tolist()}
        return self.accessor(view, 0, ctype, count, kind, **extra)

    def binary(self) -> bytes:
        pad = (-self.size) % 4
        return b"".join(self.chunks) + b"\0" * pad


def _vec3_block(deltas: np.ndarray, quantize: str | None) -> tuple[bytes, int, int, np.ndarray]:
    """(K, N, 3) float deltas → (bytes, componentType, byteStride, per-target min/max source).

    Vertex attributes must start on 4-byte boundaries, so int16 vec3 is padded to 8 bytes and int8
    vec3 to 4. Returns the stored values as the accessor will decode them (for min/max)."""
    k, n, _ = deltas.shape
    if quantize is None:
        stored = deltas.astype("<f4")
        return stored.tobytes(), FLOAT, 12, stored
    bits = {"short": 32767.0, "byte": 127.0}[quantize]
    q = np.clip(np.rint(deltas.astype(np.float64) * bits), -bits, bits)
    dtype, width = ("<i2", 4) if quantize == "short" else ("<i1", 4)
    packed = np.zeros((k, n, width), dtype)
    packed[..., :3] = q
    ctype = SHORT if quantize == "short" else BYTE
    return packed.tobytes(), ctype, packed.itemsize * width, q.astype(np.int64)


def _weights_accessor(pk: _Packer, key_target: np.ndarray, n_targets: int, quantize: bool) -> int:
    """The weights sampler output: per key, weight 1 on its target and 0 elsewhere (keys × targets).

    Dense grows with the square of the take's length, so past ``DENSE_WEIGHTS_MAX`` entries the
    accessor is sparse: all zeros plus one (index, 1) pair per key.
    """
    n_keys = len(key_target)
    ctype, one = (UBYTE, b"\xff") if quantize else (FLOAT, np.float32(1).tobytes())
    extra = {"normalized": True} if quantize else {}
    if n_keys * n_targets <= DENSE_WEIGHTS_MAX:
        onehot = np.zeros((n_keys, n_targets), np.uint8 if quantize else "<f4")
        onehot[np.arange(n_keys), key_target] = 255 if quantize else 1.0
        return pk.accessor(pk.view(onehot.tobytes()), 0, ctype, onehot.size, "SCALAR", **extra)
    flat = (np.arange(n_keys, dtype=np.uint64) * n_targets + key_target).astype("<u4")
    sparse = {
        "count": n_keys,
        "indices": {"bufferView": pk.view(flat.tobytes()), "componentType": UINT},
        "values": {"bufferView": pk.view(one * n_keys)},
    }
    a = {"componentType": ctype, "count": n_keys * n_targets, "type": "SCALAR", "sparse": sparse, **extra}
    pk.accessors.append(a)
    return len(pk.accessors) - 1


def morph_targets(pk: _Packer, pos: np.ndarray, nrm: np.ndarray, quantize: bool) -> list[dict]:
    """(K, N, 3) POSITION and NORMAL offsets → K morph targets (POSITION with bounds), one bufferView per kind."""
    n = pos.shape[1]
    targets: list[dict] = [{} for _ in range(len(pos))]
    for attr, deltas, kind in (("POSITION", pos, "short"), ("NORMAL", nrm, "byte")):
        data, ctype, stride, stored = _vec3_block(deltas, kind if quantize else None)
        view = pk.view(data, ARRAY_BUFFER, stride)
        lo, hi = stored.min(axis=1), stored.max(axis=1)
        for k in range(len(pos)):
            extra: dict = {} if ctype == FLOAT else {"normalized": True}
            if attr == "POSITION":  # glTF requires bounds on POSITION, morph targets included
                cast = float if ctype == FLOAT else int
                extra["min"] = [cast(x) for x in lo[k]]
                extra["max"] = [cast(x) for x in hi[k]]
            targets[k][attr] = pk.accessor(view, k * n * stride, ctype, n, "VEC3", **extra)
    return targets


def build_glb(
    frames: AssetFrames, texture: bytes | None, texture_mime: str, config: RecordConfig, name: str = "face"
) -> tuple[bytes, dict]:
    """The GLB file's bytes and a summary dict (targets, keys, sizes)."""
    tris = mesh.triangles()
    base = base_shape()
    base_n = vertex_normals(base, tris)
    frame_target = select_keyframes(frames.shapes, config.keyframe_tolerance_mm / 1000.0, frames.own_face)
    first = int(np.argmax(frames.own_face))
    kept = np.r_[first, first + 1 + np.flatnonzero(np.diff(frame_target[first:]) > 0)]  # a frame per target
    shapes = frames.shapes[kept]
    n_targets = len(kept)
    pos_delta = shapes - base[None]
    nrm_delta = vertex_normals(shapes, tris) - base_n[None]

    pk = _Packer()
    a_pos = pk.array(base, "VEC3", ARRAY_BUFFER, minmax=True)
    a_nrm = pk.array(base_n, "VEC3", ARRAY_BUFFER)
    a_uv = pk.array(mesh.uv_coords().astype("<f4"), "VEC2", ARRAY_BUFFER)
    a_idx = pk.array(tris.reshape(-1).astype("<u2"), "SCALAR", ELEMENT_ARRAY_BUFFER)

    q = config.quantize
    targets = morph_targets(pk, pos_delta, nrm_delta, bool(q))

    # animation: keys at every capture timestamp, plus one at the end that holds the last frame so
    # the clip lasts exactly as long as the recording
    times = np.r_[frames.times, frames.duration].astype("<f4")
    keys = np.r_[np.arange(len(frames.times)), len(frames.times) - 1]
    a_time = pk.array(times, "SCALAR", minmax=True)
    a_t = pk.array(frames.translation[keys].astype("<f4"), "VEC3")
    a_r = pk.array(frames.rotation[keys].astype("<f4"), "VEC4")
    a_s = pk.array(np.repeat(frames.scale[keys, None], 3, axis=1).astype("<f4"), "VEC3")
    a_w = _weights_accessor(pk, frame_target[keys], n_targets, bool(q))
    interp = config.interpolation.upper()
    samplers = [{"input": a_time, "output": a, "interpolation": interp} for a in (a_t, a_r, a_s, a_w)]
    channels = [
        {"sampler": i, "target": {"node": 0, "path": p}}
        for i, p in enumerate(("translation", "rotation", "scale", "weights"))
    ]

    material: dict = {
        "name": f"{name}_skin",
        "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 0.7},
    }
    gltf: dict = {
        "asset": {"version": "2.0", "generator": f"face3d-live {__version__}"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": [
            {
                "name": name,
                "mesh": 0,
                "translation": frames.translation[0].astype(float).tolist(),
                "rotation": frames.rotation[0].astype(float).tolist(),
                "scale": [float(frames.scale[0])] * 3,
                "extras": {
                    "face3d_live": {
                        "metres_per_pixel": frames.metres_per_pixel,
                        "origin_px": np.asarray(frames.origin_px, float).tolist(),
                        "image_px_from_scene": "px = (x, -y, -z) / metres_per_pixel + origin_px",
                        "frame_target": frame_target.tolist(),
                    }
                },
            }
        ],
        "meshes": [
            {
                "name": name,
                "primitives": [
                    {
                        "attributes": {"POSITION": a_pos, "NORMAL": a_nrm, "TEXCOORD_0": a_uv},
                        "indices": a_idx,
                        "material": 0,
                        "mode": 4,
                        "targets": targets,
                    }
                ],
                "weights": [0.0] * n_targets,
                "extras": {"targetNames": [f"frame_{int(frames.frame_index[i]):06d}" for i in kept]},
            }
        ],
        "materials": [material],
        "animations": [{"name": f"{name}_performance", "channels": channels, "samplers": samplers}],
    }
    add_texture(gltf, pk, material, texture, texture_mime, f"{name}_albedo")
    if q:
        gltf["extensionsUsed"] = [QUANT_EXT]
        gltf["extensionsRequired"] = [QUANT_EXT]
    out = assemble(gltf, pk)
    summary = {
        "frames": len(frames.times),
        "targets": n_targets,
        "duration_s": float(frames.duration),
        "bytes": len(out),
        "texture_bytes": len(texture) if texture is not None else 0,
        "quantized": bool(q),
    }
    return out, summary


def add_texture(gltf: dict, pk: _Packer, material: dict, texture: bytes | None, mime: str, name: str) -> None:
    """Embed an encoded texture as the material's base colour (a flat skin colour without one)."""
    pbr = material["pbrMetallicRoughness"]
    if texture is None:
        pbr["baseColorFactor"] = [0.8, 0.62, 0.52, 1.0]
        return
    images = gltf.setdefault("images", [])
    images.append({"name": name, "bufferView": pk.view(texture), "mimeType": mime})
    if "samplers" not in gltf:
        gltf["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}]
    textures = gltf.setdefault("textures", [])
    textures.append({"sampler": 0, "source": len(images) - 1})
    pbr["baseColorTexture"] = {"index": len(textures) - 1}


def assemble(gltf: dict, pk: _Packer) -> bytes:
    """The GLB container: the JSON (with the packer's bufferViews, accessors and buffer) and the BIN chunk."""
    gltf["bufferViews"] = pk.views
    gltf["accessors"] = pk.accessors
    binary = pk.binary()
    gltf["buffers"] = [{"byteLength": len(binary)}]
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, GLB_VERSION, total),
            struct.pack("<II", len(js), CHUNK_JSON),
            js,
            struct.pack("<II", len(binary), CHUNK_BIN),
            binary,
        ]
    )


def write_glb(
    path: Path, frames: AssetFrames, texture: bytes | None, texture_mime: str, config: RecordConfig
) -> dict:
    data, summary = build_glb(frames, texture, texture_mime, config, name=_node_name(path))
    atomic_write(path, data)
    log.info(
        "wrote %s: %d frames, %d targets, %.1f MB",
        path,
        summary["frames"],
        summary["targets"],
        len(data) / 1e6,
    )
    return summary


def _node_name(path: Path) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(path).stem)
    return stem or "face"


def read_glb(path: Path | str) -> tuple[dict, bytes]:
    """(JSON, BIN chunk) of a GLB file (used by tests and tools)."""
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2 or total != len(data):
        raise ValueError(f"{path} is not a GLB 2.0 file")
    jlen, _ = struct.unpack_from("<II", data, 12)
    gltf = json.loads(data[20 : 20 + jlen])
    blen, _ = struct.unpack_from("<II", data, 20 + jlen)
    return gltf, data[28 + jlen : 28 + jlen + blen]


def accessor_array(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """Decode one accessor (sparse included) to float64, applying normalisation."""
    acc = gltf["accessors"][index]
    comps = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    if "bufferView" not in acc:  # sparse on zeros
        sp = acc["sparse"]
        idx = _view_values(
            gltf, binary, sp["indices"]["bufferView"], sp["indices"]["componentType"], sp["count"]
        )
        vals = _view_values(
            gltf, binary, sp["values"]["bufferView"], acc["componentType"], sp["count"] * comps
        )
        if acc.get("normalized"):
            vals = _normalize(vals, acc["componentType"])
        out = np.zeros(acc["count"] * comps)
        out.reshape(acc["count"], comps)[idx.astype(np.int64)] = vals.reshape(-1, comps)
        return out if comps == 1 else out.reshape(-1, comps)
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_DTYPES[acc["componentType"]])
    stride = view.get("byteStride", dtype.itemsize * comps)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    count = acc["count"]
    raw = np.ndarray(
        (count, comps), dtype, buffer=binary, offset=start, strides=(stride, dtype.itemsize)
    ).astype(np.float64)
    if acc.get("normalized"):
        raw = _normalize(raw, acc["componentType"])
    return raw if comps > 1 else raw[:, 0]


_DTYPES = {FLOAT: "<f4", UBYTE: "u1", BYTE: "i1", USHORT: "<u2", SHORT: "<i2", UINT: "<u4"}


def _normalize(raw: np.ndarray, ctype: int) -> np.ndarray:
    info = np.iinfo(np.dtype(_DTYPES[ctype]))
    return raw / info.max if info.min == 0 else np.maximum(raw / info.max, -1.0)


def _view_values(gltf: dict, binary: bytes, view_index: int, ctype: int, count: int) -> np.ndarray:
    view = gltf["bufferViews"][view_index]
    return np.frombuffer(binary, _DTYPES[ctype], count, view.get("byteOffset", 0)).astype(np.float64)
