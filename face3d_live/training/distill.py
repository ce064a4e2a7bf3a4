"""Knowledge distillation of a pruned (or fake-quantised) face3d-r50 from the unpruned one.

The teacher is the trained FaceR50; the student a FaceR50Slim from ``prune.py`` (or the QuantFaceR50
of ``qat.py``). Same data, crops and augmentation as the original training (``train.Trainer``,
``augment.make_batch``); the loss per crop, in % of the 224 crop:

- points: L1 to the teacher network's 478 + 68 points (x, y, 0.5·z; landmark-68 vertices, iris and the
  68-point head weighted up), positives only;
- presence: BCE to the teacher's presence probability (soft label), all crops;
- manual points: the original training's AFLW-21 term (weight ``manual_weight``), so the student
  follows the ground truth where the teacher errs.

``pack_data`` writes the train/held-out crops as one small .npz (WebP images, no teacher meshes) for a
training machine whose upload is small; ``load_packed`` reads it back as a ``TrainData``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from face3d_live.errors import SourceError
from face3d_live.models.layout import NUM_LM68, NUM_POINTS, NUM_VERTICES, split_output
from face3d_live.models.r50 import INPUT_SIZE
from face3d_live.training.dataset import TrainData
from face3d_live.training.train import TrainConfig, Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    batch: int = 256
    lr: float = 1e-3
    steps: int = 0  # 0: from `minutes`
    minutes: float = 4.0
    kd_weight: float = 1.0
    presence_weight: float = 0.3
    manual_weight: float = 0.5
    z_weight: float = 0.5
    ema: float = 0.998
    seed: int = 1
    train: TrainConfig = field(default_factory=TrainConfig)

    def trainer_config(self) -> TrainConfig:
        return replace(
            self.train,
            batch=self.batch,
            lr=self.lr,
            steps=self.steps,
            minutes=self.minutes,
            manual_weight=self.manual_weight,
            presence_weight=self.presence_weight,
            z_weight=self.z_weight,
            ema=self.ema,
            warmup_frac=0.02,
            checkpoint_every_s=1e9,  # one short run: no intermediate checkpoints
            seed=self.seed,
        )


class Distiller(Trainer):
    """``Trainer`` with a given student (not re-initialised) and a frozen teacher; ``run()`` as there."""

    def __init__(
        self,
        cfg: DistillConfig,
        data: TrainData,
        W: np.ndarray,
        out_dir: Path,
        student: torch.nn.Module,
        teacher: torch.nn.Module,
        device: str = "cuda",
        autocast: bool = True,
    ) -> None:
        super().__init__(cfg.trainer_config(), data, W, out_dir, device)
        self.dcfg = cfg
        dev = self.device
        # every training-split crop serves: the teacher net labels it (no MediaPipe mesh needed)
        self.train_idx = torch.from_numpy(np.flatnonzero(~data.held_out)).to(dev)
        if len(self.train_idx) == 0:
            raise SourceError("distillation data has no training-split crops")
        self.model = student.to(dev).to(memory_format=torch.channels_last)
        self.teacher = copy.deepcopy(teacher).to(dev).to(memory_format=torch.channels_last).eval()
        self.teacher.requires_grad_(False)
        self.autocast = autocast and self.device.type == "cuda"
        # the 68-point head weighs like the mesh's landmark vertices
        w68 = torch.full((NUM_LM68,), 2.0 / float(self.region_w[:NUM_VERTICES].mean()), device=dev)
        self.kd_region_w = torch.cat([self.region_w, w68])

    def _setup(self) -> None:  # the student keeps its weights; no head/BN re-initialisation
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.cfg.lr,
            betas=(0.9, 0.99),
            fused=self.device.type == "cuda",
        )
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def try_resume(self) -> bool:
        return False

    def kd_loss(
        self, out: torch.Tensor, ref: torch.Tensor, positive: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, ref = out.float(), ref.float()
        s = 100.0  # outputs are coordinates / 224: × 100 → % of the crop
        d = (out[:, :-1] - ref[:, :-1]).abs().reshape(-1, NUM_POINTS + NUM_LM68, 3) * s
        per_v = (d[..., 0] + d[..., 1] + self.cfg.z_weight * d[..., 2]) * self.kd_region_w
        l_verts = (per_v.mean(1) * positive).sum() / positive.sum().clamp_min(1.0)
        l_pres = F.binary_cross_entropy_with_logits(out[:, -1], torch.sigmoid(ref[:, -1]))
        return l_verts, l_pres

    def train_step(self) -> dict[str, torch.Tensor]:
        b = self.next_batch()
        x = b.images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            with torch.no_grad():
                ref = self.teacher(x)
            out = self.model(x)
        l_verts, l_pres = self.kd_loss(out, ref, b.positive)
        # the original objective's manual AFLW-21 term (train.Trainer.loss without the mesh term)
        out_f = out.float()
        points, _, _ = split_output(out_f)
        pts = torch.einsum("kj,bjd->bkd", self.W, points[:, :NUM_VERTICES, :2])
        valid = (~torch.isnan(b.points[..., 0])) & (b.positive[:, None] > 0)
        dp = torch.sqrt(((pts - torch.nan_to_num(b.points)) ** 2).sum(-1) + 1e-4) * (100.0 / INPUT_SIZE)
        l_manual = (dp * valid).sum() / valid.sum().clamp_min(1)
        total = (
            self.dcfg.kd_weight * l_verts
            + self.dcfg.presence_weight * l_pres
            + self.dcfg.manual_weight * l_manual
        )
        self.optimize(total)
        return {
            "kd": l_verts.detach(),
            "presence": l_pres.detach(),
            "manual": l_manual.detach(),
            "total": total.detach(),
        }

    @torch.no_grad()
    def calibration_batches(self, n_batches: int = 8, batch: int = 64):
        """Un-augmented training crops (mesh crop) for INT8 range calibration."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(123)
        for _ in range(n_batches):
            pick = torch.randint(0, len(self.train_idx), (batch,), device=self.device, generator=gen)
            yield self.batch(self.train_idx[pick], train=False).images

    def compare(self) -> dict:
        """Held-out NME of teacher and student (EMA) with the training's own evaluation protocol."""
        t0 = time.time()
        teacher = self.evaluate(self.teacher)
        student = self.evaluate(self.ema)
        return {"teacher": teacher, "student": student, "eval_s": round(time.time() - t0, 1)}


