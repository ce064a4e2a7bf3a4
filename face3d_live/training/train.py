"""Train face3d-r50 (v2: mesh, iris and 68-point heads at once) from two teachers and the manual AFLW points.

Loss per positive crop (coordinates in % of the 224 crop):
  teacher:  L1 on x, y (+ 0.5 × z) of the mesh teacher's 478 points (468 vertices, landmark-68 vertices ×2;
            10 iris points × ``iris_weight``), weighted by the teacher's trust in that sample (0 where it
            failed; fading out above 45° |yaw|; fading out where its mesh disagrees with the manual points);
  lm68:     the 68-point head against the 3D teacher's labels (AFLW manual points winning where they
            exist), Euclidean in x, y + 0.5 × |z| (z centred per face), at every yaw;
  mesh68:   the same labels through the learned blend ``W68`` of mesh vertices: where the mesh teacher is
            not trusted (large yaw) the 3D labels shape the mesh, weighted by ``mesh68_floor + (1 - trust)``;
  manual:   Euclidean error of the 21 AFLW points (``points21``: fixed affine blends of vertices) where
            annotated, at every yaw: this is where the student can be right and the teacher wrong;
  presence: BCE, positives = face crops, negatives = crops slid or scaled off the face.
bf16 autocast, channels_last, AdamW + warm-up + cosine, EMA weights; resumable checkpoints. ``init`` starts
from a trained (v1 or v2) file: the backbone as it is, new head rows as blends of the mesh rows.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from face3d_live.geometry.landmarks68 import MIRROR68
from face3d_live.geometry.mesh import LANDMARKS68, mirror_indices_478
from face3d_live.models.layout import NUM_LM68, NUM_POINTS, NUM_VERTICES, split_output
from face3d_live.models.r50 import INPUT_SIZE, FaceR50
from face3d_live.training.augment import AugmentConfig, Batch, make_batch
from face3d_live.training.dataset import TrainData, box_crops, mesh_crops
from face3d_live.training.metrics import YAW_BINS, nme68, nme_report, point_nme  # noqa: F401 (re-exported)
from face3d_live.training.points21 import AFLW_MIRROR, aflw_points

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    steps: int = 0  # 0: derive from `minutes` after timing the first steps
    minutes: float = 10.0
    manual_weight: float = 1.0
    presence_weight: float = 0.3
    z_weight: float = 0.5
    iris_weight: float = 3.0
    lm68_weight: float = 1.0
    mesh68_weight: float = 1.0
    mesh68_floor: float = 0.2
    ema: float = 0.999
    checkpoint_every_s: float = 120.0
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def teacher_weights(data: TrainData, W: np.ndarray) -> np.ndarray:
    """Trust in each teacher mesh: 0 if failed; × yaw fade (1 to 45°, 0.15 past 70°; none for profiled
    samples, training/profiling.py); × agreement with the manual points (1 below 6 % NME, 0 above 12 %)."""
    from face3d_live.training.profiling import PREFIX

    w = data.teacher_ok.astype(np.float32)
    yaw = np.abs(np.nan_to_num(data.yaw, nan=0.0))
    yaw[np.char.startswith(data.names.astype(str), PREFIX)] = 0.0  # profiled: exact labels at any yaw
    w *= np.clip((75.0 - yaw) / 30.0, 0.15, 1.0)
    pred = aflw_points(W, data.verts[:, :468])
    err = point_nme(pred, data.points)
    agree = np.where(np.isnan(err), 1.0, np.clip((0.12 - np.nan_to_num(err)) / 0.06, 0.0, 1.0))
    return (w * agree).astype(np.float32)


def init_model(model: FaceR50, mean_points: np.ndarray) -> None:
    """Start the head at the mean face (bias: the (546, 3) mean of the 478 + 68 points) with small weights;
    zero the last BN of each block so the residual branches start as identities (trains faster from
    scratch)."""
    with torch.no_grad():
        model.head.weight.normal_(0.0, 1e-3)
        model.head.bias.zero_()
        model.head.bias[:-1] = torch.from_numpy(mean_points.reshape(-1) / INPUT_SIZE).float()
        for m in model.modules():
            if hasattr(m, "bn3"):
                m.bn3.weight.zero_()


def head_blend(W68: np.ndarray, W_iris: np.ndarray | None = None) -> np.ndarray:
    """(546, 468): the 478 + 68 outputs as blends of the 468 mesh vertices (identity, iris, 68 points)."""
    if W_iris is None:  # iris centre and rim ≈ the middle of the eye's corners
        W_iris = np.zeros((10, NUM_VERTICES), np.float32)
        W_iris[:5, [33, 133]] = 0.5
        W_iris[5:, [263, 362]] = 0.5
    return np.concatenate([np.eye(NUM_VERTICES, dtype=np.float32), W_iris, W68]).astype(np.float32)


def init_from_trained(model: torch.nn.Module, path: Path, blend: np.ndarray) -> None:
    """Weights of a trained FaceR50 / FaceR50Slim file into ``model`` (same widths); head rows of the 478 + 68
    outputs: copied where the file has them (v2), else (v1: mesh rows only) ``blend`` (546, 468) of its mesh
    rows, so training starts from the old network's mesh with iris and 68 points as blends of it."""
    from face3d_live.models.r50_face import model_head_rows
    from face3d_live.models.weights import load_weights

    tensors, _ = load_weights(path)
    rows = model_head_rows(path)
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()}
    if rows == model.head.out_features:
        model.load_state_dict(state)
        return
    w, b = state.pop("head.weight"), state.pop("head.bias")
    missing = set(model.load_state_dict(state, strict=False).missing_keys) - {"head.weight", "head.bias"}
    if missing:
        raise ValueError(f"{path} does not fit FaceR50: missing {sorted(missing)[:3]}")
    nv = rows // 3
    if nv != NUM_VERTICES:
        raise ValueError(
            f"{path}: head has {rows} outputs; expected a v1 ({NUM_VERTICES * 3 + 1}) or v2 file"
        )
    B = torch.from_numpy(blend.astype(np.float32))  # (546, 468)
    wv, bv = w[:-1].reshape(nv, 3, -1), b[:-1].reshape(nv, 3)
    with torch.no_grad():
        model.head.weight[:-1] = torch.einsum("kv,vdc->kdc", B, wv).reshape(-1, w.shape[1])
        model.head.bias[:-1] = (B @ bv).reshape(-1)
        model.head.weight[-1], model.head.bias[-1] = w[-1], b[-1]


