"""The avatar: an ARKit-rigged head driven only by blendshapes, gaze and head pose.

It shows what a VMC / Live Link receiver gets (52 weights, eye angles, head rotation), not the tracked
mesh: ``rig.shape(face.blendshapes)`` turned by ``face.pose.rotation`` and centred in the view. The rig
is only the front of the face, so :class:`AvatarMesh` builds a head around it once, from the rig's
neutral: a skull shell swept from the face's outer edge to the back of the head, ears, a neck, eyeballs
in the sockets (placed from the eye corners), dark pockets closing the eye and mouth openings (an open
mouth shows its inside, not the background), and per-vertex colours (skin, lips, brows, lash line,
hair). :class:`AvatarRenderer` draws it with ModernGL into a framebuffer it is given, or headless into
an RGB image (``render_rgb``: tests and the virtual camera). Create, use and close it with the GL
context current.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from face3d_live.lifetime import Closeable
from face3d_live.render.camera import FLIP_YZ, gl_bytes, look_at, perspective
from face3d_live.render.context import RenderError
from face3d_live.render.gpu_mesh import A_NORMAL, A_POSITION, vertex_normals
from face3d_live.render.shaders import ShaderLibrary
from face3d_live.render.shaders import set_uniform as _set
from face3d_live.types import Face

A_COLOR = "in_color"  # per-vertex albedo in shaders/avatar.glsl
RGB = tuple[float, float, float]

# MediaPipe face-mesh vertex indices (the rig shares the topology)
EYE_CORNERS = ((263, 362), (33, 133))  # (outer, inner) of the subject's left, right eye: gaze's row order
MOUTH_SEED = 13  # a vertex of the inner lip opening
OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
GAZE_REST = (-0.029, -0.073)  # iris at rest from the corners' midpoint, eye widths (nasal, down): gaze.py

# the skull, as multiples of the canonical face (outer eye corners 9.0 apart): an axis-aligned ellipsoid
SKULL_CENTRE = (0.0, -4.0, 8.2)
SKULL_RADII = (7.4, 10.4, 9.0)
SKIRT_RINGS = 8
EAR_CENTRE, EAR_RADII = (7.1, -0.6, 7.6), (0.55, 2.9, 1.6)  # the left ear; the right one mirrored
NECK = (5.2, -1.0, 32.0, 7.6)  # radius, top y, bottom y, axis z
PIVOT = (0.0, 3.0, 7.2)  # the top of the spine, about which the head turns


@dataclass(frozen=True)
class AvatarConfig:
    """Colours (linear RGB in [0, 1]), light and camera of the avatar view. ``fov_deg``: vertical field
    of view; ``fill``: the head's height over the view's (smaller = more room around it)."""

    background: tuple[float, float, float, float] = (0.07, 0.07, 0.09, 1.0)
    skin: RGB = (0.80, 0.62, 0.52)
    lips: RGB = (0.70, 0.36, 0.36)
    brows: RGB = (0.28, 0.19, 0.14)
    lash: RGB = (0.30, 0.20, 0.17)
    hair: RGB = (0.19, 0.13, 0.10)
    mouth: RGB = (0.30, 0.06, 0.07)
    socket: RGB = (0.20, 0.10, 0.10)
    sclera: RGB = (0.93, 0.92, 0.90)
    iris: RGB = (0.33, 0.20, 0.11)
    pupil: RGB = (0.02, 0.02, 0.02)
    light_dir: tuple[float, float, float] = (-0.35, 0.45, 1.0)
    ambient: float = 0.38
    diffuse: float = 0.68
    specular: float = 0.08
    shininess: float = 20.0
    eye_specular: float = 0.5
    rim: float = 0.45
    rim_color: RGB = (0.65, 0.75, 1.0)
    fov_deg: float = 24.0
    fill: float = 0.8
    max_gaze_deg: float = 35.0
    samples: int = 0  # MSAA of ``render_rgb``'s target (costly on a CPU rasteriser)


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """The holes and outer edge of a consistently wound mesh as vertex loops. Each loop follows its
    triangles' own edge direction, so a triangle on edge (b, a) of a loop continues the surface with the
    same winding (used to close holes and to extend the edge)."""
    tris = np.asarray(triangles)
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]).tolist()
    present = set(map(tuple, edges))
    nxt = {a: b for a, b in edges if (b, a) not in present}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(np.array(loop, np.int32))
    return loops


def _strip(ring_a: np.ndarray, ring_b: np.ndarray) -> np.ndarray:
    """Triangles between two parallel closed rings of vertex indices, wound like a continuation of the
    surface whose boundary loop is ``ring_a`` (edge (a_i, a_i+1) of the surface → triangle (b, a, ...))."""
    a, b = ring_a, ring_b
    a1, b1 = np.roll(a, -1), np.roll(b, -1)
    return np.concatenate([np.stack([a1, a, b], 1), np.stack([a1, b, b1], 1)]).astype(np.int32)


def _fan(ring: np.ndarray, centre: int) -> np.ndarray:
    return np.stack([np.roll(ring, -1), ring, np.full_like(ring, centre)], 1).astype(np.int32)


def _slerp(u: np.ndarray, w: np.ndarray, t: float) -> np.ndarray:
    """Unit vectors ``u`` (N, 3) turned towards the unit vector ``w`` by fraction ``t``."""
    cos = np.clip(u @ w, -1.0, 1.0)[:, None]
    ang = np.arccos(cos)
    sin = np.maximum(np.sin(ang), 1e-6)
    return (np.sin((1 - t) * ang) * u + np.sin(t * ang) * w) / sin


def uv_sphere(rings: int = 16, segments: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A unit sphere (positions = normals, (N, 3) float32) and its outward-wound triangles, poles on ±z."""
    phi = np.linspace(0.0, math.pi, rings + 1)[1:-1]
    theta = np.linspace(0.0, 2 * math.pi, segments, endpoint=False)
    p, t = np.meshgrid(phi, theta, indexing="ij")
    body = np.stack([np.sin(p) * np.cos(t), np.sin(p) * np.sin(t), -np.cos(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, -1.0]], body, [[0.0, 0.0, 1.0]]]).astype(np.float32)
    ring = lambda i: 1 + i * segments + np.arange(segments)
    tris = [_fan(ring(0)[::-1], 0)]
    tris += [_strip(ring(i)[::-1], ring(i + 1)[::-1]) for i in range(rings - 2)]
    tris.append(_fan(ring(rings - 2), len(verts) - 1))
    tris = np.concatenate(tris)
    # wind every triangle outwards (the sphere is star-shaped about the origin)
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    inward = np.einsum("ij,ij->i", np.cross(b - a, c - a), a + b + c) < 0
    tris[inward] = tris[inward][:, ::-1]
    return verts, tris


