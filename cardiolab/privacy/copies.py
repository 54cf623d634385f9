"""Copy detection and nearest-neighbour distances between embeddings: arrays in, numbers out.

Rule (Dar et al. 2024, arXiv 2402.01054, code Cardio-AI/memorization-ldm): embed every scan, measure the
correlation distance 1 - r between embeddings, and call a synthetic scan a copy when its nearest training
scan is closer than tau. tau is calibrated on unseen reference scans (the holdout split, plus fresh phantoms
for phantom data), each compared with the *same* training set the synthetic scans are compared with: a
reference scan's distance to its nearest training scan (its DCR) is what a synthetic scan that copies no one
looks like. tau is the k-th smallest of the n reference DCRs. The share of fresh scans (exchangeable with the
references) that fall below it, the false-positive rate, is then Beta(k, n + 1 - k) distributed over the draw of
the references: k / (n + 1) on average (conformal prediction) but spread around it, so that with n = 59 and
the average rank (k = 3) 43 % of calibrations flag more than 5 %. So k is the largest rank whose FPR stays
<= p % with probability `confidence` (default 0.9; training-conditional conformal, Vovk 2012): its upper bound
`fpr_bound` and its mean `fpr_expected` are recorded. Fewer than log(1 - confidence) / log(1 - p / 100)
references (45 for p = 5, confidence 0.9) cannot give that (k would be 0): then k = 1, `enough` is false and
`fpr_bound` says how much more tau lets through. confidence=None keeps the average rank k = floor(p (n + 1) / 100).
(The paper's rule, the p-th percentile of training -> nearest held-out distances, takes each minimum over the
held-out set, not over the training set a synthetic scan is matched against: with 32 training and 8 held-out
scans at tiny it set tau too high, 12.5 % of fresh phantoms flagged at p = 5.)

Alongside: DCR (distance to closest record) of synthetic -> train against holdout -> train, NNDR
(nearest / second-nearest) and the share of synthetic scans nearer the training set than the holdout set
(about n_train / (n_train + n_holdout) when the generator does not memorize; 50 % for equal sets), with a
one-sided Mann-Whitney U test of "synthetic DCRs are smaller than holdout DCRs".
All distances here are correlation distances. Embeddings are (N, F) arrays, one row per scan.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import beta, mannwhitneyu

from cardiolab.core import CardiolabError

DEFAULT_PERCENTILE = 5.0     # the paper's choice: ~5 % of unseen patients would be (wrongly) flagged
DEFAULT_CONFIDENCE = 0.9     # P(FPR <= percentile) over the draw of the reference scans


def check_percentile(percentile: float, name: str = "--percentile") -> float:
    """`percentile` as a float in (0, 100); CardiolabError naming the parameter otherwise."""
    p = float(percentile)
    if not 0.0 < p < 100.0:
        raise CardiolabError(f"{name}: must lie strictly between 0 and 100, got {percentile:g}")
    return p


def check_confidence(confidence: float | None) -> float | None:
    """`confidence` as a float in (0, 1), or None (the average rank); CardiolabError naming --confidence otherwise."""
    if confidence is not None and not 0.0 < float(confidence) < 1.0:
        raise CardiolabError(f"--confidence: must lie strictly between 0 and 1, got {confidence:g}")
    return None if confidence is None else float(confidence)


def _embeddings(x: np.ndarray, name: str, views: bool = False) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shapes = "(N, F) or (N, V, F) views" if views else "(N, F)"
    if x.ndim not in ((2, 3) if views else (2,)) or x.size == 0:
        raise CardiolabError(f"{name}: expected embeddings {shapes} with N >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise CardiolabError(f"{name}: embeddings contain NaN or infinite values")
    return x


def correlation_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation between every row of a (N, F) and of b (M, F) -> (N, M) in [0, 2].

    Invariant to a per-scan intensity offset and scale, which is why the paper uses it for copies.
    A constant row (zero variance) has no correlation; it gets distance 1 to everything.
    a may hold several views of each scan (N, V, F) (`Embedder.views`): a scan is as near as its nearest view.
    """
    a, b = _embeddings(a, "a", views=True), _embeddings(b, "b")
    if a.shape[-1] != b.shape[1]:
        raise CardiolabError(f"embeddings have {a.shape[-1]} and {b.shape[1]} features; they must match")

    def unit(x):
        x = x - x.mean(axis=-1, keepdims=True)
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

    d = 1.0 - unit(a) @ unit(b).T                                       # (N, M) or (N, V, M)
    return np.clip(d.min(axis=1) if d.ndim == 3 else d, 0.0, 2.0)


def first_view(x: np.ndarray) -> np.ndarray:
    """Embeddings (N, F) of the scans as they are: view 0 of (N, V, F) views, else x."""
    return x[:, 0] if np.ndim(x) == 3 else x


