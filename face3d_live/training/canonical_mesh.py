"""Build the canonical neutral mesh (face3d_live/assets/canonical_mesh.npz) from real frontal faces.

The teacher meshes of near-frontal AFLW crops (|yaw| < 5°, confident) are aligned by generalised
Procrustes and averaged, then made left/right symmetric. The result (468 mean positions, a mirror map)
is a statistic, not image data. Re-run: ``python -m face3d_live.training.canonical_mesh``.
Units: the outer eye corners are 9.0 apart (≈ cm); x right, y down, z away from the camera.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from face3d_live.geometry.pose import apply_pose, umeyama
from face3d_live.models.mediapipe_mesh import MediaPipeMeshModel
from face3d_live.training.data import aflw_shards, default_data_dir, iter_tar_images, load_aflw_labels

EYE_OUTER_RIGHT, EYE_OUTER_LEFT, FOREHEAD, CHIN = 33, 263, 10, 152
OUT = Path(__file__).resolve().parents[1] / "assets" / "canonical_mesh.npz"


def teacher_mesh(model: MediaPipeMeshModel, img: np.ndarray) -> tuple[np.ndarray, float]:
    """The teachers' two-pass protocol (training/teacher.py) → (vertices (468, 3) image px, score)."""
    from face3d_live.training.teacher import teacher_two_pass

    def predict(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = model.predict(crops)
        return out.vertices, out.scores

    verts, _, score = teacher_two_pass(predict, model.input_size, img)
    return verts, score


def face_frame(verts: np.ndarray) -> np.ndarray:
    """Rotate into the face's own frame: x along the outer eye corners, y from forehead to chin."""
    x = verts[EYE_OUTER_LEFT] - verts[EYE_OUTER_RIGHT]
    x /= np.linalg.norm(x)
    y = verts[CHIN] - verts[FOREHEAD]
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    rot = np.stack([x, y, np.cross(x, y)])
    out = (verts - verts.mean(0)) @ rot.T
    out[:, 0] -= 0.5 * (out[EYE_OUTER_LEFT, 0] + out[EYE_OUTER_RIGHT, 0])
    return out


def mirror_map(verts: np.ndarray) -> np.ndarray:
    """Index of each vertex's mirror partner: a one-to-one matching of the mesh to its x-reflection."""
    from scipy.optimize import linear_sum_assignment

    refl = verts * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(refl[:, None, :] - verts[None, :, :], axis=2)
    _, cols = linear_sum_assignment(cost)
    return cols.astype(np.int32)


def build(data_dir: Path, max_faces: int = 800) -> dict:
    labels = load_aflw_labels(data_dir)
    frontal = {n for n, y in zip(labels.names, labels.yaw) if abs(y) < 5.0}
    model = MediaPipeMeshModel()
    meshes = []
    bar = tqdm(total=max_faces, desc="frontal teacher meshes", unit="face")
    for shard in aflw_shards(data_dir):
        for name, img in iter_tar_images(shard):
            if name not in frontal:
                continue
            verts, score = teacher_mesh(model, img)
            if score > 0.9:
                meshes.append(verts)
                bar.update()
            if len(meshes) >= max_faces:
                break
        if len(meshes) >= max_faces:
            break
    bar.close()
    stack = np.stack(meshes)
    ref = stack[0] - stack[0].mean(0)
    for _ in range(5):  # generalised Procrustes
        aligned = np.stack([apply_pose(umeyama(m, ref), m) for m in stack])
        ref = np.median(aligned, axis=0)
        ref -= ref.mean(0)
    # face the camera with a level eye line, then make it exactly left/right symmetric
    sym = face_frame(ref)
    flip = np.array([-1.0, 1.0, 1.0])
    for _ in range(3):
        mirror = mirror_map(sym)
        refl = sym[mirror] * flip
        sym = face_frame(0.5 * (sym + apply_pose(umeyama(refl, sym), refl)))
    sym = 0.5 * (sym + sym[mirror] * flip)
    sym -= sym.mean(0)
    sym *= 9.0 / np.linalg.norm(sym[EYE_OUTER_RIGHT] - sym[EYE_OUTER_LEFT])
    return {
        "vertices": sym.astype(np.float32),
        "mirror": mirror,
        "num_faces": np.int32(len(meshes)),
        "triangles": mediapipe_triangles(),  # the topology ships with the mesh: no mediapipe at run time
    }


def mediapipe_triangles() -> np.ndarray:
    """(852, 3) int32 triangles of MediaPipe's face-mesh tessellation, read from mediapipe's source.

    mediapipe publishes the tessellation as a frozenset of edges, which loses the triangles; its
    source lists the edges three at a time, one triangle each, so we read the literal in order.
    """
    import ast
    import inspect

    from mediapipe.python.solutions import face_mesh_connections

    tree = ast.parse(inspect.getsource(face_mesh_connections))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FACEMESH_TESSELATION":
            pairs = [ast.literal_eval(e) for e in node.value.args[0].elts]
            break
    else:  # pragma: no cover - only if mediapipe changes its source layout
        raise RuntimeError("FACEMESH_TESSELATION not found in mediapipe; install mediapipe==0.10.21")
    return np.array([(pairs[i][0], pairs[i][1], pairs[i + 1][1]) for i in range(0, len(pairs), 3)], np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--faces", type=int, default=800)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = build(args.data, args.faces)
    np.savez_compressed(args.out, **result)
    print(f"wrote {args.out} from {int(result['num_faces'])} faces")


if __name__ == "__main__":
    main()