@dataclass(frozen=True)
class Eye:
    """An eyeball in the head frame: centre (3,), radius, and the cosines of its iris's and pupil's
    angular radii (the shader colours the sphere by the angle from its forward axis)."""

    centre: np.ndarray
    radius: float
    iris_cos: float
    pupil_cos: float


def _ellipsoid(centre, radii, rotation: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed ellipsoid (points, triangles + ``offset``), wound outwards: the unit sphere's winding
    survives a positive scale and a rotation (determinant > 0)."""
    unit, tris = uv_sphere(10, 20)
    pts = (unit * np.asarray(radii)) @ rotation.T + np.asarray(centre)
    return pts.astype(np.float32), tris + offset


def _rot_xy(pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """``Ry(yaw) @ Rx(pitch)``, right-handed, in degrees."""
    a, b = math.radians(pitch_deg), math.radians(yaw_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    return ry @ rx


class AvatarMesh:
    """The head's geometry on the CPU, built once from a rig's neutral face and triangles.

    Vertex layout of ``positions(face)``: the rig's N face vertices first, then the static shell (skull,
    ears), then the pockets (eye sockets, mouth), which follow the live rims of their openings.
    ``triangles`` index that array; ``colors`` (M, 3) float32 per vertex; ``eyes``: left, right (rows of
    ``Face.gaze``). The neck (``neck_positions``, ``neck_normals``, ``neck_triangles``) is static and
    does not turn with the head. All in the head frame (the rig's: x = subject's left, y down, +z back).
    """

    def __init__(
        self, neutral: np.ndarray, triangles: np.ndarray, config: AvatarConfig = AvatarConfig()
    ) -> None:
        neutral = np.asarray(neutral, np.float32)
        tris = np.asarray(triangles, np.int32)
        n = len(neutral)
        if neutral.ndim != 2 or neutral.shape[1] != 3 or n <= max(BROWS):
            raise RenderError(
                f"avatar rig: expected a (468, 3) MediaPipe-topology neutral, got {neutral.shape}"
            )
        loops = boundary_loops(tris)
        outer = max(loops, key=len)
        mouth = next((lp for lp in loops if MOUTH_SEED in lp), None)
        sockets = [next((lp for lp in loops if o in lp), None) for o, _ in EYE_CORNERS]
        if mouth is None or any(s is None for s in sockets):
            raise RenderError("avatar rig: the mesh has no mouth or eye openings (not MediaPipe's topology)")
        self.num_face = n

        shell, shell_tris, shell_colors = self._shell(neutral, outer, config)
        self._shell_points = shell
        parts_tris = [tris, shell_tris]
        colors = [self._face_colors(neutral, sockets, config), shell_colors]
        # pockets: the rim copied (own normals: a crisp lip edge), pulled in and back, then a centre;
        # shaped from the live rim every frame, so an open mouth always shows a closed, dark inside
        self._pockets: list[tuple[np.ndarray, int, float]] = []
        start = n + len(shell)
        for rim, depth, color in ((mouth, 1.6, config.mouth), *((s, 1.2, config.socket) for s in sockets)):
            k = len(rim)
            ring0, ring1, centre = start + np.arange(k), start + k + np.arange(k), start + 2 * k
            parts_tris += [_strip(ring0, ring1), _fan(ring1, centre)]  # continues the face: faces the viewer
            deep = np.asarray(color) * 0.3
            colors.append(np.concatenate([np.tile(color, (k, 1)), np.tile(deep, (k + 1, 1))]))
            self._pockets.append((np.asarray(rim), start, depth))
            start += 2 * k + 1
        self.num_vertices = start
        self.triangles = np.concatenate(parts_tris).astype(np.int32)
        self.colors = np.concatenate(colors).astype(np.float32)
        self.eyes = tuple(self._eye(neutral, o, i, nasal) for (o, i), nasal in zip(EYE_CORNERS, (-1.0, 1.0)))
        self.neck_positions, self.neck_normals, self.neck_triangles = self._neck()
        self.neck_colors = np.tile(np.asarray(config.skin, np.float32) * 0.92, (len(self.neck_positions), 1))
        head = np.concatenate([neutral, shell])
        self.pivot = np.asarray(PIVOT, np.float32)  # the head turns about the top of the neck
        self.centre = ((head.min(0) + head.max(0)) / 2).astype(np.float32)
        self.size = np.ptp(head, axis=0).astype(np.float32)  # (width, height, depth)
        self.radius = float(np.linalg.norm(head - self.pivot, axis=1).max())

    # ---- construction ---------------------------------------------------------------------------------
    @staticmethod
    def _shell(neutral: np.ndarray, outer: np.ndarray, config: AvatarConfig):
        """The skull, swept from the face's outer edge to the back of the head, and two ears.

        Each edge vertex travels along the skull ellipsoid (slerp of its direction from the centre
        towards the back pole) while its distance eases onto the ellipsoid, so the shell leaves the face
        edge as one surface (its first ring is the face's own edge: no seam). Returns (points,
        triangles, colours)."""
        n = len(neutral)
        centre, radii = np.array(SKULL_CENTRE), np.array(SKULL_RADII)
        d = (neutral[outer].astype(np.float64) - centre) / radii
        rho = np.linalg.norm(d, axis=1, keepdims=True)
        u = d / rho
        back = np.array([0.0, 0.0, 1.0])
        rings = []
        for j in range(1, SKIRT_RINGS + 1):
            t = j / (SKIRT_RINGS + 1)
            r = 1.0 + (rho - 1.0) * (1.0 - t) ** 3
            rings.append(centre + radii * (r * _slerp(u, back, t)))
        pts = np.concatenate([*rings, [centre + radii * back]])
        k = len(outer)
        idx = [outer] + [n + j * k + np.arange(k) for j in range(SKIRT_RINGS)]
        tris = [_strip(idx[j], idx[j + 1]) for j in range(SKIRT_RINGS)]
        tris.append(_fan(idx[-1], n + SKIRT_RINGS * k))
        # hair: the skull above a line from the forehead to the nape, with a soft edge
        hair = np.clip((-6.2 + 0.75 * pts[:, 2] - pts[:, 1]) / 1.5 + 0.5, 0.0, 1.0)[:, None]
        colors = [np.asarray(config.skin) * (1 - hair) + np.asarray(config.hair) * hair]
        pts = [pts]
        for side in (1.0, -1.0):  # ears: flat ellipsoids half in the skull, tilted back, flared out
            ex, ey, ez = EAR_CENTRE
            ear, ear_tris = _ellipsoid(
                (side * ex, ey, ez), EAR_RADII, _rot_xy(-15.0, side * 25.0), n + sum(map(len, pts))
            )
            pts.append(ear)
            tris.append(ear_tris)
            colors.append(np.tile(np.asarray(config.skin) * (1.0, 0.94, 0.94), (len(ear), 1)))
        return (np.concatenate(pts).astype(np.float32), np.concatenate(tris).astype(np.int32),
                np.concatenate(colors).astype(np.float32))  # fmt: skip

    @staticmethod
    def _neck() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """An open cylinder from inside the skull down out of the view (positions, normals, triangles)."""
        radius, top, bottom, cz = NECK
        seg = 32
        ang = np.linspace(0.0, 2 * math.pi, seg, endpoint=False)
        normal = np.stack([np.cos(ang), np.zeros(seg), np.sin(ang)], 1)
        levels = np.linspace(top, bottom, 4)
        pts = np.concatenate([normal * radius + (0.0, y, cz) for y in levels])
        normals = np.tile(normal, (len(levels), 1))
        tris = np.concatenate(
            [_strip(j * seg + np.arange(seg), (j + 1) * seg + np.arange(seg)) for j in range(len(levels) - 1)]
        )
        a, b, c = pts[tris[:, 0]], pts[tris[:, 1]], pts[tris[:, 2]]
        inward = np.einsum("ij,ij->i", np.cross(b - a, c - a), normals[tris[:, 0]]) < 0
        tris[inward] = tris[inward][:, ::-1]
        return pts.astype(np.float32), normals.astype(np.float32), tris.astype(np.int32)

    @staticmethod
    def _face_colors(neutral: np.ndarray, sockets: list[np.ndarray], config: AvatarConfig) -> np.ndarray:
        import cv2

        colors = np.tile(np.asarray(config.skin, np.float32), (len(neutral), 1))
        lips = neutral[list(OUTER_LIPS), :2].astype(np.float32)
        inside = np.array([cv2.pointPolygonTest(lips, (float(x), float(y)), True) for x, y in neutral[:, :2]])
        w = np.clip(inside / 0.25 + 0.5, 0.0, 1.0)[:, None]  # soft edge across the outer lip line
        colors = colors * (1 - w) + np.asarray(config.lips) * w
        colors[list(BROWS)] = config.brows
        for s in sockets:  # the lid rims: a lash line
            colors[s] = config.lash
        return colors.astype(np.float32)

    @staticmethod
    def _eye(neutral: np.ndarray, outer: int, inner: int, nasal: float) -> Eye:
        """An eyeball behind the lids: centred on the corners' midpoint at the iris's resting place (so
        gaze 0 looks where a resting eye does, as in geometry/gaze.py), wide enough to fill the opening,
        its front just behind the lid rim. Iris ≈ 0.4, pupil ≈ 0.14 of the eye's width across."""
        o, i = neutral[outer].astype(np.float64), neutral[inner].astype(np.float64)
        width = float(np.linalg.norm(o - i))
        radius = 0.52 * width
        centre = (o + i) / 2
        centre[0] += nasal * GAZE_REST[0] * width
        centre[1] += GAZE_REST[1] * width
        centre[2] = min(o[2], i[2]) - 0.05 * width + radius
        iris_cos = math.cos(math.asin(0.2 * width / radius))
        pupil_cos = math.cos(math.asin(0.07 * width / radius))
        return Eye(centre.astype(np.float32), radius, iris_cos, pupil_cos)

    # ---- per frame ------------------------------------------------------------------------------------
    def positions(self, face_vertices: np.ndarray) -> np.ndarray:
        """(M, 3) float32: the face as given (the rig's shape), the shell, the pockets behind their rims."""
        v = np.asarray(face_vertices, np.float32)
        out = np.empty((self.num_vertices, 3), np.float32)
        out[: self.num_face] = v
        out[self.num_face : self.num_face + len(self._shell_points)] = self._shell_points
        for rim, start, depth in self._pockets:
            ring = v[rim]
            k = len(rim)
            c = ring.mean(0)
            out[start : start + k] = ring
            out[start + k : start + 2 * k] = c + (ring - c) * 0.8 + (0.0, 0.0, 0.45 * depth)
            out[start + 2 * k] = c + (0.0, 0.0, depth)
        return out


