"""Privacy-audit statistics (pure): membership-inference scores in, ROC / AUC / TPR at low FPR out.

Convention: a higher score means "more likely a member" (e.g. minus the denoising loss). `members` is a
boolean array, True for subjects the model trained on. Low-FPR numbers follow Carlini et al. 2022 ("Membership
inference attacks from first principles"): a TPR at FPR f is only reported when there are at least 1 / f
non-members, else the string "n too small" (one false positive already moves the FPR past f).
For a DP run, no attack can beat TPR <= e^eps * FPR + delta at any FPR (Kairouz et al. 2015), so the bound is
drawn beside the empirical curves. With ~100 members a point estimate of a rate is a coin toss away from the bound:
`operating_points` gives exact (Clopper-Pearson) intervals on TPR and FPR at the low-FPR operating points, and
`dp_bound_check` says an attack beats the bound only when the interval does (TPR's lower end above e^eps times
FPR's upper end plus delta), with the empirical epsilon lower bound those intervals support (Jagielski et al. 2020).
`one_run_epsilon` gives the one-training-run lower bound from canaries included at random (Steinke et al. 2023).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import beta, binom, norm

from cardiolab.core import CardiolabError
from cardiolab.metrics.stats import bootstrap

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
    return bootstrap(lambda idx: stat(scores[idx], members[idx]), [np.flatnonzero(members), np.flatnonzero(~members)],
                     n_boot, seed, level)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval of a binomial rate k / n (Clopper & Pearson 1934): [0, hi] at k = 0, [lo, 1] at k = n."""
    if n < 1 or not 0 <= k <= n or not 0 < level < 1:
        raise CardiolabError(f"Clopper-Pearson: need 0 <= k <= n, n >= 1 and level in (0, 1); got k={k}, n={n}, "
                             f"level={level}")
    alpha = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - alpha, k + 1, n - k))
    return lo, hi


def operating_points(scores: np.ndarray, members: np.ndarray, fprs: Sequence[float] = LOW_FPRS,
                     level: float = 0.95) -> dict[str, dict | str]:
    """At each target FPR f (only with >= 1 / f non-members, else "n too small"): the threshold of best TPR with
    FPR <= f, as {"tp", "fp", "tpr", "fpr", "tpr_ci", "fpr_ci"}: counts, rates and Clopper-Pearson intervals at
    `level` (each on its own; both hold together with probability >= 2 level - 1)."""
    scores, members = _check(scores, members)
    fpr, tpr, _ = roc_curve(scores, members)
    n_pos, n_neg = int(members.sum()), int((~members).sum())
    out: dict[str, dict | str] = {}
    for f in fprs:
        key = f"{100 * f:g}%"
        if n_neg < round(1 / f):
            out[key] = N_TOO_SMALL
            continue
        ok = np.flatnonzero(fpr <= f + 1e-12)
        i = ok[np.argmax(tpr[ok])]
        tp, fp = int(round(tpr[i] * n_pos)), int(round(fpr[i] * n_neg))
        out[key] = {"tp": tp, "fp": fp, "tpr": float(tpr[i]), "fpr": float(fpr[i]),
                    "tpr_ci": list(clopper_pearson(tp, n_pos, level)), "fpr_ci": list(clopper_pearson(fp, n_neg, level))}
    return out


def dp_bound_check(points: dict[str, dict | str], epsilon: float, delta: float) -> dict:
    """Whether `operating_points` refute (epsilon, delta)-DP with confidence, and the epsilon they support.

    exceeds_dp_bound: some point has TPR_lo > e^eps FPR_hi + delta (the whole interval beyond the bound; a point
    estimate above it alone is not evidence). epsilon_lower_bound: the largest of log((TPR_lo - delta) / FPR_hi) and
    log((1 - FPR_hi - delta) / (1 - TPR_lo)) over the points (Jagielski et al. 2020; 0 when nothing is supported).
    """
    dp_tpr_bound(0.0, epsilon, delta)            # validates epsilon, delta
    exceeds, lower = False, 0.0
    for p in points.values():
        if not isinstance(p, dict):
            continue
        (t_lo, _), (_, f_hi) = p["tpr_ci"], p["fpr_ci"]
        exceeds |= t_lo > float(dp_tpr_bound(f_hi, epsilon, delta)) + 1e-12
        if t_lo > delta and f_hi > 0:
            lower = max(lower, float(np.log((t_lo - delta) / f_hi)))
        if 1 - f_hi > delta and t_lo < 1:
            lower = max(lower, float(np.log((1 - f_hi - delta) / (1 - t_lo))))
    return {"exceeds_dp_bound": bool(exceeds), "epsilon_lower_bound": lower}


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[>= v of r guesses correct] if the training run is (epsilon, delta)-DP, for m canaries each included
    independently with probability 1/2 (Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1) training
    run", Theorem 3.1): P[Bin(r, p) >= v] + 2 m delta max_i P[v - i <= Bin(r, p) < v] / i, p = e^eps / (1 + e^eps)."""
    if not 0 <= v <= r <= m or epsilon < 0 or not 0 <= delta <= 1:
        raise CardiolabError(f"one-run audit: need 0 <= v <= r <= m, epsilon >= 0, delta in [0, 1]; got m={m}, r={r}, "
                             f"v={v}, epsilon={epsilon}, delta={delta}")
    p = 1.0 / (1.0 + np.exp(-epsilon))
    tail = float(binom.sf(v - 1, r, p))
    below = np.cumsum(binom.pmf(v - np.arange(1, v + 1), r, p))     # P[v - i <= Bin < v], i = 1..v
    slack = float(np.max(below / np.arange(1, v + 1))) if v else 0.0
    return min(1.0, tail + 2 * m * delta * slack)


