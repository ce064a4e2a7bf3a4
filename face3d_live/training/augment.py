"""Batched augmentation on the training device (GPU or CPU): crop warp + exact label transform.

Every sample's crop is a similarity (centre, size, in-plane angle) of its source image, like
``CropTransform``; the same matrix moves the labels, so images and labels never disagree. A horizontal
flip is folded into the matrix (x → 223 − x, the pixel-centre convention the teacher uses too) and the
labels are re-indexed with the mesh mirror map (and the AFLW point mirror map).

Crops imitate both inference paths: the tracker's crop (level eye line, box of the mesh × 1.5) and the
still-image first pass (a detector / given box × 1.5, no rotation), then jitter centre, scale and
rotation (±45°). Photometric: brightness, contrast, saturation, gamma, channel gains, grey, blur (down-up
sampling), noise, synthetic occluders. A fraction of crops are presence negatives (shifted or scaled off
the face).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

OUT = 224


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 45.0  # uniform ± for `rotate_p` of the crops, else N(0, 6°)
    rotate_p: float = 0.5
    scale: tuple[float, float] = (0.82, 1.3)  # crop side multiplier, log-uniform
    shift: float = 0.08  # × crop side
    box_p: float = 0.3  # use the still-image box crop (whole source × 1.2-1.6) instead of the mesh crop
    flip_p: float = 0.5
    colour_p: float = 0.8
    grey_p: float = 0.15
    blur_p: float = 0.25
    noise_p: float = 0.2
    occlude_p: float = 0.3
    negative_p: float = 0.08


@dataclass
class Batch:
    """images (B, 3, 224, 224) float [0, 1]; verts (B, 468, 3) crop px; points (B, 21, 2) crop px (NaN =
    missing); positive (B,) 1 = a face crop, 0 = presence negative; plus the per-sample weights."""

    images: torch.Tensor
    verts: torch.Tensor
    points: torch.Tensor
    positive: torch.Tensor
    teacher_w: torch.Tensor


def crop_matrices(
    center: torch.Tensor, size: torch.Tensor, angle: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """(B, 2, 3) source px → crop px, as CropTransform.matrix(), optionally mirrored (x → 223 − x)."""
    c, s = torch.cos(angle), torch.sin(angle)
    k = OUT / size
    rot = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2) * k[:, None, None]
    t = OUT / 2.0 - torch.einsum("bij,bj->bi", rot, center)
    m = torch.cat([rot, t[:, :, None]], dim=2)
    sign = torch.where(flip, -1.0, 1.0)
    m[:, 0] = m[:, 0] * sign[:, None]
    m[:, 0, 2] = m[:, 0, 2] + torch.where(flip, OUT - 1.0, 0.0)
    return m


def warp(images_u8: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """images (B, H, W, 3) uint8, m (B, 2, 3) → (B, 3, 224, 224) float [0, 1]; edge-replicated like cv2."""
    b, h, w, _ = images_u8.shape
    dev = images_u8.device
    a = m[:, :, :2]
    a_inv = torch.linalg.inv(a)
    t_inv = -torch.einsum("bij,bj->bi", a_inv, m[:, :, 2])
    ys, xs = torch.meshgrid(
        torch.arange(OUT, device=dev, dtype=torch.float32),
        torch.arange(OUT, device=dev, dtype=torch.float32),
        indexing="ij",
    )
    pix = torch.stack([xs, ys], -1).reshape(1, -1, 2)
    src = torch.einsum("bij,bpj->bpi", a_inv, pix.expand(b, -1, -1)) + t_inv[:, None, :]
    grid = torch.empty_like(src)
    grid[..., 0] = (2 * src[..., 0] + 1) / w - 1
    grid[..., 1] = (2 * src[..., 1] + 1) / h - 1
    img = images_u8.permute(0, 3, 1, 2).float() * (1.0 / 255.0)
    out = F.grid_sample(
        img, grid.view(b, OUT, OUT, 2), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out


def transform_points(m: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) × (B, N, 2|3) → crop px; z scales with the crop like CropTransform.to_crop."""
    out = pts.clone()
    out[..., :2] = torch.einsum("bij,bnj->bni", m[:, :, :2], pts[..., :2]) + m[:, None, :, 2]
    if pts.shape[-1] == 3:
        scale = torch.sqrt(torch.abs(torch.linalg.det(m[:, :, :2])))
        out[..., 2] = pts[..., 2] * scale[:, None]
    return out


