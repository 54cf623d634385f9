"""Membership-inference scoring: arrays of attack scores in, ROC / AUC / TPR at low FPR out.

Convention: a higher score means "more likely a member" (e.g. minus the denoising loss). `members` is a
boolean array, True for subjects the model trained on. Low-FPR numbers follow Carlini et al. 2022 ("Membership
inference attacks from first principles"): a TPR at FPR f is only reported when there are at least 1 / f
non-members, else the string "n too small" (one false positive already moves the FPR past f).
For a DP run, no attack can beat TPR <= e^eps * FPR + delta at any FPR (Kairouz et al. 2015), so the bound is
drawn beside the empirical curves.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from cardiolab.core import CardiolabError

LOW_FPRS = (0.01, 0.001)     # 1 % and 0.1 %: the operating points a privacy attack is judged at
N_TOO_SMALL = "n too small"


def _check(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, members = np.asarray(scores, dtype=np.float64), np.asarray(members, dtype=bool)
    if scores.shape != members.shape or scores.ndim != 1:
        raise CardiolabError(f"attack scores {scores.shape} and membership {members.shape} must be equal 1-D arrays")
    if members.all() or not members.any():
        raise CardiolabError("membership inference needs both members and non-members")
    if not np.isfinite(scores).all():
        raise CardiolabError("attack scores contain NaN or infinite values")
    return scores, members


def roc_curve(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), each (K,), from (0, 0) to (1, 1); a subject is called a member when score >= threshold.

    Tied scores form one step, so the curve (and the AUC) does not depend on the order of ties.
    """
    scores, members = _check(scores, members)
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], members[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]       # last index of each distinct score
    tp, fp = np.cumsum(m)[last], np.cumsum(~m)[last]
    tpr = np.r_[0.0, tp / m.sum()]
    fpr = np.r_[0.0, fp / (~m).sum()]
    return fpr, tpr, np.r_[np.inf, s[last]]


def auc(scores: np.ndarray, members: np.ndarray) -> float:
    """Area under the ROC curve: P(member score > non-member score), ties counting one half."""
    fpr, tpr, _ = roc_curve(scores, members)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, fprs: Sequence[float] = LOW_FPRS) -> dict[str, float | str]:
    """{"1%": TPR, "0.1%": TPR or "n too small", ...}: best TPR with FPR <= f, only with >= 1 / f non-members."""
    scores, members = _check(scores, members)
    fpr, tpr, _ = roc_curve(scores, members)
    n_non = int((~members).sum())
    out: dict[str, float | str] = {}
    for f in fprs:
        key = f"{100 * f:g}%"
        out[key] = float(tpr[fpr <= f + 1e-12].max()) if n_non >= round(1 / f) else N_TOO_SMALL
    return out


def balanced_accuracy(scores: np.ndarray, members: np.ndarray) -> float:
    """Best (TPR + TNR) / 2 over all thresholds: the attack's accuracy on balanced classes (0.5 = chance)."""
    fpr, tpr, _ = roc_curve(scores, members)
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def bootstrap_interval(scores: np.ndarray, members: np.ndarray, stat: Callable[[np.ndarray, np.ndarray], float] = auc,
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat(scores, members)`, resampling members and non-members separately
    (each replicate keeps both classes). Seeded: the same inputs give the same interval."""
    scores, members = _check(scores, members)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(members), np.flatnonzero(~members)
    values = []
    for _ in range(n_boot):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        values.append(stat(scores[idx], members[idx]))
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def dp_tpr_bound(fpr: np.ndarray | float, epsilon: float, delta: float = 0.0) -> np.ndarray:
    """The highest TPR any attack can reach at `fpr` against an (epsilon, delta)-DP model: min(1, e^eps FPR + delta)."""
    if epsilon < 0 or not 0.0 <= delta <= 1.0:
        raise CardiolabError(f"DP bound: need epsilon >= 0 and 0 <= delta <= 1, got epsilon={epsilon}, delta={delta}")
    return np.minimum(1.0, np.exp(epsilon) * np.asarray(fpr, dtype=np.float64) + delta)


def attack_summary(scores: np.ndarray, members: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """One attack's numbers: AUC (+ bootstrap interval), TPR at 1 % / 0.1 % FPR, balanced accuracy."""
    scores, members = _check(scores, members)
    return {"auc": auc(scores, members), "auc_ci95": list(bootstrap_interval(scores, members, auc, n_boot, seed)),
            "tpr_at_fpr": tpr_at_fpr(scores, members), "balanced_accuracy": balanced_accuracy(scores, members),
            "n_members": int(members.sum()), "n_nonmembers": int((~members).sum())}


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], dp: tuple[float, float] | None = None):
    """Log-log ROC of each attack {name: (fpr, tpr)}, the chance diagonal and, for a DP run, the (eps, delta) bound.

    Log axes show the low-FPR corner where privacy attacks matter; zero rates are drawn at 1e-4.
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    floor = 1e-4
    fig, ax = plt.subplots(figsize=(4, 4), layout="constrained")
    grid = np.logspace(np.log10(floor), 0, 200)
    ax.plot(grid, grid, "k:", lw=1, label="chance")
    for name, (fpr, tpr) in curves.items():
        ax.step(np.maximum(fpr, floor), np.maximum(tpr, floor), where="post", label=name)
    if dp is not None:
        eps, delta = dp
        ax.plot(grid, dp_tpr_bound(grid, eps, delta), "r--", lw=1, label=f"DP bound (eps={eps:g}, delta={delta:g})")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.05), xlabel="false-positive rate",
           ylabel="true-positive rate", title="membership inference ROC")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def v_to_epsilon(v: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """The noise a v-prediction implies: eps = sqrt(abar) v + sqrt(1 - abar) x_t (Salimans & Ho 2022).

    v, x_t: (B, ...) of one shape; alpha_bar: a float or (B,), the scheduler's alphas_cumprod[t], broadcast over
    the sample's remaining axes. Needed by the PIA attack, which compares predicted noises.
    """
    abar = torch.as_tensor(alpha_bar, dtype=v.dtype, device=v.device)
    abar = abar.reshape(abar.shape + (1,) * (v.ndim - abar.ndim)) if abar.ndim else abar
    return abar.sqrt() * v + (1.0 - abar).sqrt() * x_t
