"""Face profiling: near-frontal training crops turned to large yaw, with exact labels for every point.

The large-pose half of 300W-LP (Zhu et al., "Face Alignment Across Large Poses: A 3D Solution") in this
project's terms. A near-frontal sample's 478 teacher points are a 3D surface in canvas px (x right, y down,
+z away from the camera, orthographic). Turn that surface about a vertical axis behind the face and
re-project the image through it:

- the face: the 468-vertex mesh (its eye and mouth holes closed with fans), each vertex sampling the
  image where it was; the GPU's depth test hides what turned behind the nose or the far cheek;
- around it: a ring at ``ring_scale`` × the face oval, a little behind it (the sides of the head, hair, ears),
  turning with the face, and a frame on the canvas border that stays: the band between them stretches, as
  the background does in 300W-LP, and samples only the canvas (a frame beyond it smeared the edge pixels
  into streaks);
- the turned face slides back to where the face was (``recentre``: the middle of its extent in x), as a
  detector box would follow it: turning about an axis behind the face carried it ~0.4 face widths sideways,
  often half out of the canvas and away from the source's detector box, which the sample keeps;
- the labels: the same rotation and slide applied to the 478 points and to the 68 3D-convention points (put
  in the mesh's depth frame first), so they are exact for the rendered image, hidden points included.

The far side of the face never was in the image, so it is the near side's texture seen at a grazing angle
(stretched); the network is trained on real crops too. Samples from the held-out split are never used.
``python -m face3d_live.training.profiling --data PART.npz … --out DIR`` writes ``profileN.npz`` parts
(``pack.pack_parts``' format) beside the training parts.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from face3d_live.training.dataset import TrainData, mesh_crops

log = logging.getLogger(__name__)

PREFIX = "profiled/"  # names of synthetic samples: their labels are exact at any yaw (train.teacher_weights)


@dataclass(frozen=True)
class ProfileConfig:
    max_source_yaw: float = 20.0  # |yaw| and |pitch| of the sources (from their mesh), degrees
    turn: tuple[float, float] = (30.0, 80.0)  # the added yaw, uniform, either direction
    ring_scale: float = 1.45  # the ring around the face oval (× its distance from the oval's centre)
    ring_depth: float = 0.35  # how far behind the oval the ring lies, × the face's width
    pivot_depth: float = 0.45  # the turning axis behind the face's mean depth, × the face's width
    recentre: bool = True  # slide the turned face (and labels) back to the source face's middle in x
    supersample: int = 2  # render at this multiple of the canvas, then area-downsample (antialiasing)
    per_source: int = 1
    seed: int = 0


@functools.lru_cache(maxsize=1)
def _mesh_layout() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(triangles (T, 3) over 468 vertices + one centre per hole, the outer oval loop (ordered), the hole loops).

    The face mesh has four boundary loops: the oval and the holes of the eyes and the mouth."""
    from face3d_live.geometry import mesh

    tris = mesh.triangles().astype(np.int64)
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    uniq, count = np.unique(edges, axis=0, return_counts=True)
    adj: dict[int, list[int]] = {}
    for a, b in uniq[count == 1]:
        adj.setdefault(int(a), []).append(int(b))
        adj.setdefault(int(b), []).append(int(a))
    loops, seen = [], set()
    for start in sorted(adj):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [n for n in adj[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(np.array(loop))
    loops.sort(key=len)
    oval, holes = loops[-1], loops[:-1]
    fans = [
        np.stack([loop, np.roll(loop, -1), np.full(len(loop), 468 + k)], 1) for k, loop in enumerate(holes)
    ]
    return np.concatenate([tris, *fans]), oval, holes


def _strip(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Triangles joining two loops of the same length, vertex i to vertex i."""
    a, b = inner, np.roll(inner, -1)
    c, d = outer, np.roll(outer, -1)
    return np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


@dataclass(frozen=True)
class Turn:
    """One sample's motion: a turn about the vertical axis through ``pivot``, then a slide of ``shift`` px in x."""

    degrees: float
    pivot: np.ndarray
    shift: float = 0.0

    def apply(self, points: np.ndarray) -> np.ndarray:
        out = turn_points(points, self.degrees, self.pivot)
        out[:, 0] += self.shift
        return out


def turn_points(points: np.ndarray, degrees: float, pivot: np.ndarray) -> np.ndarray:
    """(N, 3) points turned about the vertical axis through ``pivot`` (x, _, z); y stays."""
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    out = np.array(points, np.float64, copy=True)
    dx, dz = out[:, 0] - pivot[0], out[:, 2] - pivot[2]
    out[:, 0] = pivot[0] + c * dx - s * dz
    out[:, 2] = pivot[2] + s * dx + c * dz
    return out


class FaceProfiler:
    """Renders turned samples on a headless GL context (``render.create_context``)."""

    def __init__(self, canvas: int, config: ProfileConfig = ProfileConfig(), ctx=None) -> None:
        from face3d_live.render import OffscreenTarget, create_context
        from face3d_live.render.shaders import ShaderLibrary

        self.canvas, self.config = int(canvas), config
        self._owns_ctx = ctx is None
        self.ctx = create_context("egl") if ctx is None else ctx
        self.shaders = ShaderLibrary(self.ctx)
        self.prog = self.shaders.program("profile")
        self.size = self.canvas * config.supersample
        self.prog["size"].value = (float(self.size), float(self.size))
        self.target = OffscreenTarget(self.ctx, (self.size, self.size))
        tris, oval, holes = _mesh_layout()
        self.oval, self.holes = oval, holes
        n_face = 468 + len(holes)
        ring = np.arange(len(oval)) + n_face
        frame = ring + len(oval)
        self.n_moving = n_face + len(oval)  # the face and the ring turn; the frame and the corners stay
        self.n_vertices = self.n_moving + len(oval) + 4
        c0 = self.n_vertices - 4  # the canvas corners, behind everything: the source image where no band is
        corners = np.array([[c0, c0 + 1, c0 + 2], [c0, c0 + 2, c0 + 3]])
        index = np.concatenate([tris, _strip(oval, ring), _strip(ring, frame), corners]).astype(np.int32)
        self.ibo = self.ctx.buffer(index.tobytes())
        self.vbo = self.ctx.buffer(reserve=self.n_vertices * 5 * 4)
        self.vao = self.ctx.vertex_array(
            self.prog, [(self.vbo, "3f 2f", "in_pos", "in_src")], index_buffer=self.ibo
        )
        self.texture = self.ctx.texture((self.canvas, self.canvas), 3, alignment=1)
        self.texture.repeat_x = self.texture.repeat_y = False  # edge pixels beyond the canvas, as the crops

    def _geometry(self, verts468: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray, Turn]:
        """(source points (V, 3), moved points (V, 3), the turn) of the render mesh in canvas px."""
        cfg = self.config
        v = np.asarray(verts468, np.float64)
        width = float(np.ptp(v[:, 0]))
        centres = [v[loop].mean(0) for loop in self.holes]
        face = np.concatenate([v, centres])
        oval = v[self.oval]
        c = oval[:, :2].mean(0)
        ring = oval.copy()
        ring[:, :2] = c + cfg.ring_scale * (oval[:, :2] - c)
        ring[:, 2] = oval[:, 2] + cfg.ring_depth * width
        frame = oval.copy()  # on the canvas border, or just beyond the ring where that is further out
        t = np.maximum(_border_scale(c, oval[:, :2] - c, self.canvas), 1.15 * cfg.ring_scale)
        frame[:, :2] = c + (oval[:, :2] - c) * t[:, None]
        pivot = np.array([v[:, 0].mean(), 0.0, v[:, 2].mean() + cfg.pivot_depth * width])
        moving = np.concatenate([face, ring])
        turned = turn_points(moving, degrees, pivot)
        shift = _mid_x(v) - _mid_x(turned[:468]) if cfg.recentre else 0.0
        turned[:, 0] += shift
        lo, hi = -0.5, self.canvas - 0.5
        corners = np.array([[lo, lo, 0.0], [hi, lo, 0.0], [hi, hi, 0.0], [lo, hi, 0.0]])
        moved = np.concatenate([turned, frame, corners])
        source = np.concatenate([moving, frame, corners])
        return source, moved, Turn(float(degrees), pivot, shift)

    def render(self, image: np.ndarray, verts468: np.ndarray, degrees: float) -> tuple[np.ndarray, Turn]:
        """(turned image (S, S, 3) uint8, the turn) for one sample; move the labels with ``Turn.apply``."""
        if image.shape[:2] != (self.canvas, self.canvas):
            raise ValueError(f"image must be {self.canvas}×{self.canvas}, got {image.shape[:2]}")
        source, moved, turn = self._geometry(verts468, degrees)
        k = self.config.supersample
        z = moved[:, 2]
        near, far = z[: self.n_moving].min(), z[: self.n_moving].max()
        depth = np.clip((z - near) / max(far - near, 1e-6) * 0.98, 0.0, 0.98)
        depth[self.n_moving :] = 0.999  # the frame stays behind the face and the ring
        depth[-4:] = 0.9995  # and the corners behind the frame
        data = np.empty((self.n_vertices, 5), np.float32)
        data[:, 0:2] = (moved[:, :2] + 0.5) * k - 0.5  # canvas px → supersampled px (pixel centres)
        data[:, 2] = depth
        data[:, 3:5] = (source[:, :2] + 0.5) / self.canvas
        self.vbo.write(data.tobytes())
        self.texture.write(np.ascontiguousarray(image, np.uint8).tobytes())
        self.target.fbo.use()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.ctx.disable(self.ctx.CULL_FACE)
        self.target.fbo.clear(0.0, 0.0, 0.0, 1.0, depth=1.0)
        self.texture.use(0)
        self.vao.render()
        big = self.target.read()[..., :3]
        out = cv2.resize(big, (self.canvas, self.canvas), interpolation=cv2.INTER_AREA) if k > 1 else big
        return np.ascontiguousarray(out), turn

    def close(self) -> None:
        for obj in (self.vao, self.vbo, self.ibo, self.texture):
            obj.release()
        self.target.close()
        self.shaders.close()
        if self._owns_ctx:
            self.ctx.release()

    def __enter__(self) -> FaceProfiler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mid_x(points: np.ndarray) -> float:
    return float(points[:, 0].min() + points[:, 0].max()) / 2


def _border_scale(centre: np.ndarray, directions: np.ndarray, canvas: int) -> np.ndarray:
    """(N,) t where the rays ``centre + t · direction`` leave the canvas square (its outer pixel edges)."""
    lo, hi = -0.5, canvas - 0.5
    d = np.where(np.abs(directions) < 1e-9, 1e-9, directions)
    tx = np.where(d[:, 0] > 0, hi - centre[0], lo - centre[0]) / d[:, 0]
    ty = np.where(d[:, 1] > 0, hi - centre[1], lo - centre[1]) / d[:, 1]
    return np.minimum(tx, ty)


def mesh_yaw_pitch(verts468: np.ndarray) -> tuple[float, float]:
    from face3d_live.geometry import mesh
    from face3d_live.geometry.pose import umeyama

    yaw, pitch, _ = umeyama(mesh.canonical_vertices(), verts468).euler_degrees()
    return yaw, pitch


def lm68_in_mesh_depth(lm68: np.ndarray, verts468: np.ndarray) -> np.ndarray:
    """The 68 labels (z centred per face) with z moved into the mesh's depth frame, as the Reconstructor
    places its 68-point head: their mean depth = the mean depth of the mesh's blended 68 points."""
    from face3d_live.geometry.landmarks68 import blend68_mean_z

    out = np.array(lm68, np.float64, copy=True)
    out[:, 2] += float(blend68_mean_z(verts468)[0]) - np.nanmean(out[:, 2])
    return out


def profile_data(
    data: TrainData, config: ProfileConfig = ProfileConfig(), progress: bool = True, ctx=None
) -> TrainData:
    """Turned copies (``config.per_source`` each) of the near-frontal training samples of ``data``
    (``ctx``: a GL context to render on; default: a headless one of its own)."""
    from tqdm import tqdm

    rng = np.random.default_rng(config.seed)
    sources = []
    for i in np.flatnonzero(data.teacher_ok & ~data.held_out):
        yaw, pitch = mesh_yaw_pitch(data.verts[i, :468])
        if abs(yaw) <= config.max_source_yaw and abs(pitch) <= config.max_source_yaw:
            sources.append(i)
    log.info("%d near-frontal sources of %d samples", len(sources), len(data))
    canvas = data.images.shape[1]
    out: dict[str, list] = {f: [] for f in TrainData.__dataclass_fields__}
    with FaceProfiler(canvas, config, ctx) as profiler:
        jobs = [(i, k) for i in sources for k in range(config.per_source)]
        sides = rng.integers(0, 2, len(data))  # the first copy's direction; further copies alternate
        for i, k in tqdm(jobs, desc="profile", unit="img", disable=not progress):
            turn = rng.uniform(*config.turn) * (1.0 if (sides[i] + k) % 2 else -1.0)
            image, motion = profiler.render(data.images[i], data.verts[i, :468], turn)
            verts = motion.apply(data.verts[i])
            lm68 = data.lm68[i]
            if np.isfinite(lm68).all():
                lm68 = motion.apply(lm68_in_mesh_depth(lm68, data.verts[i, :468]))
                lm68[:, 2] -= lm68[:, 2].mean()  # z centred per face, as every 68-point label
            yaw, _ = mesh_yaw_pitch(verts[:468])
            out["images"].append(image)
            out["verts"].append(verts.astype(np.float32))
            out["lm68"].append(np.asarray(lm68, np.float32))
            out["points"].append(np.full((21, 2), np.nan, np.float32))  # manual points do not turn
            out["yaw"].append(np.float32(yaw))
            out["teacher_ok"].append(True)
            out["mesh_crop"].append(mesh_crops(verts[None].astype(np.float32))[0])
            out["box_crop"].append(data.box_crop[i])
            out["held_out"].append(False)
            out["shape"].append(data.shape[i])
            out["names"].append(f"{PREFIX}{data.names[i]}#{k}")
    if not out["names"]:
        return data.subset(np.zeros(0, np.int64))
    return TrainData(**{f: np.asarray(v) for f, v in out.items()})


def main(argv: list[str] | None = None) -> int:
    from face3d_live.errors import Face3DError
    from face3d_live.training.pack import load_parts, pack_parts

    p = argparse.ArgumentParser(
        prog="python -m face3d_live.training.profiling",
        description="Turn the near-frontal training samples of packed parts to large yaw (exact labels) and "
        "write them as profileN.npz parts.",
    )
    p.add_argument("--data", type=Path, nargs="+", required=True, help="training parts (pack.pack_parts)")
    p.add_argument("--out", type=Path, required=True, help="folder for profileN.npz")
    p.add_argument("--per-source", type=int, default=1, help="turned copies per near-frontal sample (1)")
    p.add_argument("--max-source-yaw", type=float, default=20.0, help="|yaw|, |pitch| of the sources (20°)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = ProfileConfig(max_source_yaw=args.max_source_yaw, per_source=args.per_source, seed=args.seed)
    try:
        synthetic = profile_data(load_parts(args.data), cfg)
        if not len(synthetic):
            raise Face3DError("no near-frontal training samples in these parts: nothing to turn")
        paths = pack_parts(synthetic, args.out, prefix="profile", seed=args.seed)
    except Face3DError as exc:
        print(f"profiling: {exc}", file=sys.stderr)
        return 1
    print(f"{len(synthetic)} turned samples in {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
