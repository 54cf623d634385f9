"""Cardiac function and mask shapes of synthetic cines, compared with real ones.

Synthetic cines (CardioDiT samples) are images only, so the segmenter trained on real labels
(`cardiolab.tasks.segmenter`) labels every frame of every slice; `function_from_labels` then gives EDV, ESV,
SV, EF, LV mass and RV volumes with ED = frame of max LV volume and ES = min. Real cohorts go through the
same segmenter (source="segment", so both sides share its bias) or use their own labels (source="labels").
Distributions are compared with the Wasserstein-1 distance (in the metric's unit) and the two-sample KS
statistic, overall and per group (e.g. the conditioning pathology).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from cardiolab.core import CardiolabError, write_csv, write_json
from cardiolab.data.datasets import load_manifest
from cardiolab.data.phantom import ensure_phantom
from cardiolab.data.prepare import ensure_prepared
from cardiolab.io.acdc import read_acdc
from cardiolab.metrics.function import METRICS, cardiac_function, compare_distributions, function_from_labels
from cardiolab.metrics.shape import STATS, cohort_shape_stats
from cardiolab.profiles import Profile
from cardiolab.data.cines import cohort_volumes
from cardiolab.tasks.segmenter import ensure_model, segment

log = logging.getLogger(__name__)


def segment_cohort(cohort_root: str | os.PathLike, seg_model, profile: Profile,
                   ids: Sequence[str] | None = None) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield (volume record, labels (D, H, W, T) int64) for every subject, all slices and frames segmented.

    Volumes are preprocessed like the cache but keep every slice and frame (`cohort_volumes(all_slices=True)`).
    """
    for vol in cohort_volumes(cohort_root, profile, all_slices=True, ids=ids):
        yield vol, segment(seg_model, vol["image"][None])[0].numpy()


def labelled_cohort(cohort_root: str | os.PathLike, profile: Profile,
                    ids: Sequence[str] | None = None) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield (volume record, its own label series (D, H, W, T) int64) for cohorts that carry a label series
    (`<id>_4d_gt.nii.gz`, e.g. two-stage samples whose masks made the images); preprocessed as segment_cohort."""
    for vol in cohort_volumes(cohort_root, profile, all_slices=True, ids=ids):
        if not bool(vol["label_mask"].all()):
            raise CardiolabError(f"{Path(cohort_root) / vol['id']}: no label series in every frame "
                                 f"(source='labels' needs {vol['id']}_4d_gt.nii.gz)")
        yield vol, vol["labels"].numpy()


def measure_cohort(cohort_root: str | os.PathLike, seg_model, profile: Profile,
                   ids: Sequence[str] | None = None, phases: bool = True,
                   source: str = "segment") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segment a cohort once (source='segment') or read its label series (source='labels'); return its
    function table and its shape table.

    function: one row per subject, columns id, Group, EDV, ESV, SV, EF, LV_mass, RV_EDV, RV_ESV, RV_SV, RV_EF,
    ed, es (ED/ES = frames of max/min LV volume). shape: `cohort_shape_stats` rows plus Group, for the ED and ES
    frames only (phases=True) or every frame.
    """
    if source not in ("segment", "labels"):
        raise CardiolabError(f"measure_cohort: source {source!r} is not 'segment' or 'labels'")
    if seg_model is None and source == "segment":
        raise CardiolabError("measuring a cohort by segmentation needs a segmenter (tasks.segmenter.ensure_model)")
    rows, shapes = [], []
    volumes = (segment_cohort(cohort_root, seg_model, profile, ids) if source == "segment"
               else labelled_cohort(cohort_root, profile, ids))
    for vol, labels in volumes:
        group = str(vol["info"].get("Group", "UNKNOWN"))
        sx, sy, sz = vol["spacing"]
        fn = function_from_labels(labels, sx * sy * sz / 1000.0)
        rows.append({"id": vol["id"], "Group": group, **fn})
        frames = sorted({fn["ed"], fn["es"]}) if phases else None
        shape = cohort_shape_stats([labels], spacing=(sx, sy), ids=[vol["id"]], frames=frames)
        shapes.append(shape.assign(Group=group))
    if not rows:
        raise CardiolabError(f"{cohort_root}: no subjects to measure")
    shape = pd.concat(shapes, ignore_index=True)
    return pd.DataFrame(rows, columns=["id", "Group", *METRICS, "ed", "es"]), shape


