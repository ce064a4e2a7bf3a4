"""face3d-r50: ResNet50 (written here: no torchvision, and channel pruning needs the layers in our hands)
with one linear head for every output.

Input: (N, 3, 224, 224) float RGB in [0, 1] (normalisation is inside the model, so every backend and
the ONNX export take the same input). Output (v2): (N, 1639), all coordinates in crop pixels divided by 224
(x, y in [0, 1]; z relative depth, same scale):

    [0, 1434)     478 × 3: the 468 face-mesh vertices, then the 10 iris points (MediaPipe's 478 order)
    [1434, 1638)  68 × 3: iBUG-68 points in the 3D convention (morphable-model vertices: the jaw is the
                  3D jaw line, seen or hidden)
    1638          the face-presence logit

v1 files (468 vertices + presence, 1405 outputs) are refused with a clear error: they have no iris or
68-point head.
"""

from __future__ import annotations

import torch
from torch import nn

from face3d_live.models.layout import INPUT_SIZE, MEAN, OUTPUT_DIM, STD, split_output  # noqa: F401 (re-exported)


def make_stem(width: int) -> nn.Sequential:
    """7×7/2 convolution + BN + ReLU + 3×3/2 max-pool."""
    return nn.Sequential(
        nn.Conv2d(3, width, 7, 2, 3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3×3). Widths are explicit so pruning can shrink them:
    ``mid2`` (the 3×3's output) defaults to ``mid_ch``; ``downsample`` defaults to "shape changes"."""

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        stride: int = 1,
        mid2: int | None = None,
        downsample: bool | None = None,
    ) -> None:
        super().__init__()
        mid2 = mid_ch if mid2 is None else mid2
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid2, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid2)
        self.conv3 = nn.Conv2d(mid2, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if downsample if downsample is not None else (stride != 1 or in_ch != out_ch):
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class FaceR50(nn.Module):
    """ResNet50 backbone + vertex/presence head."""

    def __init__(self, width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.stem = make_stem(width)
        layers = []
        in_ch = width
        for i, n in enumerate(blocks):
            mid = width * 2**i
            out = mid * 4
            stage = [
                Bottleneck(in_ch if j == 0 else out, mid, out, (1 if i == 0 else 2) if j == 0 else 1)
                for j in range(n)
            ]
            layers.append(nn.Sequential(*stage))
            in_ch = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_ch, OUTPUT_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))