def nearest(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest and second-nearest column of each row of dist (N, M): (idx1, d1, idx2, d2), each (N,).

    With a single column (M = 1) the second neighbour does not exist: idx2 = -1, d2 = inf.
    """
    dist = np.asarray(dist, dtype=np.float64)
    order = np.argsort(dist, axis=1, kind="stable")
    rows = np.arange(dist.shape[0])
    idx1, d1 = order[:, 0], dist[rows, order[:, 0]]
    if dist.shape[1] < 2:
        return idx1, d1, np.full_like(idx1, -1), np.full_like(d1, np.inf)
    return idx1, d1, order[:, 1], dist[rows, order[:, 1]]


def calibrate(train: np.ndarray, reference: np.ndarray, percentile: float = DEFAULT_PERCENTILE,
              confidence: float | None = DEFAULT_CONFIDENCE) -> dict:
    """tau from unseen reference scans: the k-th smallest reference -> nearest-training distance (module docstring).

    train: (N, F) embeddings of the scans the generator saw; reference: (M, F) embeddings (or (M, V, F) views) of
    real scans it did not see (holdout, calibration phantoms). Returns {"threshold", "percentile", "confidence",
    "rank" (k), "n_reference" (M), "fpr_expected" (100 k / (M + 1)), "fpr_bound" (the FPR that tau exceeds with
    probability 1 - confidence; = fpr_expected when confidence is None), both in %, "enough" (fpr_bound <=
    percentile), "dcr_reference"}.
    """
    p, confidence = check_percentile(percentile), check_confidence(confidence)
    d = np.sort(dcr(_embeddings(reference, "reference", views=True), train))
    n = len(d)

    def bound(k: int) -> float:
        return 100.0 * (k / (n + 1) if confidence is None else float(beta.ppf(confidence, k, n + 1 - k)))

    k = int(np.floor(p / 100.0 * (n + 1) + 1e-9))
    while k >= 1 and bound(k) > p + 1e-9:
        k -= 1
    enough = k >= 1
    k = max(k, 1)
    return {"threshold": float(d[k - 1]), "percentile": p, "confidence": confidence, "rank": k, "n_reference": n,
            "fpr_expected": 100.0 * k / (n + 1), "fpr_bound": bound(k), "enough": bool(enough),
            "dcr_reference": d.tolist()}


def min_references(percentile: float, confidence: float | None = DEFAULT_CONFIDENCE) -> int:
    """The fewest reference scans for which tau keeps the false-positive rate at `percentile` % (k >= 1)."""
    p = check_percentile(percentile) / 100.0
    if confidence is None:
        return int(np.ceil(1.0 / p - 1 - 1e-9))
    return int(np.ceil(np.log(1.0 - confidence) / np.log(1.0 - p) - 1e-9))


def detect_copies(synthetic: np.ndarray, train: np.ndarray, threshold: float,
                  synthetic_ids: Sequence[str], train_ids: Sequence[str]) -> dict:
    """Flag synthetic scans whose nearest training scan is closer than `threshold`.

    synthetic: (S, F) or views (S, V, F), train: (N, F) embeddings; ids in the same order.
    Returns {"threshold", "copy_fraction" (% of synthetic flagged), "memorized_fraction" (% of training
    subjects that are the nearest training scan of at least one copy), "n_synthetic", "n_train",
    "per_synthetic": [{"id", "nearest_train_id", "distance", "nndr", "is_copy"}]}.
    """
    if len(synthetic_ids) != len(synthetic) or len(train_ids) != len(train):
        raise CardiolabError(f"ids ({len(synthetic_ids)}, {len(train_ids)}) do not match the embeddings "
                             f"({len(synthetic)}, {len(train)})")
    idx1, d1, _, d2 = nearest(correlation_distance(synthetic, train))
    copy = d1 < threshold
    per = [{"id": str(synthetic_ids[i]), "nearest_train_id": str(train_ids[idx1[i]]), "distance": float(d1[i]),
            "nndr": float(nndr(d1[i], d2[i])), "is_copy": bool(copy[i])} for i in range(len(synthetic_ids))]
    memorized = {int(j) for j in idx1[copy]}
    return {"threshold": float(threshold), "copy_fraction": 100.0 * float(copy.mean()),
            "memorized_fraction": 100.0 * len(memorized) / len(train_ids),
            "n_synthetic": len(synthetic_ids), "n_train": len(train_ids), "per_synthetic": per}


def compare_control(result: dict, control: dict) -> dict:
    """Set an audited cohort's copies beside a control's, both from `detect_copies` at the same tau and training set.

    The control is sampled from a model that never saw these training subjects (e.g. the public model a DP run
    fine-tuned): a training subject it also lands near is a look-alike of what such a model draws, not a sign of
    memorization. Marks each per_synthetic entry with `in_control` (its nearest training subject is flagged by the
    control too) and returns {copy_fraction (the control's), excess_copy_fraction (audited minus control, %),
    shared (training ids flagged by both), n_synthetic}.
    """
    if control["threshold"] != result["threshold"] or control["n_train"] != result["n_train"]:
        raise CardiolabError("the control must be scored at the audited cohort's tau and training set")
    flagged = {p["nearest_train_id"] for p in control["per_synthetic"] if p["is_copy"]}
    for p in result["per_synthetic"]:
        p["in_control"] = bool(p["is_copy"] and p["nearest_train_id"] in flagged)
    mine = {p["nearest_train_id"] for p in result["per_synthetic"] if p["is_copy"]}
    return {"copy_fraction": control["copy_fraction"],
            "excess_copy_fraction": result["copy_fraction"] - control["copy_fraction"],
            "shared": sorted(mine & flagged), "n_synthetic": control["n_synthetic"]}


def nndr(d1: np.ndarray | float, d2: np.ndarray | float) -> np.ndarray:
    """Nearest / second-nearest distance ratio in [0, 1]: near 0 means one record stands out (a copy)."""
    d1, d2 = np.asarray(d1, dtype=np.float64), np.asarray(d2, dtype=np.float64)
    return np.divide(d1, d2, out=np.ones_like(d1 * d2), where=d2 > 0)


def dcr(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance to closest record: each query row's correlation distance to its nearest reference row (Q,)."""
    return correlation_distance(query, reference).min(axis=1)


def distance_summary(synthetic: np.ndarray, train: np.ndarray, holdout: np.ndarray) -> dict:
    """DCR / NNDR of synthetic -> train against holdout -> train, and who is nearer whom.

    synthetic (S, F), train (N, F), holdout (M, F); synthetic and holdout may be views (`correlation_distance`).
    `share_nearer_train` is the % of synthetic scans whose nearest real scan is a training one (expected
    n_train / (n_train + n_holdout) without memorization, stored as `share_expected`). `mannwhitney_p`: one-sided
    U test that synthetic->train DCRs are stochastically smaller than holdout->train DCRs (a small p suggests the
    generator sits closer to its training data).
    """
    d_syn = correlation_distance(synthetic, train)
    _, s1, _, s2 = nearest(d_syn)
    _, h1, _, h2 = nearest(correlation_distance(holdout, train))
    nearer_train = s1 < dcr(synthetic, first_view(holdout))
    test = mannwhitneyu(s1, h1, alternative="less")
    return {"dcr_synthetic_train": _summary(s1), "dcr_holdout_train": _summary(h1),
            "nndr_synthetic_train": _summary(nndr(s1, s2)), "nndr_holdout_train": _summary(nndr(h1, h2)),
            "share_nearer_train": 100.0 * float(nearer_train.mean()),
            "share_expected": 100.0 * len(train) / (len(train) + len(holdout)),
            "mannwhitney_u": float(test.statistic), "mannwhitney_p": float(test.pvalue),
            "dcr_synthetic": s1.tolist(), "dcr_holdout": h1.tolist()}


def planted_scores(per_synthetic: list[dict], planted: dict[str, str | None]) -> dict:
    """Recall and FPR of the copy flags on a planted cohort.

    planted: {synthetic id: training id it copies, or None for a fresh scan} (planted.json).
    recall: % of planted copies flagged; recall_matched: % flagged *and* paired with the right training
    subject; fpr: % of fresh scans flagged. Ids missing from `planted` raise CardiolabError.
    """
    missing = [p["id"] for p in per_synthetic if p["id"] not in planted]
    if missing:
        raise CardiolabError(f"planted.json: no entry for synthetic ids {missing[:5]}")
    copies = [p for p in per_synthetic if planted[p["id"]] is not None]
    fresh = [p for p in per_synthetic if planted[p["id"]] is None]
    return {"n_planted": len(copies), "n_fresh": len(fresh),
            "recall": _percent(sum(p["is_copy"] for p in copies), len(copies)),
            "recall_matched": _percent(sum(p["is_copy"] and p["nearest_train_id"] == planted[p["id"]] for p in copies),
                                  len(copies)),
            "fpr": _percent(sum(p["is_copy"] for p in fresh), len(fresh))}


def _summary(x: np.ndarray) -> dict:
    return {"median": float(np.median(x)), "p5": float(np.percentile(x, 5)), "mean": float(np.mean(x))}


def _percent(k: int, n: int) -> float:
    return 100.0 * k / n if n else float("nan")