def function_table(cohort_root: str | os.PathLike, seg_model=None, profile: Profile | None = None,
                   source: str = "segment", ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per subject: id, Group, EDV, ESV, SV, EF, LV_mass, RV_EDV, RV_ESV, RV_SV, RV_EF, ed, es.

    source: 'segment' (seg_model labels every frame; ED/ES = max/min LV volume) or 'labels' (the cohort's
    own labels at its Info.cfg ED/ES frames, native geometry; needs no profile). ids: only these subjects.
    """
    if source == "segment":
        return measure_cohort(cohort_root, seg_model, profile, ids)[0]
    if source != "labels":
        raise CardiolabError(f"function_table: source {source!r} is not 'segment' or 'labels'")
    rows = [cardiac_function(s) for s in read_acdc(cohort_root) if (ids is None or s.id in ids)
            and s.labels_at(s.ed) is not None and s.labels_at(s.es) is not None]
    if not rows:
        raise CardiolabError(f"{cohort_root}: no subjects with ED and ES labels")
    return pd.DataFrame(rows, columns=["id", "Group", *METRICS, "ed", "es"])


def shape_table(cohort_root: str | os.PathLike, seg_model, profile: Profile,
                ids: Sequence[str] | None = None, phases: bool = True) -> pd.DataFrame:
    """Shape statistics of a segmented cohort (the second table of `measure_cohort`)."""
    return measure_cohort(cohort_root, seg_model, profile, ids, phases)[1]


def synthetic_function(profile: Profile, synthetic_root: str | os.PathLike,
                       real_root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                       seg_model=None, real_ids: Sequence[str] | None = None, synthetic_source: str = "segment",
                       real_source: str = "segment") -> dict:
    """Function and shape of a synthetic cohort vs the real one, both segmented by the profile's segmenter.

    synthetic_source / real_source: 'segment' (the segmenter labels every frame) or 'labels' (the cohort's own
    label series, e.g. the masks a two-stage generator drew, or a phantom's truth).
    real_root: default the profile's phantom cohort (its cache's holdout split unless real_ids is given).
    Writes <out_dir>/function_{real,synthetic}.csv, shape_{real,synthetic}.csv and synthetic_function.json
    (default out_dir: <run_dir>/eval) and returns the JSON's dict:
    {"function": records of compare_distributions(by='Group'), "shape": records by structure,
     "n_real", "n_synthetic", "by"}.
    """
    sources = {"real": real_source, "synthetic": synthetic_source}
    needs_model = "segment" in sources.values()
    model = seg_model if seg_model is not None or not needs_model else ensure_model(profile)
    if real_root is None:
        real_root = ensure_phantom(profile)
        if real_ids is None:
            real_ids = load_manifest(ensure_prepared(profile))["splits"]["holdout"]
    out_dir = Path(out_dir) if out_dir is not None else profile.eval_dir
    tables = {"real": (real_root, real_ids), "synthetic": (synthetic_root, None)}
    measured = {"real": _real_measure(real_root, model, profile, real_ids, real_source),
                "synthetic": measure_cohort(synthetic_root, model, profile, source=synthetic_source)}
    fn, sh = {k: m[0] for k, m in measured.items()}, {k: m[1] for k, m in measured.items()}
    grouped = "Group" if (fn["synthetic"]["Group"] != "UNKNOWN").any() else None
    result = {"n_real": len(fn["real"]), "n_synthetic": len(fn["synthetic"]), "by": grouped, "sources": sources,
              "real_root": str(real_root), "synthetic_root": str(synthetic_root),
              "function": _records(compare_distributions(fn["real"], fn["synthetic"], by=grouped)),
              "shape": _records(compare_distributions(sh["real"], sh["synthetic"], by="structure",
                                                      metrics=list(STATS), overall=False)),
              "means": {k: {m: _num(df[m].mean()) for m in METRICS} for k, df in fn.items()}}
    for k in tables:
        write_csv(fn[k], out_dir / f"function_{k}.csv")
        write_csv(sh[k], out_dir / f"shape_{k}.csv")
    write_json(out_dir / "synthetic_function.json", result)
    return result


_REAL: dict = {}     # the real side of `synthetic_function`, kept for the process: every cohort of a notebook is
                     # compared with the same holdout through the same segmenter (~5 s of each cohort's ~17 s at tiny)


def _real_measure(root, model, profile: Profile, ids, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`measure_cohort` of the real side, memoized on what determines it: the cohort (its folder and mtime), the
    ids, the source, the profile's data settings and the segmenter's weights (a digest: a retrained segmenter
    measures anew)."""
    weights = None
    if model is not None and source == "segment":
        digest = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            digest.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
        weights = digest.hexdigest()
    root = Path(root)
    key = (str(root.resolve()), root.stat().st_mtime_ns, tuple(ids) if ids is not None else None, source,
           repr(profile.data), weights)
    if key not in _REAL:
        _REAL.clear()                                     # one real side at a time
        _REAL[key] = measure_cohort(root, model, profile, ids=ids, source=source)
    fn, shape = _REAL[key]
    return fn.copy(), shape.copy()


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: _num(v) if isinstance(v, float) else v for k, v in row.items()} for row in df.to_dict("records")]


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x
