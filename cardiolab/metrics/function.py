"""Cardiac function from label maps: the clinical numbers a cine study is read for.

Volumes are voxel counts x voxel volume (ml), summed over all slices (Simpson's rule on the stack).
Labels are canonical (0 background, 1 RV, 2 MYO, 3 LV). The same code measures real cohorts (ED/ES
from Info.cfg) and synthetic cines labelled by a segmenter (ED/ES = frames of max/min LV volume).

Keys of every result (volumes in ml, EF in %, mass in g):
    EDV, ESV, SV, EF        left ventricle (blood pool, label 3)
    LV_mass                 myocardium (label 2) at ED x 1.05 g/ml
    RV_EDV, RV_ESV, RV_SV, RV_EF   right ventricle (label 1) at the same ED/ES frames
    ed, es                  0-based frames used
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp, wasserstein_distance

from cardiolab.core import CardiolabError
from cardiolab.io.cohort import LABELS, Subject

log = logging.getLogger(__name__)

MYOCARDIUM_DENSITY_G_PER_ML = 1.05   # standard CMR convention for LV mass
METRICS = ("EDV", "ESV", "SV", "EF", "LV_mass", "RV_EDV", "RV_ESV", "RV_SV", "RV_EF")


def volume_curves(label_series, voxel_ml: float) -> dict[str, np.ndarray]:
    """Per-frame volumes in ml of each structure.

    label_series: (..., T) integer labels, e.g. (X, Y, Z, T) or (D, H, W, T); numpy or torch (CPU).
    Returns {"LV": (T,), "MYO": (T,), "RV": (T,)}.
    """
    series = np.asarray(label_series)
    if series.ndim < 2:
        raise CardiolabError(f"label series must be (..., T), got shape {series.shape}")
    flat = series.reshape(-1, series.shape[-1])  # (voxels, T)
    return {name: np.count_nonzero(flat == LABELS[name], axis=0) * float(voxel_ml) for name in ("LV", "MYO", "RV")}


def _ejection(edv: float, esv: float) -> tuple[float, float]:
    sv = edv - esv
    return sv, (100.0 * sv / edv if edv > 0 else math.nan)  # an empty ventricle has no EF


def function_from_labels(label_series, voxel_ml: float, ed: int | None = None, es: int | None = None) -> dict:
    """EDV, ESV, SV, EF, LV mass and RV EDV/ESV/SV/EF of a labelled series.

    label_series: (..., T) canonical labels (X, Y, Z, T) or (D, H, W, T); voxel_ml: one voxel's volume.
    ed, es: 0-based frames; when not given, ED = frame of max LV volume and ES = frame of min.
    """
    curves = volume_curves(label_series, voxel_ml)
    n_frames = len(curves["LV"])
    ed = int(np.argmax(curves["LV"])) if ed is None else int(ed)
    es = int(np.argmin(curves["LV"])) if es is None else int(es)
    for name, frame in (("ed", ed), ("es", es)):
        if not 0 <= frame < n_frames:
            raise CardiolabError(f"{name}={frame} outside 0..{n_frames - 1} of the label series")
    edv, esv = float(curves["LV"][ed]), float(curves["LV"][es])
    rv_edv, rv_esv = float(curves["RV"][ed]), float(curves["RV"][es])
    sv, ef = _ejection(edv, esv)
    rv_sv, rv_ef = _ejection(rv_edv, rv_esv)
    return {"EDV": edv, "ESV": esv, "SV": sv, "EF": ef,
            "LV_mass": float(curves["MYO"][ed]) * MYOCARDIUM_DENSITY_G_PER_ML,
            "RV_EDV": rv_edv, "RV_ESV": rv_esv, "RV_SV": rv_sv, "RV_EF": rv_ef, "ed": ed, "es": es}


def cardiac_function(subject: Subject) -> dict:
    """Function of one subject from its labels at Subject.ed / Subject.es (ACDC: the Info.cfg frames)."""
    frames = [subject.labels_at(subject.ed), subject.labels_at(subject.es)]
    missing = [name for name, lab in zip(("ED", "ES"), frames) if lab is None]
    if missing:
        raise CardiolabError(f"subject {subject.id}: no labels at the {' and '.join(missing)} frame")
    result = function_from_labels(np.stack(frames, axis=-1), subject.voxel_ml, ed=0, es=1)
    return {"id": subject.id, "Group": str(subject.info.get("Group", "UNKNOWN")), **result,
            "ed": subject.ed, "es": subject.es}


def summarize(table: pd.DataFrame) -> dict:
    """{"all": {metric: {mean, std, n}}, "by_group": {group: {metric: {mean, std, n}}}} (NaNs skipped)."""
    def stats(df: pd.DataFrame) -> dict:
        return {m: {"mean": _num(df[m].mean()), "std": _num(df[m].std(ddof=1)), "n": int(df[m].count())}
                for m in METRICS}
    if table.empty:
        return {"all": {}, "by_group": {}}
    return {"all": stats(table), "by_group": {str(g): stats(df) for g, df in table.groupby("Group", sort=True)}}


def cohort_function(subjects: Iterable[Subject]) -> tuple[pd.DataFrame, dict]:
    """Per-subject function table (one row per labelled subject) and its summary (see `summarize`).

    Subjects without ED and ES labels (unlabelled M&Ms, image-only samples) are skipped and listed
    in summary["skipped"].
    """
    rows, skipped = [], []
    for subject in subjects:
        if subject.labels_at(subject.ed) is None or subject.labels_at(subject.es) is None:
            log.warning("subject %s: no ED/ES labels, skipped", subject.id)
            skipped.append(subject.id)
            continue
        rows.append(cardiac_function(subject))
    table = pd.DataFrame(rows, columns=["id", "Group", *METRICS, "ed", "es"])
    return table, {**summarize(table), "skipped": skipped}


def _num(x) -> float | None:
    """JSON-safe number: NaN (e.g. the std of one subject) becomes None."""
    x = float(x)
    return None if math.isnan(x) else x


def compare_distributions(real_df: pd.DataFrame, synth_df: pd.DataFrame, by: str | None = None,
                          metrics: Sequence[str] | None = None, overall: bool = True) -> pd.DataFrame:
    """Wasserstein-1 and KS statistic between real and synthetic distributions of each metric.

    by: a column to compare within (e.g. 'Group' or 'structure'); rows for 'all' come first (unless
    overall=False: pooling structures means nothing for shapes), then each value present on both sides.
    metrics: columns to compare (default: the function metrics, else every numeric column both tables share).
    NaNs are dropped per metric.
    Columns: group, metric, n_real, n_synth, mean_real, mean_synth, std_real, std_synth, w1, ks, ks_pvalue.
    """
    if metrics is None:
        shared = [c for c in real_df.columns if c in synth_df.columns and c not in ("ed", "es", "slice", "frame")
                  and pd.api.types.is_numeric_dtype(real_df[c]) and pd.api.types.is_numeric_dtype(synth_df[c])]
        metrics = [m for m in METRICS if m in shared] or shared
    missing = [m for m in metrics if m not in real_df.columns or m not in synth_df.columns]
    if missing:
        raise CardiolabError(f"compare_distributions: columns {missing} missing from the real or synthetic table")
    pairs = [("all", real_df, synth_df)] if overall or by is None else []
    if by is not None:
        if by not in real_df.columns or by not in synth_df.columns:
            raise CardiolabError(f"compare_distributions: no column {by!r} to group by")
        both = sorted(set(real_df[by].dropna()) & set(synth_df[by].dropna()), key=str)
        pairs += [(g, real_df[real_df[by] == g], synth_df[synth_df[by] == g]) for g in both]
    rows = []
    for group, r, s in pairs:
        for m in metrics:
            a = pd.to_numeric(r[m], errors="coerce").dropna().to_numpy(float)
            b = pd.to_numeric(s[m], errors="coerce").dropna().to_numpy(float)
            row = {"group": group, "metric": m, "n_real": len(a), "n_synth": len(b),
                   "mean_real": _stat(a, np.mean), "mean_synth": _stat(b, np.mean),
                   "std_real": _stat(a, np.std), "std_synth": _stat(b, np.std),
                   "w1": float("nan"), "ks": float("nan"), "ks_pvalue": float("nan")}
            if len(a) and len(b):
                ks = ks_2samp(a, b)
                row.update(w1=float(wasserstein_distance(a, b)), ks=float(ks.statistic), ks_pvalue=float(ks.pvalue))
            rows.append(row)
    return pd.DataFrame(rows)


def _stat(x: np.ndarray, fn) -> float:
    return float(fn(x)) if len(x) else float("nan")