def sample_crops(
    cfg: AugmentConfig,
    mesh_crop: torch.Tensor,
    box_crop: torch.Tensor,
    has_mesh: torch.Tensor,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (centre, size, angle, flip, positive) from base crops (B, 4) = cx, cy, size, angle."""
    b, dev = mesh_crop.shape[0], mesh_crop.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, device=dev, generator=gen)

    use_box = (torch.rand(b, device=dev, generator=gen) < cfg.box_p) | ~has_mesh
    base = torch.where(use_box[:, None], box_crop, mesh_crop)
    size = base[:, 2] * torch.exp(u(math.log(cfg.scale[0]), math.log(cfg.scale[1])))
    size = torch.where(use_box, box_crop[:, 2] * u(0.8, 1.07), size)  # box side already × 1.5
    big = torch.rand(b, device=dev, generator=gen) < cfg.rotate_p
    small = torch.randn(b, device=dev, generator=gen) * math.radians(6.0)
    angle = base[:, 3] + torch.where(big, u(-1, 1) * math.radians(cfg.rotate_deg), small)
    center = base[:, :2] + (torch.rand(b, 2, device=dev, generator=gen) * 2 - 1) * cfg.shift * size[:, None]
    positive = torch.rand(b, device=dev, generator=gen) >= cfg.negative_p
    # negatives: slide the crop off the face, or zoom far in / out
    kind = torch.randint(0, 3, (b,), device=dev, generator=gen)
    theta = u(0, 2 * math.pi)
    off = torch.stack([torch.cos(theta), torch.sin(theta)], -1) * (u(0.75, 1.1) * size)[:, None]
    neg_center = torch.where((kind == 0)[:, None], center + off, center + off * 0.3)
    neg_size = torch.where(kind == 1, size * u(0.25, 0.4), torch.where(kind == 2, size * u(3.0, 5.0), size))
    center = torch.where(positive[:, None], center, neg_center)
    size = torch.where(positive, size, neg_size)
    flip = torch.rand(b, device=dev, generator=gen) < cfg.flip_p
    return center, size, angle, flip, positive


def photometric(cfg: AugmentConfig, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Colour, grey, blur, noise and occluders on (B, 3, H, W) float [0, 1]."""
    b, _, h, w = x.shape
    dev = x.device

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, *shape, device=dev, generator=gen)

    def p(prob: float) -> torch.Tensor:
        return torch.rand(b, device=dev, generator=gen) < prob

    grey = x.mean(1, keepdim=True)
    c = p(cfg.colour_p)[:, None, None, None]
    sat = u(0.3, 1.5, 1, 1, 1)
    y = grey + (x - grey) * sat
    y = y * u(0.85, 1.15, 3, 1, 1)
    mean = y.mean((1, 2, 3), keepdim=True)
    y = (y - mean) * u(0.6, 1.4, 1, 1, 1) + mean * u(0.6, 1.4, 1, 1, 1)
    y = y.clamp(1e-4, 1) ** u(0.7, 1.4, 1, 1, 1)
    x = torch.where(c, y, x).clamp(0, 1)
    g = p(cfg.grey_p)[:, None, None, None]
    x = torch.where(g, x.mean(1, keepdim=True).expand_as(x), x)
    blur = p(cfg.blur_p)
    if bool(blur.any()):
        factor = float(1.5 + 2.5 * torch.rand(1, device=dev, generator=gen).item())
        small = F.interpolate(
            x[blur], scale_factor=1 / factor, mode="bilinear", antialias=True, align_corners=False
        )
        x[blur] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    n = p(cfg.noise_p)[:, None, None, None]
    x = torch.where(n, x + torch.randn(x.shape, device=dev, generator=gen) * u(0, 0.05, 1, 1, 1), x)
    occ = p(cfg.occlude_p)
    ow, oh = u(0.15, 0.5) * w, u(0.15, 0.5) * h
    ox, oy = u(0.1, 0.9) * w - ow / 2, u(0.1, 0.9) * h - oh / 2
    xs = torch.arange(w, device=dev).view(1, 1, w)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    inside = (
        (xs >= ox.view(-1, 1, 1))
        & (xs < (ox + ow).view(-1, 1, 1))
        & (ys >= oy.view(-1, 1, 1))
        & (ys < (oy + oh).view(-1, 1, 1))
    )
    inside = (inside & occ.view(-1, 1, 1))[:, None]
    fill = u(0, 1, 3, 1, 1) + torch.randn(x.shape, device=dev, generator=gen) * u(0, 0.15, 1, 1, 1)
    x = torch.where(inside, fill, x)
    return x.clamp(0, 1)


def make_batch(
    cfg: AugmentConfig,
    images_u8: torch.Tensor,
    verts: torch.Tensor,
    points: torch.Tensor,
    mesh_crop: torch.Tensor,
    box_crop: torch.Tensor,
    has_mesh: torch.Tensor,
    teacher_w: torch.Tensor,
    mirror: torch.Tensor,
    point_mirror: torch.Tensor,
    gen: torch.Generator,
    train: bool = True,
) -> Batch:
    """One augmented batch from gathered samples (all tensors on the training device)."""
    if train:
        center, size, angle, flip, positive = sample_crops(cfg, mesh_crop, box_crop, has_mesh, gen)
    else:
        base = torch.where(has_mesh[:, None], mesh_crop, box_crop)
        center, size, angle = base[:, :2], base[:, 2], base[:, 3]
        flip = torch.zeros_like(has_mesh)
        positive = torch.ones_like(has_mesh)
    m = crop_matrices(center, size, angle, flip)
    imgs = warp(images_u8, m)
    if train:
        imgs = photometric(cfg, imgs, gen)
    v = transform_points(m, verts)
    pt = transform_points(m, points)
    v = torch.where(flip[:, None, None], v[:, mirror], v)
    pt = torch.where(flip[:, None, None], pt[:, point_mirror], pt)
    return Batch(imgs, v, pt, positive.float(), teacher_w * positive.float())
