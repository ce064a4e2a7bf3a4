"""Landmark accuracy measures (numpy only: `face3d-live eval` runs without torch)."""

from __future__ import annotations

import warnings

import numpy as np

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def point_nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 21, 2) each → (N,) mean point error / sqrt(w·h) of the annotated points' box; NaN if < 2 points."""
    valid = ~np.isnan(gt[..., 0])
    g = np.where(valid[..., None], gt, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        wh = np.nanmax(g, 1) - np.nanmin(g, 1)
        norm = np.sqrt(wh[:, 0] * wh[:, 1])
        d = np.linalg.norm(pred - np.nan_to_num(gt), axis=-1)
        err = (d * valid).sum(1) / np.maximum(valid.sum(1), 1) / norm
    err[valid.sum(1) < 2] = np.nan
    return err


def nme68(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 68, 2|3) each → (N,) AFLW2000-3D NME: mean 2D point error / sqrt(w·h) of the label's box; NaN where
    the label is missing."""
    g = gt[..., :2]
    wh = g.max(1) - g.min(1)
    norm = np.sqrt(np.maximum(wh[:, 0] * wh[:, 1], 1e-9))
    return np.linalg.norm(pred[..., :2] - g, axis=-1).mean(1) / norm


def nme_report(err: np.ndarray, yaw: np.ndarray) -> dict:
    """NME (%) per |yaw| bin, their mean, failure rate (NME > 10 %, a missing face counts as one)."""
    out: dict = {}
    bins = []
    for lo, hi in YAW_BINS:
        m = (yaw > lo) & (yaw <= hi) if lo > 0 else (yaw >= lo) & (yaw <= hi)
        e = err[m]
        e = e[~np.isnan(e)]
        out[f"nme_{int(lo)}_{int(hi)}"] = (
            round(100 * float(np.mean(np.minimum(e, 1.0))), 3) if len(e) else None
        )
        bins.append(out[f"nme_{int(lo)}_{int(hi)}"] or 0.0)
        out[f"n_{int(lo)}_{int(hi)}"] = int(len(e))
    out["nme_mean"] = round(float(np.mean(bins)), 3)
    e = err[~np.isnan(err)]
    out["nme_all"] = round(100 * float(np.mean(np.minimum(e, 1.0))), 3)
    out["failure_rate"] = round(float(np.mean(e > 0.10)), 4)
    return out