def one_run_epsilon(scores: np.ndarray, included: np.ndarray, k_pos: int, k_neg: int = 0, delta: float = 0.0,
                    confidence: float = 0.95) -> dict:
    """Empirical epsilon lower bound from canaries of one training run (Steinke, Nasr & Jagielski 2023).

    scores: (m,) attack scores of the m canaries (higher: more likely trained on); included: (m,) bool, each drawn
    independently with probability 1/2 before training. The auditor guesses "included" for the k_pos highest scores
    and "excluded" for the k_neg lowest and abstains on the rest; fix k_pos, k_neg before looking at the scores.
    Returns {"epsilon_lower_bound", "guesses", "correct", "m"}: the largest epsilon (to 1e-4) that the observed
    number of correct guesses rejects at `confidence`: no (epsilon, delta)-DP run would give as many correct
    guesses with probability above 1 - confidence."""
    scores, included = np.asarray(scores, dtype=np.float64), np.asarray(included, dtype=bool)
    m = len(scores)
    if included.shape != scores.shape or scores.ndim != 1 or not 0 <= k_pos + k_neg <= m or min(k_pos, k_neg) < 0:
        raise CardiolabError(f"one-run audit: {m} scores, {included.shape} inclusion flags, k_pos={k_pos}, "
                             f"k_neg={k_neg}: need equal 1-D arrays and 0 <= k_pos + k_neg <= m")
    order = np.argsort(-scores, kind="stable")
    correct = int(included[order[:k_pos]].sum()) + int((~included[order[m - k_neg:]]).sum())
    r, level = k_pos + k_neg, 1.0 - confidence
    lo, hi = 0.0, 1.0
    if r == 0 or one_run_p_value(m, r, correct, 0.0, delta) >= level:
        return {"epsilon_lower_bound": 0.0, "guesses": r, "correct": correct, "m": m}
    while one_run_p_value(m, r, correct, hi, delta) < level:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-4:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if one_run_p_value(m, r, correct, mid, delta) < level else (lo, mid)
    return {"epsilon_lower_bound": lo, "guesses": r, "correct": correct, "m": m}


def lira_offline(losses: np.ndarray, reference_losses: np.ndarray) -> np.ndarray:
    """Offline LiRA scores (Carlini et al. 2022, Algorithm 1 with OUT models only): higher = more likely a member.

    losses: (N,) the target's loss per subject; reference_losses: (K, N) the losses of K >= 2 reference models that
    never trained on any of the N subjects. Each subject's OUT distribution is a Gaussian on the log loss (losses are
    positive and their spread grows with their level, as logit confidences are for classifiers), its mean the
    subject's own reference mean, its variance pooled over subjects: with few references a per-subject variance is
    too noisy (the paper's global-variance variant). The score is -log P[OUT loss <= observed]: a member's loss
    falls far into the OUT distribution's lower tail.
    """
    losses, ref = np.asarray(losses, dtype=np.float64), np.asarray(reference_losses, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != losses.shape[0] or losses.ndim != 1 or ref.shape[0] < 2:
        raise CardiolabError(f"LiRA: need losses (N,) and reference losses (K >= 2, N), got {losses.shape} and "
                             f"{ref.shape}")
    if not (np.isfinite(losses).all() and np.isfinite(ref).all()) or (losses <= 0).any() or (ref <= 0).any():
        raise CardiolabError("LiRA: losses must be finite and positive")
    log_ref = np.log(ref)
    mu = log_ref.mean(axis=0)
    sigma = max(float(np.sqrt(((log_ref - mu) ** 2).sum() / (ref.size - ref.shape[1]))), 1e-12)
    return -norm.logcdf((np.log(losses) - mu) / sigma)


def dp_tpr_bound(fpr: np.ndarray | float, epsilon: float, delta: float = 0.0) -> np.ndarray:
    """The highest TPR any attack can reach at `fpr` against an (epsilon, delta)-DP model: min(1, e^eps FPR + delta)."""
    if epsilon < 0 or not 0.0 <= delta <= 1.0:
        raise CardiolabError(f"DP bound: need epsilon >= 0 and 0 <= delta <= 1, got epsilon={epsilon}, delta={delta}")
    return np.minimum(1.0, np.exp(epsilon) * np.asarray(fpr, dtype=np.float64) + delta)


def attack_summary(scores: np.ndarray, members: np.ndarray, n_boot: int = 1000, seed: int = 0,
                   dp: tuple[float, float] | None = None) -> dict:
    """One attack's numbers: AUC (+ bootstrap interval), TPR at 1 % / 0.1 % FPR (+ Clopper-Pearson intervals on TPR
    and FPR: `operating_points`), balanced accuracy; with dp = (epsilon, delta) also `dp_bound_check` of the
    intervals (keys exceeds_dp_bound, epsilon_lower_bound)."""
    scores, members = _check(scores, members)
    points = operating_points(scores, members)
    out = {"auc": auc(scores, members), "auc_ci95": list(bootstrap_interval(scores, members, auc, n_boot, seed)),
           "tpr_at_fpr": tpr_at_fpr(scores, members), "operating_points_ci95": points,
           "balanced_accuracy": balanced_accuracy(scores, members),
           "n_members": int(members.sum()), "n_nonmembers": int((~members).sum())}
    if dp is not None:
        out.update(dp_bound_check(points, *dp))
    return out
