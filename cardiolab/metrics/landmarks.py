"""RV insertion points (RVIPs): derivation from label maps and metrics that say how they were computed.

Conventions (every function here):
- A point is (row, col) in the pixel index space of a 2D slice: row = axis 0 of the (H, W) array, col = axis 1;
  a missing point is (NaN, NaN).
- A set of N scored slices is an array (N, 2, 2): slice, landmark (0 anterior, 1 inferior), (row, col).
- spacing is (row_mm, col_mm) per slice, (2,) or (N, 2): errors in mm use both axes (anisotropic pixels).

Why explicit policies (Policy): the seed paper (arXiv 2201.10410) showed that simple RVIP metrics mislead:
slices where the detector finds nothing drop out of a mean, localisation errors have no upper bound, and
different metrics crown different winners. So every number here is computed under a named policy, and
`pitfall_table` / `variant_table` show how much the headline moves with the policy and which variant wins
which metric.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from cardiolab.core import CardiolabError

LANDMARKS = ("anterior", "inferior")
LEVELS = ("basal", "mid", "apical")
RV, MYO, LV = 1, 2, 3          # the ACDC label convention (cardiolab.io.cohort.LABELS)
ANGLE_MISSED = 180.0           # worst possible septal-angle error (the paper's bound for a missed slice)


# ---- derivation from label maps --------------------------------------------------------------------------
def from_labels(label_slice: np.ndarray, anterior_direction: Sequence[float] = (-1.0, 0.0)
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """The two RVIPs of one short-axis label slice (RV=1, MYO=2, LV=3), or None where they are undefined.

    Rule (after `get_ip_from_2dmask` of Cardio-AI/cmr-landmark-detection, re-derived without OpenCV):
    1. The myocardium's outer contour: myocardial pixels on the border of the filled heart (MYO | LV, holes
       filled), 4-connected, so the endocardium is not part of it.
    2. Contact: outer-contour pixels with an RV pixel among their 4 neighbours (the septal RV/MYO interface;
       4 rather than 8 neighbours, so a diagonal touch does not stretch the arc by a pixel at each end).
    3. Walking around the LV centre (centroid of the filled heart), the contact pixels form one arc; its two
       ends, the contact pixels on both sides of the largest angular gap between contact pixels, are the RVIPs.
    Naming: the end further along `anterior_direction` (a (row, col) vector from the LV centre, chosen by the
    caller from the image orientation, e.g. the world anterior axis mapped into the slice) is anterior.

    label_slice: (H, W) integer labels. Returns (anterior (2,), inferior (2,)) as float (row, col), or None when
    the slice has no RV, no myocardium, or fewer than two distinct contact pixels.
    """
    labels = np.asarray(label_slice)
    if labels.ndim != 2:
        raise CardiolabError(f"from_labels: label_slice must be (H, W), got shape {labels.shape}")
    direction = np.asarray(anterior_direction, dtype=float)
    if direction.shape != (2,) or not np.linalg.norm(direction) > 0:
        raise CardiolabError(f"from_labels: anterior_direction must be a nonzero (row, col) vector, got {direction}")
    rv, myo = labels == RV, labels == MYO
    if not rv.any() or not myo.any():
        return None
    heart = ndimage.binary_fill_holes(myo | (labels == LV))
    outer = myo & heart & ~ndimage.binary_erosion(heart, structure=ndimage.generate_binary_structure(2, 1))
    contact = outer & ndimage.binary_dilation(rv, structure=ndimage.generate_binary_structure(2, 1))
    pts = np.argwhere(contact).astype(float)                          # (K, 2) row, col
    if len(pts) < 2:
        return None
    centre = np.argwhere(heart).mean(0)
    angle = np.arctan2(pts[:, 0] - centre[0], pts[:, 1] - centre[1])
    order = np.argsort(angle, kind="stable")
    a = angle[order]
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * np.pi]))            # gap after each sorted contact pixel
    g = int(np.argmax(gaps))
    ends = pts[order[g]], pts[order[(g + 1) % len(order)]]
    if np.array_equal(ends[0], ends[1]):
        return None
    first_anterior = (ends[0] - centre) @ direction >= (ends[1] - centre) @ direction
    return (ends[0], ends[1]) if first_anterior else (ends[1], ends[0])


def points_from_labels(labels: np.ndarray, anterior_direction: Sequence[float] = (-1.0, 0.0)) -> np.ndarray:
    """`from_labels` over every slice of a stack: labels (..., H, W) -> (..., 2, 2), NaN where undefined."""
    labels = np.asarray(labels)
    flat = labels.reshape(-1, *labels.shape[-2:])
    out = np.full((len(flat), 2, 2), np.nan)
    for i, sl in enumerate(flat):
        found = from_labels(sl, anterior_direction)
        if found is not None:
            out[i] = np.stack(found)
    return out.reshape(*labels.shape[:-2], 2, 2)


def levels(n_slices: int) -> np.ndarray:
    """Level of each slice of a base -> apex stack: the first, middle and last thirds are basal, mid, apical
    (np.array_split, so with D % 3 != 0 the basal and mid thirds are one slice longer). (D,) str."""
    if n_slices < 1:
        raise CardiolabError(f"levels: n_slices must be >= 1, got {n_slices}")
    parts = np.array_split(np.arange(n_slices), 3)
    out = np.empty(n_slices, dtype=object)
    for name, idx in zip(LEVELS, parts):
        out[idx] = name
    return out.astype(str)


# ---- geometry --------------------------------------------------------------------------------------------
def septal_angle(points: np.ndarray, spacing: Sequence[float] | np.ndarray = (1.0, 1.0)) -> np.ndarray:
    """Angle of the line anterior -> inferior against the image x-axis (the col axis), in mm space.

    points: (..., 2, 2); spacing (2,) or broadcastable to (..., 2). Returns (...) degrees in [0, 360),
    counted from +col towards +row (the paper's atan2(dy, dx) in image coordinates); NaN if a point is missing.
    """
    points, spacing = np.asarray(points, float), np.asarray(spacing, float)
    d = (points[..., 1, :] - points[..., 0, :]) * spacing            # (..., 2) mm
    return np.degrees(np.arctan2(d[..., 0], d[..., 1])) % 360.0


def angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| on the circle, degrees in [0, 180] (359 deg vs 1 deg differ by 2 deg); NaN propagates."""
    d = np.abs(np.asarray(a, float) - np.asarray(b, float)) % 360.0
    return np.minimum(d, 360.0 - d)


def septal_drift(points: np.ndarray, spacing: Sequence[float] | np.ndarray = (1.0, 1.0)) -> dict:
    """How much the septal angle wanders through a cine: points (D, T, 2, 2) (slice base -> apex, frame).

    Returns {"slices": mean angle difference between adjacent slices of one frame, "frames": mean angle
    difference between consecutive frames of one slice (the last frame wraps to the first: one beat),
    "found": fraction of (slice, frame) with both points}; degrees, NaN where no pair has both points.
    A real heart's septum turns slowly from base to apex and barely over the beat; a generator whose
    anatomy is inconsistent between slices or frames shows larger drift than the real cines.
    """
    angle = septal_angle(np.asarray(points, float), spacing)                # (D, T)
    if angle.ndim != 2:
        raise CardiolabError(f"septal_drift: points must be (D, T, 2, 2), got {np.shape(points)}")
    between_slices = angle_difference(angle[1:], angle[:-1])
    over_frames = angle_difference(np.roll(angle, -1, axis=1), angle) if angle.shape[1] > 1 else np.full(1, np.nan)

    def mean(x):
        x = x[~np.isnan(x)]
        return float(x.mean()) if len(x) else float("nan")
    return {"slices": mean(between_slices), "frames": mean(over_frames), "found": float((~np.isnan(angle)).mean())}


# ---- policies --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """How a number was computed; every metric takes one, and reports carry `name`.

    missed: "upper_bound" scores a truth point without a prediction as its distance to the farthest image
            corner (angle: 180 deg), so misses cannot improve a mean; "exclude" drops it (the flattering way).
    single: "count" keeps a prediction that found only one of the two points; "drop" treats such a slice as
            predicting nothing (the paper's both-points-only evaluation).
    units:  "mm" (spacing per axis) or "px" (pixel distance, ignores anisotropy).
    """
    missed: str = "upper_bound"
    single: str = "count"
    units: str = "mm"

    def __post_init__(self):
        for field, value, allowed in (("missed", self.missed, ("upper_bound", "exclude")),
                                      ("single", self.single, ("count", "drop")),
                                      ("units", self.units, ("mm", "px"))):
            if value not in allowed:
                raise CardiolabError(f"landmark policy: {field}={value!r}; choose one of {', '.join(allowed)}")

    @property
    def name(self) -> str:
        return f"missed={self.missed},single={self.single},units={self.units}"

    def to_dict(self) -> dict:
        return asdict(self)


POLICIES = tuple(Policy(m, s, u) for m, s, u in itertools.product(("upper_bound", "exclude"), ("count", "drop"),
                                                                   ("mm", "px")))


def _prepare(truth, pred, spacing, shape, policy: Policy):
    """Checked float arrays: truth, pred (N, 2, 2) (pred after the single-point policy), scale (N, 2), shape (N, 2)."""
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    if truth.ndim != 3 or truth.shape[1:] != (2, 2) or pred.shape != truth.shape:
        raise CardiolabError(f"landmark metrics: truth {truth.shape} and pred {pred.shape} must both be (N, 2, 2)")
    n = len(truth)
    scale = np.broadcast_to(np.asarray(spacing, float), (n, 2)) if policy.units == "mm" else np.ones((n, 2))
    if not (scale > 0).all():
        raise CardiolabError(f"landmark metrics: spacing must be > 0, got {np.unique(scale)}")
    shape = np.broadcast_to(np.asarray(shape, float), (n, 2))
    if policy.single == "drop":
        pred = pred.copy()
        pred[np.isnan(pred).any(-1).any(-1)] = np.nan
    return truth, pred, scale, shape


def _present(points: np.ndarray) -> np.ndarray:
    """(N, 2, 2) -> (N, 2) bool: which landmarks of each slice are there."""
    return ~np.isnan(points).any(-1)


def upper_bound(points: np.ndarray, shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Distance from each point to the farthest image corner (pixel centres (0, 0) .. (H-1, W-1)): the largest
    error any in-image prediction can have. points (N, 2, 2); shape (N, 2) (H, W); scale (N, 2) -> (N, 2)."""
    last = shape - 1                                                   # (N, 2) the far corner's index
    dist = []
    for r, c in itertools.product((0, 1), (0, 1)):
        corner = np.stack([last[:, 0] * r, last[:, 1] * c], -1)[:, None]   # (N, 1, 2)
        dist.append(np.linalg.norm((points - corner) * scale[:, None], axis=-1))
    return np.max(dist, axis=0)


# ---- per-slice scores ------------------------------------------------------------------------------------
def slice_errors(truth: np.ndarray, pred: np.ndarray, spacing, shape, policy: Policy = Policy()) -> dict:
    """Per-slice localisation and angle errors.

    truth, pred: (N, 2, 2); spacing: (2,) or (N, 2) (row_mm, col_mm); shape: (2,) or (N, 2) image (H, W).
    Returns {"anterior": (N,), "inferior": (N,), "angle": (N,)} in policy units / degrees. NaN marks slices that
    are not scored: no truth point (a detection there is a false positive, see `detection`), or a missed
    point under missed="exclude".
    """
    truth, pred, scale, shape = _prepare(truth, pred, spacing, shape, policy)
    t_in, p_in = _present(truth), _present(pred)
    dist = np.linalg.norm((pred - truth) * scale[:, None], axis=-1)        # (N, 2); NaN where either absent
    missed = t_in & ~p_in
    if policy.missed == "upper_bound":
        dist = np.where(missed, upper_bound(truth, shape, scale), dist)
    dist = np.where(t_in, dist, np.nan)
    both_t, both_p = t_in.all(1), p_in.all(1)
    angle = angle_difference(septal_angle(truth, scale), septal_angle(pred, scale))
    if policy.missed == "upper_bound":
        angle = np.where(both_t & ~both_p, ANGLE_MISSED, angle)
    angle = np.where(both_t, angle, np.nan)
    return {"anterior": dist[:, 0], "inferior": dist[:, 1], "angle": angle}


def detection(truth: np.ndarray, pred: np.ndarray, spacing, threshold: float, policy: Policy = Policy()) -> dict:
    """TPR and PPV per landmark at a distance threshold (policy units), counting every slice.

    Per slice and landmark: truth and prediction within `threshold` -> TP; truth without prediction -> FN;
    prediction on a slice without that truth point (e.g. no RV) -> FP; a prediction farther than `threshold`
    is both a FN (the point was not found) and a FP (something else was reported).
    Returns {"anterior": {"tp", "fp", "fn", "tpr", "ppv"}, "inferior": {...}, "both": {...}} (NaN where a
    ratio has no denominator).
    """
    truth, pred, scale, _ = _prepare(truth, pred, spacing, (1, 1), policy)
    t_in, p_in = _present(truth), _present(pred)
    dist = np.linalg.norm((pred - truth) * scale[:, None], axis=-1)
    close = t_in & p_in & (dist <= threshold)
    far = t_in & p_in & ~(dist <= threshold)
    counts = {"tp": close, "fn": (t_in & ~p_in) | far, "fp": (~t_in & p_in) | far}
    out = {}
    for name, cols in (("anterior", [0]), ("inferior", [1]), ("both", [0, 1])):
        c = {k: int(v[:, cols].sum()) for k, v in counts.items()}
        c["tpr"] = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan")
        c["ppv"] = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else float("nan")
        out[name] = c
    return out


# ---- summaries -------------------------------------------------------------------------------------------
def _stats(x: np.ndarray) -> dict:
    x = np.asarray(x, float)
    x = x[~np.isnan(x)]
    if not len(x):
        return {"n": 0, "mean": float("nan"), "median": float("nan"), "p95": float("nan")}
    return {"n": int(len(x)), "mean": float(x.mean()), "median": float(np.median(x)),
            "p95": float(np.percentile(x, 95))}


def summarize(truth: np.ndarray, pred: np.ndarray, spacing, shape, policy: Policy = Policy(),
              subject: Sequence | None = None, level: Sequence | None = None,
              thresholds: Sequence[float] = (5.0, 10.0)) -> dict:
    """Everything the report needs for one prediction set under one policy.

    truth, pred: (N, 2, 2) over N slices (any mix of subjects and frames); subject, level: (N,) labels of each
    slice (level from `levels`). Returns
      {"policy": {...}, "slices": {lm: stats, ...}, "by_level": {level: {lm: stats}},
       "subjects": {lm: stats of per-subject means}, "detection": {str(threshold): detection(...)}}
    where lm is anterior, inferior, points (both pooled) and angle; stats = n, mean, median, p95.
    Per-subject numbers average each subject's slices first, so subjects with many slices do not dominate.
    """
    err = slice_errors(truth, pred, spacing, shape, policy)
    err["points"] = np.concatenate([err["anterior"], err["inferior"]])
    n = len(err["anterior"])
    out = {"policy": policy.to_dict(), "slices": {k: _stats(v) for k, v in err.items()}}
    if level is not None:
        level = np.asarray(level).astype(str)
        out["by_level"] = {lv: {k: _stats(v[np.tile(level, len(v) // n) == lv]) for k, v in err.items()}
                           for lv in LEVELS if (level == lv).any()}
    if subject is not None:
        subject = np.asarray(subject).astype(str)
        means = {k: [] for k in err}
        for s in dict.fromkeys(subject):
            for k, v in err.items():
                sel = v[np.tile(subject, len(v) // n) == s]
                means[k].append(np.nanmean(sel) if (~np.isnan(sel)).any() else np.nan)
        out["subjects"] = {k: _stats(v) for k, v in means.items()}
    out["detection"] = {str(float(t)): detection(truth, pred, spacing, t, policy) for t in thresholds}
    return out


def pitfall_table(truth: np.ndarray, pred: np.ndarray, spacing, shape, threshold: float = 5.0,
                  policies: Sequence[Policy] = POLICIES) -> list[dict]:
    """The headline numbers under each policy combination: one row per policy with the mean point error
    (both landmarks pooled), its median, the mean angle error, the number of scored points and TPR/PPV at
    `threshold` (in the policy's units). The spread between rows is how much the policy alone can move a result.
    """
    rows = []
    for p in policies:
        err = slice_errors(truth, pred, spacing, shape, p)
        pts = _stats(np.concatenate([err["anterior"], err["inferior"]]))
        det = detection(truth, pred, spacing, threshold, p)["both"]
        rows.append({**p.to_dict(), "mean_error": pts["mean"], "median_error": pts["median"],
                     "n_scored": pts["n"], "angle_error": _stats(err["angle"])["mean"],
                     "tpr": det["tpr"], "ppv": det["ppv"]})
    return rows


# metric -> True when higher is better; the metrics `variant_table` ranks
VARIANT_METRICS = {"median_error": False, "p95_error": False, "mean_error": False, "angle_error": False,
                   "tpr": True, "ppv": True}


def variant_table(variants: Mapping[str, np.ndarray], truth: np.ndarray, spacing, shape,
                  policy: Policy = Policy(), threshold: float = 5.0) -> dict:
    """Score >= 1 prediction sets (e.g. Gaussian vs disc targets, argmax vs soft-argmax, 2D vs 2D+t, the
    label-derived "second rater") on the same truth and rank them per metric.

    variants: name -> pred (N, 2, 2). Returns {"policy": ..., "rows": [{"variant", metric: value, ...}],
    "ranks": {metric: [names best first]}, "winners": {metric: name}}; NaN values rank last.
    """
    rows = []
    for name, pred in variants.items():
        err = slice_errors(truth, pred, spacing, shape, policy)
        pts = _stats(np.concatenate([err["anterior"], err["inferior"]]))
        det = detection(truth, pred, spacing, threshold, policy)["both"]
        rows.append({"variant": name, "median_error": pts["median"], "p95_error": pts["p95"],
                     "mean_error": pts["mean"], "angle_error": _stats(err["angle"])["mean"],
                     "tpr": det["tpr"], "ppv": det["ppv"]})
    ranks = {}
    for metric, higher in VARIANT_METRICS.items():
        key = [(np.isnan(r[metric]), -r[metric] if higher else r[metric]) for r in rows]
        ranks[metric] = [rows[i]["variant"] for i in sorted(range(len(rows)), key=lambda i: key[i])]
    return {"policy": policy.to_dict(), "threshold": threshold, "rows": rows, "ranks": ranks,
            "winners": {m: r[0] for m, r in ranks.items() if r}}
