"""Segmentation metrics: Dice and HD95 (mm) per structure (MONAI metrics), and confidence intervals of means.

Pure functions: label arrays in, numbers out. Used by the segmenter's scores, the utility experiment and `segment`.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from scipy import stats

from cardiolab.core import CardiolabError
from cardiolab.io.cohort import LABELS
from cardiolab.metrics.stats import bootstrap

STRUCTURES = ("RV", "MYO", "LV")


def seg_scores(pred: torch.Tensor, truth: torch.Tensor, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict:
    """Dice and HD95 per structure of N label volumes.

    pred, truth: (N, D, H, W) integer labels. spacing: (sd, sh, sw) mm, for HD95 in mm.
    Returns {"dice_RV": (N,), ..., "hd95_LV": (N,)} float arrays. A structure absent from the truth gives NaN;
    one present in the truth but missing from the prediction gets Dice 0 and HD95 = the volume's diagonal
    (the worst possible distance), so failures are not silently skipped.
    """
    pred, truth = torch.as_tensor(pred).long(), torch.as_tensor(truth).long()
    if pred.shape != truth.shape or pred.ndim != 4:
        raise CardiolabError(f"seg_scores: pred {tuple(pred.shape)} and truth {tuple(truth.shape)} "
                             "must be equal (N, D, H, W)")
    p, t = _onehot(pred), _onehot(truth)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p, t).numpy()
    with warnings.catch_warnings():   # empty structures are handled below; MONAI warns about each one
        warnings.filterwarnings("ignore", message=".* is all 0, this may result in nan/inf distance")
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            p, t, spacing=[float(s) for s in spacing]).numpy()
    present = t[:, 1:].flatten(2).any(-1).numpy()
    predicted = p[:, 1:].flatten(2).any(-1).numpy()
    diagonal = float(np.linalg.norm(np.asarray(pred.shape[1:]) * np.asarray(spacing, dtype=float)))
    hd = np.where(present & ~predicted, diagonal, hd)
    dice, hd = np.where(present, dice, np.nan), np.where(present, hd, np.nan)
    out = {}
    for j, name in enumerate(STRUCTURES):
        out[f"dice_{name}"], out[f"hd95_{name}"] = dice[:, j].astype(float), hd[:, j].astype(float)
    return out


def _onehot(labels: torch.Tensor) -> torch.Tensor:
    """(N, D, H, W) labels -> (N, K, D, H, W) float one-hot over the canonical labels."""
    k = len(LABELS)
    return rearrange(F.one_hot(labels.clamp(0, k - 1), k), "n d h w k -> n k d h w").float()


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean; NaNs dropped; a single value gives a zero-width CI."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return (float("nan"),) * 3
    mean = float(v.mean())
    if len(v) == 1 or np.all(v == v[0]):
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap of the mean over `values` (e.g. per test subject)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return (float("nan"),) * 3
    mean = float(v.mean())
    lo, hi = bootstrap(lambda idx: float(v[idx].mean()), [np.arange(len(v))], n_boot, seed, level)
    return mean, min(lo, mean), max(hi, mean)