class Trainer:
    """Holds the data on the device, the model, optimiser, EMA and schedule; ``run()`` trains to the end."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: TrainData,
        W: np.ndarray,
        out_dir: Path,
        device: str = "cuda",
        W68: np.ndarray | None = None,
        init: Path | None = None,
        W_iris: np.ndarray | None = None,
    ) -> None:
        self.cfg, self.out_dir, self.device = cfg, Path(out_dir), torch.device(device)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        dev = self.device
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(cfg.seed)
        self.data = data
        tw = teacher_weights(data, W)
        has68 = ~np.isnan(data.lm68[..., 0]).any(1)
        train_idx = np.flatnonzero(
            ~data.held_out & ((tw > 0) | has68 | ~np.isnan(data.points[..., 0]).all(1))
        )
        self.train_idx = torch.from_numpy(train_idx).to(dev)
        t = lambda a, dt=None: torch.from_numpy(np.ascontiguousarray(a)).to(dev, dt)  # noqa: E731
        self.images = t(data.images)
        # one point set per sample, so the augmentation moves and mirrors both label kinds alike
        self.verts = t(np.concatenate([data.verts, data.lm68], 1))
        self.points = t(data.points)
        self.mesh_crop = t(data.mesh_crop)
        self.box_crop = t(data.box_crop)
        self.has_mesh = t(data.teacher_ok)
        self.tw = t(tw)
        self.W = t(W.astype(np.float32))
        if W68 is None:  # the shipped learned blend (fixed vertex picks until one is fitted)
            from face3d_live.geometry.landmarks68 import blend_matrix

            W68 = blend_matrix()
        self.W68 = t(W68.astype(np.float32))
        self.W_iris = W_iris
        self.init = init
        self.mirror = t(np.concatenate([mirror_indices_478(), NUM_POINTS + MIRROR68]).astype(np.int64))
        self.point_mirror = t(AFLW_MIRROR)
        rw = np.ones(NUM_POINTS, np.float32)
        rw[LANDMARKS68] = 2.0
        rw[NUM_VERTICES:] = cfg.iris_weight
        self.region_w = t(rw / rw[:NUM_VERTICES].mean())
        # channels_last pays on the GPU's tensor cores; on the CPU it is several times slower here
        self.memory_format = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
        self.model = FaceR50().to(dev).to(memory_format=self.memory_format)
        self.ema = None
        self.step = 0
        self.total_steps = cfg.steps
        self.opt = None
        self.history: list[dict] = []
        log.info(
            "train: %d samples (%d held out), %d used for training",
            len(data),
            data.held_out.sum(),
            len(train_idx),
        )

    # ---- setup / checkpoint ---------------------------------------------------------------------------
    def _setup(self) -> None:
        ok = self.data.teacher_ok & ~self.data.held_out
        m = self.data
        if ok.any():
            crops = m.mesh_crop[ok]
            from face3d_live.training.augment import crop_matrices, transform_points

            mat = crop_matrices(
                *(torch.from_numpy(x) for x in (crops[:, :2], crops[:, 2], crops[:, 3])),
                torch.zeros(len(crops), dtype=torch.bool),
            )
            mean_verts = transform_points(mat, torch.from_numpy(m.verts[ok])).mean(0).numpy()
        else:
            mean_verts = np.full((NUM_POINTS, 3), INPUT_SIZE / 2, np.float32)
        W68 = self.W68.cpu().numpy()
        mean_points = np.concatenate([mean_verts, W68 @ mean_verts[:NUM_VERTICES]])
        init_model(self.model, mean_points)
        if self.init is not None:
            init_from_trained(self.model, self.init, self.head_blend())
        decay, no_decay = [], []
        for _name, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        fused = self.device.type == "cuda"
        self.opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.cfg.lr,
            betas=(0.9, 0.99),
            fused=fused,
        )
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def head_blend(self) -> np.ndarray:
        return head_blend(self.W68.cpu().numpy(), self.W_iris)

    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "history": self.history,
            "config": json.loads(json.dumps(asdict(self.cfg))),
            "gen": self.gen.get_state(),
        }
        tmp = self.checkpoint_path().with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path())

    def try_resume(self) -> bool:
        path = self.checkpoint_path()
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.total_steps, self.history = state["step"], state["total_steps"], state["history"]
        self.gen.set_state(state["gen"].cpu() if hasattr(state["gen"], "cpu") else state["gen"])
        log.info("resumed from %s at step %d / %d", path, self.step, self.total_steps)
        return True

    # ---- training ---------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        total = max(self.total_steps, 1)
        warm = max(1, int(self.cfg.warmup_frac * total))
        if step < warm:
            return self.cfg.lr * (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return self.cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    def batch(self, idx: torch.Tensor, train: bool = True):
        return make_batch(
            self.cfg.augment,
            self.images[idx],
            self.verts[idx],
            self.points[idx],
            self.mesh_crop[idx],
            self.box_crop[idx],
            self.has_mesh[idx],
            self.tw[idx],
            self.mirror,
            self.point_mirror,
            self.gen,
            train,
        )

    def loss(self, out: torch.Tensor, b) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        points, lm68, logit = split_output(out.float())
        s = 100.0 / INPUT_SIZE
        target, target68 = b.verts[:, :NUM_POINTS], b.verts[:, NUM_POINTS:]
        d = (points - target).abs() * s
        per_v = (d[..., 0] + d[..., 1] + cfg.z_weight * d[..., 2]) * self.region_w
        tw = b.teacher_w
        l_teacher = (per_v.mean(1) * tw).sum() / tw.sum().clamp_min(1.0)
        # 68 points: the head, and the mesh through the learned blend (mostly where the teacher is not trusted)
        ok68 = (~torch.isnan(target68[..., 0]).any(1)).float() * b.positive
        g68 = torch.nan_to_num(target68)
        l_lm68 = (self._point_error(lm68, g68, z=True) * ok68).sum() / ok68.sum().clamp_min(1.0)
        mesh68 = torch.einsum("kv,bvd->bkd", self.W68, points[:, :NUM_VERTICES])
        w_mesh = ok68 * (cfg.mesh68_floor + (1.0 - tw).clamp_min(0.0))
        l_mesh68 = (self._point_error(mesh68, g68, z=False) * w_mesh).sum() / ok68.sum().clamp_min(1.0)
        pts = torch.einsum("kj,bjd->bkd", self.W, points[:, :NUM_VERTICES, :2])
        valid = (~torch.isnan(b.points[..., 0])) & (b.positive[:, None] > 0)
        gt = torch.nan_to_num(b.points)
        dp = torch.sqrt(((pts - gt) ** 2).sum(-1) + 1e-4) * s
        l_manual = (dp * valid).sum() / valid.sum().clamp_min(1)
        l_presence = F.binary_cross_entropy_with_logits(logit, b.positive)
        total = (
            l_teacher
            + cfg.lm68_weight * l_lm68
            + cfg.mesh68_weight * l_mesh68
            + cfg.manual_weight * l_manual
            + cfg.presence_weight * l_presence
        )
        return total, {
            "teacher": l_teacher.detach(),
            "lm68": l_lm68.detach(),
            "mesh68": l_mesh68.detach(),
            "manual": l_manual.detach(),
            "presence": l_presence.detach(),
        }

    def _point_error(self, pred: torch.Tensor, gt: torch.Tensor, z: bool) -> torch.Tensor:
        """(B, K, 3) each → (B,) mean Euclidean x, y error (+ z_weight × |Δz|, z centred per face) in % of
        the crop."""
        e = torch.sqrt(((pred[..., :2] - gt[..., :2]) ** 2).sum(-1) + 1e-4)
        if z:
            pz = pred[..., 2] - pred[..., 2].mean(1, keepdim=True)
            gz = gt[..., 2] - gt[..., 2].mean(1, keepdim=True)
            e = e + self.cfg.z_weight * (pz - gz).abs()
        return e.mean(1) * (100.0 / INPUT_SIZE)

    def next_batch(self) -> Batch:
        """Sample a training batch, set this step's learning rate and switch the model to training."""
        pick = torch.randint(
            0, len(self.train_idx), (self.cfg.batch,), device=self.device, generator=self.gen
        )
        b = self.batch(self.train_idx[pick])
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.model.train()
        return b

    def optimize(self, total: torch.Tensor) -> None:
        """Backward, clipped AdamW step, EMA update, step count."""
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        with torch.no_grad():
            decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
            ema_p = list(self.ema.parameters())
            torch._foreach_lerp_(ema_p, list(self.model.parameters()), 1.0 - decay)
            for eb, mb in zip(self.ema.buffers(), self.model.buffers()):
                eb.copy_(mb)
        self.step += 1

    def train_step(self) -> dict[str, torch.Tensor]:
        b = self.next_batch()
        x = b.images.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model(x)
        total, parts = self.loss(out, b)
        self.optimize(total)
        parts["total"] = total.detach()
        return parts

    def run(self, resume: bool = True, deadline_s: float | None = None, eval_every: int = 0) -> None:
        """Train until total_steps (or wall deadline_s, checkpointing); resumes from the checkpoint."""
        self._setup()
        if not (resume and self.try_resume()):
            self.step = 0
        t_start = time.time()
        last_ckpt = time.time()
        acc: dict[str, float] = {}
        n_acc = 0
        timing_start = None
        while self.total_steps == 0 or self.step < self.total_steps:
            parts = self.train_step()
            for k, v in parts.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            if self.total_steps == 0 and self.step == 20:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                timing_start = time.time()
            if self.total_steps == 0 and self.step == 60:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                per = (time.time() - timing_start) / 40
                self.total_steps = max(100, int(self.cfg.minutes * 60 / per))
                log.info(
                    "%.1f ms/step (%.0f img/s): %d steps for %.1f min",
                    per * 1e3,
                    self.cfg.batch / per,
                    self.total_steps,
                    self.cfg.minutes,
                )
            if self.step % 200 == 0 or self.step == self.total_steps:
                row = {k: float(v) / n_acc for k, v in acc.items()}
                row.update(
                    step=self.step, lr=self.lr_at(self.step), elapsed_s=round(time.time() - t_start, 1)
                )
                self.history.append(row)
                log.info(
                    "step %d/%d %s", self.step, self.total_steps, {k: round(v, 3) for k, v in row.items()}
                )
                acc, n_acc = {}, 0
            if eval_every and self.step % eval_every == 0:
                log.info("eval at %d: %s", self.step, json.dumps(self.evaluate()))
            if time.time() - last_ckpt > self.cfg.checkpoint_every_s:
                self.save_checkpoint()
                last_ckpt = time.time()
            if deadline_s is not None and time.time() - t_start > deadline_s:
                break
        self.save_checkpoint()

    # ---- evaluation (the Reconstructor's still-image protocol, batched on the device) -------------------
    @torch.no_grad()
    def predict(
        self, idx: np.ndarray, crops: np.ndarray, model: torch.nn.Module | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on given crops (N, 4) of samples idx → the 478 + 68 points in canvas px (N, 546, 3),
        presence."""
        from face3d_live.training.augment import crop_matrices, warp

        model = model or self.ema
        model.eval()
        outs, scores = [], []
        for s in range(0, len(idx), 512):
            i = torch.from_numpy(idx[s : s + 512]).to(self.device)
            c = torch.from_numpy(crops[s : s + 512]).to(self.device)
            m = crop_matrices(
                c[:, :2], c[:, 2], c[:, 3], torch.zeros(len(c), dtype=torch.bool, device=self.device)
            )
            x = warp(self.images[i], m).contiguous(memory_format=self.memory_format)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                out = model(x).float()
            v = out[:, :-1].reshape(-1, NUM_POINTS + NUM_LM68, 3) * INPUT_SIZE
            a = m[:, :, :2]
            a_inv = torch.linalg.inv(a)
            xy = torch.einsum("bij,bnj->bni", a_inv, v[..., :2] - m[:, None, :, 2])
            z = v[..., 2] / torch.sqrt(torch.abs(torch.linalg.det(a)))[:, None]
            outs.append(torch.cat([xy, z[..., None]], -1).cpu().numpy())
            scores.append(torch.sigmoid(out[:, -1]).cpu().numpy())
        return np.concatenate(outs), np.concatenate(scores)

    def evaluate(self, model: torch.nn.Module | None = None) -> dict:
        """Held-out AFLW: two passes (box crop, then mesh crop) → NME of the 21 manual points per |yaw| bin,
        and the 68-point NME against the 3D labels per bin, of the head (``lm68``) and of the mesh blend
        (``blend68``)."""
        d = self.data
        idx = np.flatnonzero(d.held_out & ~np.isnan(d.yaw))
        if len(idx) == 0:
            return {}
        v, _ = self.predict(idx, box_crops(d.shape[idx]), model)
        v, _ = self.predict(idx, mesh_crops(v[:, :NUM_VERTICES]), model)
        mesh = v[:, :NUM_VERTICES]
        W = self.W.cpu().numpy()
        yaw = np.abs(d.yaw[idx])
        report = nme_report(point_nme(aflw_points(W, mesh), d.points[idx]), yaw)
        gt = d.lm68[idx]
        has = ~np.isnan(gt[..., 0]).any(1)
        if has.any():
            blend = np.einsum("kv,nvd->nkd", self.W68.cpu().numpy(), mesh)
            for key, pred in (("lm68", v[:, NUM_POINTS:]), ("blend68", blend)):
                rep = nme_report(nme68(pred[has], gt[has]), yaw[has])
                report[key] = {k: rep[k] for k in ("nme_0_30", "nme_30_60", "nme_60_90", "nme_mean")}
        return report


def export_fp16(model: torch.nn.Module, path: Path, metadata: dict | None = None) -> Path:
    """The model as the project's weights file (FP16 safetensors + architecture + sha256, models/weights.py)."""
    from face3d_live.models.r50_face import save_r50

    model = copy.deepcopy(model).float().cpu()
    save_r50(model, path, **{k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)
