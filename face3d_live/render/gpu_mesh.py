"""The face mesh on the GPU: vertex buffers updated per frame, topology buffers made once."""

from __future__ import annotations

import numpy as np

from face3d_live.geometry import mesh
from face3d_live.render.context import RenderError
from face3d_live.types import Face

# attribute names shared by the shaders (shaders/*.glsl)
A_POSITION, A_NORMAL, A_UV, A_MIRROR_UV = "in_position", "in_normal", "in_uv", "in_mirror_uv"


def vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(N, 3) float32 area-weighted smooth normals, in the vertices' frame (unnormalised is fine for GL,
    but we normalise so the baker's facing term is exact at vertices)."""
    v = verts.astype(np.float32, copy=False)
    a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    fn = np.cross(b - a, c - a)  # |fn| = 2 * area: larger triangles weigh more
    # scatter-add each face normal to its 3 corners: bincount is ~30x faster than np.add.at (per frame)
    idx, corner_fn = tris.reshape(-1), np.repeat(fn, 3, axis=0)
    n = np.stack([np.bincount(idx, corner_fn[:, c], minlength=len(v)) for c in range(3)], 1).astype(
        np.float32
    )
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return n


def mesh_edges(tris: np.ndarray) -> np.ndarray:
    """(E, 2) int32 unique undirected edges of a triangle list."""
    e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0).astype(np.int32)


def check_face(face: Face) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (vertices float32 (N,3), triangles int32 (T,3), uv float32 (N,2)) of a Face."""
    v = np.asarray(getattr(face, "vertices", None))
    tris = np.asarray(getattr(face, "triangles", None))
    uv = np.asarray(getattr(face, "uv", None))
    if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
        raise RenderError(f"face vertices must be a finite (N, 3) array, got shape {v.shape}")
    if tris.ndim != 2 or tris.shape[1] != 3 or tris.size == 0 or tris.min() < 0 or tris.max() >= len(v):
        raise RenderError(
            f"face triangles must be (T, 3) indices into {len(v)} vertices, got shape {tris.shape}"
        )
    if uv.shape != (len(v), 2):
        raise RenderError(f"face uv must be ({len(v)}, 2), got shape {uv.shape}")
    return (
        v.astype(np.float32, copy=False),
        tris.astype(np.int32, copy=False),
        uv.astype(np.float32, copy=False),
    )


class MeshBuffers:
    """Vertex/normal buffers (rewritten by ``update``) and UV, mirror-UV, triangle, edge and landmark
    index buffers (rebuilt only if the topology changes). Owns its buffers: ``close()`` frees them."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.num_vertices = 0
        self.positions = self.normals = self.uv = self.mirror_uv = None
        self.triangles = self.edges = self.landmarks = None
        self._tris_key: bytes | None = None
        self.generation = 0  # bumped when the buffers are rebuilt: vertex arrays over them must be too
        self.vertices = np.zeros((0, 3), np.float32)
        # CPU copies of the topology, for layouts derived from it (the accumulator's texel map)
        self.triangles_np = np.zeros((0, 3), np.int32)
        self.uv_np = np.zeros((0, 2), np.float32)

    def update(self, face: Face) -> None:
        v, tris, uv = check_face(face)
        key = tris.tobytes() + uv.tobytes()
        if key != self._tris_key:
            self._build_topology(len(v), tris, uv)
            self._tris_key = key
        self.vertices = v
        self.positions.write(np.ascontiguousarray(v).tobytes())
        self.normals.write(vertex_normals(v, tris).tobytes())

    def _build_topology(self, n: int, tris: np.ndarray, uv: np.ndarray) -> None:
        self._release()
        ctx = self.ctx
        self.num_vertices = n
        self.generation += 1
        self.triangles_np, self.uv_np = tris.copy(), uv.copy()
        self.positions = ctx.buffer(reserve=n * 12, dynamic=True)
        self.normals = ctx.buffer(reserve=n * 12, dynamic=True)
        self.uv = ctx.buffer(uv.tobytes())
        # the mirror partner's UV, for filling unseen texels from the other half of the face
        mirror = mesh.mirror_indices() if n == mesh.NUM_VERTICES else np.arange(n)
        self.mirror_uv = ctx.buffer(np.ascontiguousarray(uv[mirror]).tobytes())
        self.triangles = ctx.buffer(tris.tobytes())
        self.edges = ctx.buffer(mesh_edges(tris).tobytes())
        lm = mesh.LANDMARKS68 if n == mesh.NUM_VERTICES else np.arange(n, dtype=np.int32)
        self.landmarks = ctx.buffer(lm.astype(np.int32).tobytes())

    def vao(self, program, attributes: tuple[str, ...], index: str = "triangles"):
        """A vertex array over the named attributes (A_* constants) and index buffer for ``program``."""
        source = {A_POSITION: (self.positions, "3f"), A_NORMAL: (self.normals, "3f"), A_UV: (self.uv, "2f"),
                  A_MIRROR_UV: (self.mirror_uv, "2f")}  # fmt: skip
        # the GLSL compiler drops unused inputs; binding one would be an error
        content = [(source[a][0], source[a][1], a) for a in attributes if program.get(a, None) is not None]
        return self.ctx.vertex_array(program, content, getattr(self, index), index_element_size=4)

    @property
    def ready(self) -> bool:
        return self.positions is not None

    def _release(self) -> None:
        for name in ("positions", "normals", "uv", "mirror_uv", "triangles", "edges", "landmarks"):
            buf = getattr(self, name)
            if buf is not None:
                buf.release()
                setattr(self, name, None)

    def close(self) -> None:
        self._release()
        self._tris_key = None


class VaoCache:
    """Vertex arrays over a MeshBuffers for programs of a ShaderLibrary, rebuilt when either changes
    (new topology, shader reload). Owns the vertex arrays, not the buffers or programs."""

    def __init__(self, mesh_buffers: MeshBuffers, shaders) -> None:
        self.mesh, self.shaders = mesh_buffers, shaders
        self._vaos: dict[tuple, object] = {}
        self._key = None

    def get(self, program: str, attributes: tuple[str, ...], index: str = "triangles"):
        key = (self.mesh.generation, self.shaders.generation)
        if key != self._key:
            self.close()
            self._key = key
        vao = self._vaos.get((program, attributes, index))
        if vao is None:
            vao = self.mesh.vao(self.shaders.program(program), attributes, index)
            self._vaos[(program, attributes, index)] = vao
        return vao

    def close(self) -> None:
        for vao in self._vaos.values():
            vao.release()
        self._vaos.clear()