# ---- a small data pack for the training machine ------------------------------------------------------------
PACK_FIELDS = ("points", "yaw", "teacher_ok", "mesh_crop", "box_crop", "held_out", "shape")


def pack_data(
    data: TrainData, out: Path, budget_mb: float = 9.0, held_out: int = 400, quality: int = 80, seed: int = 0
) -> dict:
    """Write a random subset of ``data`` (``held_out`` held-out crops + as many training crops as fit in
    ``budget_mb``) with WebP images; no teacher meshes (the teacher net labels crops on the fly)."""
    import cv2

    rng = np.random.default_rng(seed)
    held = rng.permutation(np.flatnonzero(data.held_out & ~np.isnan(data.yaw)))[:held_out]
    train = rng.permutation(np.flatnonzero(~data.held_out))
    blobs: list[bytes] = []
    chosen: list[int] = []
    total = 0
    params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    for i in np.concatenate([held, train]):
        ok, buf = cv2.imencode(".webp", cv2.cvtColor(data.images[i], cv2.COLOR_RGB2BGR), params)
        if not ok:
            continue
        if total + len(buf) > budget_mb * 1e6 * 0.93:  # leave room for the label arrays
            break
        blobs.append(buf.tobytes())
        chosen.append(int(i))
        total += len(buf)
    idx = np.array(chosen)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    arrays = {f: getattr(data, f)[idx] for f in PACK_FIELDS}
    arrays["points"] = arrays["points"].astype(np.float16)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        blob=np.frombuffer(b"".join(blobs), np.uint8),
        offsets=offsets,
        canvas=data.images.shape[1],
        **arrays,
    )
    info = {
        "images": len(idx),
        "held_out": int(data.held_out[idx].sum()),
        "mb": round(out.stat().st_size / 1e6, 2),
    }
    log.info("packed %s: %s", out, info)
    return info


def load_packed(path: Path) -> TrainData:
    from face3d_live.training.pack import decode_images

    with np.load(path) as z:
        images = decode_images(z, path)
        n = len(images)
        fields = {f: z[f] for f in PACK_FIELDS}
    fields["points"] = fields["points"].astype(np.float32)
    return TrainData(
        images=images,
        verts=np.zeros((n, NUM_POINTS, 3), np.float32),
        lm68=np.full((n, NUM_LM68, 3), np.nan, np.float32),
        names=np.array([f"packed-{i}" for i in range(n)]),
        **fields,
    )