def gaze_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """(3, 3) rotation of an eyeball in the head frame: its forward axis (-z) turned to look ``yaw`` to
    the subject's left (+x) and ``pitch`` up (-y), as ``Face.gaze`` gives them."""
    return _rot_xy(-pitch_deg, -yaw_deg)


def gaze_from_blendshapes(weights: np.ndarray) -> np.ndarray:
    """(2, 2) degrees like ``Face.gaze`` from the eyeLook* shapes, for faces without gaze angles (what a
    receiver that gets only the 52 weights would do; ~30° at weight 1)."""
    from face3d_live.expression.arkit import ARKIT_INDEX

    w = lambda name: float(weights[ARKIT_INDEX[name]])
    out = np.zeros((2, 2), np.float32)
    for row, side in enumerate(("Left", "Right")):
        # looking to the subject's left: the left eye looks out, the right eye looks in
        towards_left = w(f"eyeLookOut{side}") - w(f"eyeLookIn{side}")
        out[row, 0] = 30.0 * (towards_left if side == "Left" else -towards_left)
        out[row, 1] = 30.0 * (w(f"eyeLookUp{side}") - w(f"eyeLookDown{side}"))
    return out


class AvatarRenderer(Closeable):
    """Draws the avatar. ``set_face(face)`` (or ``set_state``) each frame, then ``render(fbo)`` into any
    framebuffer with a depth buffer, or ``render_rgb((w, h))`` → (h, w, 3) uint8 headless.

    ``rig``: an ``ArkitRig`` (``neutral``, ``triangles``, ``shape(weights)``); None loads the packaged one
    (``ArkitRig.load()``, ModelError if its asset is missing). Owns its buffers, vertex arrays, target
    and (when it made it) its ShaderLibrary; ``timings_ns["avatar"]`` is the last render's duration.
    """

    def __init__(
        self, ctx, rig=None, config: AvatarConfig = AvatarConfig(), shaders: ShaderLibrary | None = None
    ):
        if rig is None:
            from face3d_live.avatar.rig import ArkitRig

            rig = ArkitRig.load()
        self.ctx, self.rig, self.config = ctx, rig, config
        self.mesh = AvatarMesh(rig.neutral, rig.triangles, config)
        self._own_shaders = shaders is None
        self.shaders = shaders or ShaderLibrary(ctx)
        prog = self.shaders.program("avatar")  # compile now: a broken shader fails at start, not mid-frame
        m = self.mesh
        self._pos = ctx.buffer(reserve=m.num_vertices * 12, dynamic=True)
        self._nrm = ctx.buffer(reserve=m.num_vertices * 12, dynamic=True)
        self._col = ctx.buffer(m.colors.tobytes())
        self._idx = ctx.buffer(m.triangles.tobytes())
        self._vao = ctx.vertex_array(
            prog, [(self._pos, "3f", A_POSITION), (self._nrm, "3f", A_NORMAL), (self._col, "3f", A_COLOR)],
            self._idx, index_element_size=4,
        )  # fmt: skip
        sphere, sphere_tris = uv_sphere()
        self._sphere = ctx.buffer(sphere.tobytes())
        self._sphere_idx = ctx.buffer(sphere_tris.tobytes())
        self._eye_vao = ctx.vertex_array(
            prog, [(self._sphere, "3f", A_POSITION), (self._sphere, "3f", A_NORMAL)], self._sphere_idx,
            index_element_size=4,
        )  # fmt: skip
        neck = [ctx.buffer(a.tobytes()) for a in (m.neck_positions, m.neck_normals, m.neck_colors)]
        self._neck_idx = ctx.buffer(m.neck_triangles.tobytes())
        self._neck = neck
        self._neck_vao = ctx.vertex_array(
            prog,
            [(b, "3f", a) for b, a in zip(neck, (A_POSITION, A_NORMAL, A_COLOR))],
            self._neck_idx,
            index_element_size=4,
        )
        self._target = None
        self.rotation = np.eye(3)
        self.gaze = np.zeros((2, 2), np.float32)
        self.weights = np.zeros(len(rig.deltas), np.float32)
        self._dirty = True
        self.timings_ns: dict[str, int] = {}
        self.set_state(self.weights)

    # ---- state -----------------------------------------------------------------------------------------
    def set_face(self, face: Face | None) -> None:
        """Drive the avatar from a face's blendshapes, gaze and head rotation (its mesh is not used);
        None: the neutral face, looking ahead."""
        if face is None:
            self.set_state(np.zeros_like(self.weights))
            return
        weights = face.blendshapes if face.blendshapes is not None else np.zeros_like(self.weights)
        self.set_state(weights, face.pose.rotation, face.gaze)

    def set_state(
        self, weights: np.ndarray, rotation: np.ndarray | None = None, gaze: np.ndarray | None = None
    ):
        """weights (52,) in ARKit order; rotation (3, 3) head pose (canonical → camera, as ``Pose``);
        gaze (2, 2) degrees (rows left, right eye; columns yaw, pitch), None: from the eyeLook shapes."""
        w = np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
        if w.shape != self.weights.shape:
            raise RenderError(f"avatar: expected {self.weights.shape} blendshape weights, got {w.shape}")
        r = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
        if r.shape != (3, 3) or not np.isfinite(r).all():
            raise RenderError(f"avatar: rotation must be a finite (3, 3) matrix, got {r.shape}")
        g = gaze_from_blendshapes(w) if gaze is None else np.asarray(gaze, np.float32)
        lim = self.config.max_gaze_deg
        self.weights, self.rotation, self.gaze = w, r, np.clip(np.nan_to_num(g), -lim, lim)
        self._dirty = True

    def _upload(self) -> None:
        pts = self.mesh.positions(self.rig.shape(self.weights))
        self._pos.write(pts.tobytes())
        self._nrm.write(vertex_normals(pts, self.mesh.triangles).tobytes())
        self._dirty = False

    # ---- drawing ---------------------------------------------------------------------------------------
    def matrices(self, viewport: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(projection, view, head model, body model), float64 4×4. Both models take the head frame to the
        world (y up, +z towards the viewer) about the pivot; the head's also turns by the head pose. The
        camera looks at the resting head's centre from where its height fills ``fill`` of the view (or,
        in a narrow view, its width does)."""
        cfg, m = self.config, self.mesh
        body = np.eye(4)
        body[:3, :3] = FLIP_YZ
        body[:3, 3] = -FLIP_YZ @ m.pivot
        head = body.copy()
        head[:3, :3] = FLIP_YZ @ self.rotation
        head[:3, 3] = -head[:3, :3] @ m.pivot
        aspect = viewport[0] / max(viewport[1], 1)
        half = math.tan(math.radians(cfg.fov_deg) / 2)
        extent = max(m.size[1] / 2, m.size[0] / 2 / max(aspect, 1e-3))
        distance = extent / (cfg.fill * half) + m.size[2] / 2
        target = FLIP_YZ @ (m.centre - m.pivot)
        view = look_at(target + (0.0, 0.0, distance), target, np.array([0.0, 1.0, 0.0]))
        near, far = max(distance - 2 * m.radius, 0.5), distance + 2 * m.radius
        return perspective(cfg.fov_deg, aspect, near, far), view, head, body

    def project(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(N, 2) pixel coordinates (x right, y down) of head-frame points in a render of ``size`` (w, h)
        under the current head pose (where an eye or the mouth lands on screen)."""
        proj, view, head, _ = self.matrices(size)
        p = np.asarray(points, np.float64).reshape(-1, 3)
        clip = np.c_[p, np.ones(len(p))] @ (proj @ view @ head).T
        ndc = clip[:, :2] / clip[:, 3:]
        return np.stack([(ndc[:, 0] + 1) / 2 * size[0], (1 - ndc[:, 1]) / 2 * size[1]], 1)

    def render(self, fbo, *, clear: bool = True) -> None:
        """Draw the avatar over ``fbo``'s whole viewport (``fbo`` needs a depth buffer)."""
        if self._closed:
            raise RenderError("avatar renderer is closed")
        t0 = time.perf_counter_ns()
        if self._dirty:
            self._upload()
        ctx, cfg = self.ctx, self.config
        proj, view, head, body = self.matrices(fbo.size)
        prog = self.shaders.program("avatar")
        with ctx.scope(fbo, enable_only=ctx.DEPTH_TEST):
            fbo.viewport = (0, 0, *fbo.size)
            if clear:
                fbo.clear(*cfg.background, depth=1.0)
            for name, value in (
                ("u_light_dir", cfg.light_dir), ("u_ambient", cfg.ambient), ("u_diffuse", cfg.diffuse),
                ("u_rim", cfg.rim), ("u_rim_color", cfg.rim_color), ("u_sclera", cfg.sclera),
                ("u_iris", cfg.iris), ("u_pupil", cfg.pupil),
            ):  # fmt: skip
                _set(prog, name, value)
            self._draw(prog, self._vao, proj, view @ head)
            self._draw(prog, self._neck_vao, proj, view @ body)
            for row, eye in enumerate(self.mesh.eyes):
                local = np.eye(4)
                local[:3, :3] = gaze_rotation(*self.gaze[row]) * eye.radius
                local[:3, 3] = eye.centre
                self._draw(prog, self._eye_vao, proj, view @ head @ local, eye)
        self.timings_ns = {"avatar": time.perf_counter_ns() - t0}

    def _draw(self, prog, vao, proj: np.ndarray, modelview: np.ndarray, eye: Eye | None = None) -> None:
        cfg = self.config
        lin = modelview[:3, :3]
        _set(prog, "u_mvp", gl_bytes(proj @ modelview))
        _set(prog, "u_modelview", gl_bytes(modelview))
        _set(prog, "u_normal_matrix", gl_bytes(lin / np.linalg.norm(lin[:, 0])))  # rotation × uniform scale
        _set(prog, "u_eye", eye is not None)
        _set(prog, "u_specular", cfg.specular if eye is None else cfg.eye_specular)
        _set(prog, "u_shininess", cfg.shininess if eye is None else 60.0)
        if eye is not None:
            _set(prog, "u_iris_cos", eye.iris_cos)
            _set(prog, "u_pupil_cos", eye.pupil_cos)
        vao.render(self.ctx.TRIANGLES)

    def render_rgb(self, size: tuple[int, int]) -> np.ndarray:
        """Render offscreen at ``size`` (w, h) → (h, w, 3) uint8 RGB, row 0 = top. Keeps its target
        between calls of the same size."""
        from face3d_live.render.context import OffscreenTarget

        if self._target is None or self._target.size != (int(size[0]), int(size[1])):
            if self._target is not None:
                self._target.close()
            self._target = OffscreenTarget(self.ctx, size, self.config.samples)
        self.render(self._target.fbo)
        return np.ascontiguousarray(self._target.read()[..., :3])

    # ---- lifetime ----------------------------------------------------------------------------------------
    def _close(self) -> None:
        for obj in (self._vao, self._eye_vao, self._neck_vao, self._pos, self._nrm, self._col, self._idx,
                    self._sphere, self._sphere_idx, self._neck_idx, *self._neck):  # fmt: skip
            obj.release()
        if self._target is not None:
            self._target.close()
            self._target = None
        if self._own_shaders:
            self.shaders.close()
