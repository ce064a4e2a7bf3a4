"""Neutral-face calibration of ARKit blendshapes.

Everyone's resting face reads a little differently (a slight natural smile, heavy lids, a face model's
bias), so apps capture a few frames of the user's neutral face and subtract them:
``v' = clip((v - n) / (1 - n) * gain, 0, 1)``. Dividing by ``1 - n`` keeps the full range reachable:
a shape resting at n still reaches 1 when the raw value does. Per-shape gains exaggerate or damp a shape.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from face3d_live.expression.arkit import ARKIT_BLENDSHAPES, ARKIT_INDEX

N_SHAPES = len(ARKIT_BLENDSHAPES)
MAX_NEUTRAL = 0.95  # a "resting" value above this leaves no range; capped so 1 - n never reaches 0


class BlendshapeCalibration:
    """``capture`` a resting face, ``apply`` to live values; ``to_dict``/``from_dict`` to save it (JSON)."""

    def __init__(self) -> None:
        self.neutral = np.zeros(N_SHAPES, np.float32)
        self.gains = np.ones(N_SHAPES, np.float32)
        self.captured = False

    def capture(self, samples: np.ndarray) -> np.ndarray:
        """Store the resting face: the per-shape median of ``samples`` (K, 52) or one (52,) frame."""
        s = np.asarray(samples, np.float32)
        if s.ndim == 1:
            s = s[None]
        if s.ndim != 2 or s.shape[1] != N_SHAPES or len(s) == 0:
            raise ValueError(
                f"expected (K, {N_SHAPES}) or ({N_SHAPES},) blendshapes, got {np.shape(samples)}"
            )
        self.neutral = np.clip(np.median(s, 0), 0.0, MAX_NEUTRAL).astype(np.float32)
        self.captured = True
        return self.neutral.copy()

    def set_gain(self, name: str, gain: float) -> None:
        if name not in ARKIT_INDEX:
            raise KeyError(f"unknown ARKit blendshape {name!r}")
        if not np.isfinite(gain) or gain < 0:
            raise ValueError(f"gain must be finite and >= 0, got {gain}")
        self.gains[ARKIT_INDEX[name]] = gain

    def gain(self, name: str) -> float:
        return float(self.gains[ARKIT_INDEX[name]])

    def apply(self, values: np.ndarray) -> np.ndarray:
        """(..., 52) raw blendshapes → calibrated, float32 in [0, 1]."""
        v = np.asarray(values, np.float32)
        if v.shape[-1] != N_SHAPES:
            raise ValueError(f"expected (..., {N_SHAPES}) blendshapes, got {v.shape}")
        n = self.neutral
        return np.clip((v - n) / (1.0 - n) * self.gains, 0.0, 1.0).astype(np.float32, copy=False)

    def reset(self) -> None:
        """Forget the neutral face and the gains."""
        self.neutral[:] = 0.0
        self.gains[:] = 1.0
        self.captured = False

    def to_dict(self) -> dict:
        """JSON-able, keyed by ARKit name (order-independent, readable in a settings file)."""
        return {
            "captured": self.captured,
            "neutral": {n: round(float(v), 6) for n, v in zip(ARKIT_BLENDSHAPES, self.neutral)},
            "gains": {n: round(float(g), 6) for n, g in zip(ARKIT_BLENDSHAPES, self.gains)},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> BlendshapeCalibration:
        """Inverse of ``to_dict``; names it does not know are ignored, missing ones keep the defaults."""
        cal = cls()
        for name, v in dict(data.get("neutral", {})).items():
            if name in ARKIT_INDEX:
                cal.neutral[ARKIT_INDEX[name]] = np.clip(float(v), 0.0, MAX_NEUTRAL)
        for name, g in dict(data.get("gains", {})).items():
            if name in ARKIT_INDEX:
                cal.set_gain(name, float(g))
        cal.captured = bool(data.get("captured", bool(cal.neutral.any())))
        return cal
