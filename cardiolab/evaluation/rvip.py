"""RV insertion points over whole cohorts: the `landmarks` verb, septal drift for `evaluate`, CV and variants.

Orchestration on top of `tasks.landmarks` (the detector), `data.prepare` (the one native <-> cache mapping,
`map_inplane`) and `metrics.landmarks` (pure scores):

- `detect_cohort`: every subject, slice and frame of an ACDC-layout cohort -> both points in native voxel
  (x, y, z) and world (NIfTI affine, RAS+ mm) coordinates with their confidence; null where the detector reports
  nothing (a slice without RV should get null points). With RVIP masks (`read_truth_masks`) it also scores them.
- `cohort_drift`: septal-angle drift between adjacent slices and over frames of a cohort (evaluate --landmarks).
- `cross_validate` / `variant_table`: group-stratified k-fold CV (`landmarks.folds`) of detector variants, ranked
  per metric beside the label-derived "second rater".

JSON of `write_landmarks` (the verb): {"run", "root", "truth", "decoder", "threshold", "profile",
"subjects": [{"id", "slices", "frames", "ed", "points": [{"slice", "frame", "anterior": P, "inferior": P}]}],
"scores": {...} (with --truth)} where P = {"voxel": [x, y, z], "world": [x, y, z], "confidence": c} or
{"voxel": null, "world": null, "confidence": c}; slices and frames are the native ones (frame 0 = the file's).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from cardiolab.core import CardiolabError, write_json
from cardiolab.data.cines import cache_volumes, load_cines
from cardiolab.data.datasets import load_manifest
from cardiolab.data.phantom import read_rvip
from cardiolab.data.prepare import ensure_prepared, map_inplane, prepare_subject
from cardiolab.engine import ensure_run
from cardiolab.io.acdc import read_subject, subject_dirs
from cardiolab.io.layouts import scan_cohort
from cardiolab.io.nifti import load_nifti
from cardiolab.io.validate import raise_if_problems
from cardiolab.metrics import landmarks as metrics
from cardiolab.profiles import DataConfig, Profile, override
from cardiolab.tasks import landmarks as task

log = logging.getLogger(__name__)

TRUTH_SUFFIX = "_rvip"          # RVIP masks: <id>_frameNN_rvip.nii.gz (ACDC naming, 1-based frame), 1 / 2 labels
ANTERIOR_LABEL, INFERIOR_LABEL = 1, 2


# ---- the detector's geometry -----------------------------------------------------------------------------
def run_profile(run_dir: str | os.PathLike, profile: Profile) -> Profile:
    """`profile` with the data geometry (spacing, crop size) the run was trained at, so a detector always sees
    cines as it saw them in training."""
    data = task.load_config(run_dir).get("shaping", {}).get("data")
    if not data:
        return profile
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
    return dataclasses.replace(profile, data=DataConfig(**data))


def _native_geometry(profile: Profile, subject) -> Profile:
    """Every slice and frame of the subject (prepare keeps them all and in order), at the profile's in-plane grid."""
    data = dataclasses.replace(profile.data, slices=subject.image.shape[2], frames=subject.n_frames)
    return dataclasses.replace(profile, data=data)


# ---- truth masks ---------------------------------------------------------------------------------------------
def mask_points(mask: np.ndarray) -> np.ndarray:
    """RVIP masks (X, Y, Z) with 1 = anterior, 2 = inferior -> (Z, 2, 2) voxel (x, y), NaN where a label is
    absent; a point is the centroid of its label's largest connected component on the slice."""
    mask = np.asarray(mask)
    out = np.full((mask.shape[2], 2, 2), np.nan)
    for z in range(mask.shape[2]):
        for j, label in enumerate((ANTERIOR_LABEL, INFERIOR_LABEL)):
            blobs, n = ndimage.label(mask[:, :, z] == label)
            if n:
                largest = 1 + int(np.argmax(ndimage.sum(np.ones_like(blobs), blobs, range(1, n + 1))))
                out[z, j] = ndimage.center_of_mass(blobs == largest)
    return out


def read_truth_masks(truth_dir: str | os.PathLike, sid: str, shape: tuple[int, ...]) -> dict[int, np.ndarray]:
    """{0-based frame: (Z, 2, 2) voxel (x, y)} of a subject's RVIP masks under `truth_dir` (either
    `<dir>/<id>/<id>_frameNN_rvip.nii.gz` or `<dir>/<id>_frameNN_rvip.nii.gz`); bad files raise CardiolabError."""
    truth_dir = Path(truth_dir)
    pattern = re.compile(rf"{re.escape(sid)}_frame(\d+){TRUTH_SUFFIX}\.nii\.gz", re.IGNORECASE)
    out = {}
    for folder in (truth_dir / sid, truth_dir):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if (m := pattern.fullmatch(path.name)) and int(m.group(1)) - 1 not in out:
                vol = load_nifti(path, 3, dtype=None)
                if tuple(vol.data.shape) != tuple(shape):
                    raise CardiolabError(f"{path}: RVIP mask shape {tuple(vol.data.shape)} != image {tuple(shape)}")
                out[int(m.group(1)) - 1] = mask_points(vol.data)
    return out


# ---- one subject ---------------------------------------------------------------------------------------------
def detect_subject(model, subject, profile: Profile) -> dict:
    """The detector on every slice and frame of one Subject.

    Returns {"id", "points": (Z, T, 2, 2) native voxel (x, y) NaN = none, "confidence": (Z, T, 2),
    "cache_points": (Z, T, 2, 2) (row, col) in the prepared grid, "spacing": prepared (row_mm, col_mm),
    "native_spacing": (sx, sy), "affine", "ed", "truth": (Z, T, 2, 2) phantom truth or None}; arrays indexed by
    native slice and native frame.
    """
    geometry = _native_geometry(profile, subject)
    tensors, entry = prepare_subject(subject, geometry)
    src = entry["source"]
    pts, conf = task.predict(model, tensors["image"][None])                     # (Z, T, 2, 2) cache frame order
    T = subject.n_frames
    order = [(subject.ed + k) % T for k in range(T)]                            # cache frame k <- native frame
    native = np.full_like(pts, np.nan)
    confidence = np.zeros_like(conf)
    cache_pts = np.full_like(pts, np.nan)
    for d, z in enumerate(src["slices"]):
        native[z, order] = map_inplane(pts[d], src["grid"], "native")
        confidence[z, order] = conf[d]
        cache_pts[z, order] = pts[d]
    return {"id": subject.id, "points": native, "confidence": confidence, "cache_points": cache_pts,
            "spacing": tuple(entry["spacing"][:2]), "native_spacing": tuple(subject.spacing[:2]),
            "affine": subject.affine, "ed": subject.ed, "shape": tuple(subject.image.shape[:2])}


def _point_json(xy: np.ndarray, z: int, affine: np.ndarray, confidence: float) -> dict:
    if np.isnan(xy).any():
        return {"voxel": None, "world": None, "confidence": round(float(confidence), 4)}
    voxel = np.array([xy[0], xy[1], z, 1.0])
    world = (np.asarray(affine, float) @ voxel)[:3]
    return {"voxel": [round(float(v), 3) for v in voxel[:3]], "world": [round(float(v), 3) for v in world],
            "confidence": round(float(confidence), 4)}


def subject_json(result: dict) -> dict:
    Z, T = result["points"].shape[:2]
    rows = [{"slice": z, "frame": t,
             **{name: _point_json(result["points"][z, t, j], z, result["affine"], result["confidence"][z, t, j])
                for j, name in enumerate(metrics.LANDMARKS)}}
            for z in range(Z) for t in range(T)]
    return {"id": result["id"], "slices": Z, "frames": T, "ed": result["ed"], "points": rows}


# ---- a cohort ------------------------------------------------------------------------------------------------
def load_detector(run_dir: str | os.PathLike, profile: Profile, decoder: str | None = None,
                  threshold: float | None = None):
    """The run's detector (CardiolabError if `run_dir` is not a landmarks run), decode settings from the profile
    unless given."""
    task.model_config(profile)                                                   # checks the section (sigma > 0 ...)
    p = profile.landmarks
    return task.load(run_dir, decoder=decoder or p.decoder, threshold=p.threshold if threshold is None else threshold)


def detect_cohort(run_dir: str | os.PathLike, root: str | os.PathLike, profile: Profile,
                  decoder: str | None = None, threshold: float | None = None) -> list[dict]:
    """`detect_subject` for every subject of an ACDC-layout cohort; the whole folder is checked first, so a
    broken file stops it before any work."""
    model = load_detector(run_dir, profile, decoder, threshold)
    raise_if_problems(scan_cohort(root, "acdc")[1])
    geometry = run_profile(run_dir, profile)
    results = []
    for folder in subject_dirs(root):
        result = detect_subject(model, read_subject(folder), geometry)
        result["truth"] = read_rvip(folder)
        results.append(result)
    if not results:
        raise CardiolabError(f"{root}: no subjects")
    return results


def score_masks(results: Sequence[dict], truth_dir: str | os.PathLike) -> dict:
    """Score detections against RVIP masks (native grid, mm from each subject's native spacing): the summary
    under the strict policy (missed = upper bound, single points count, mm) and the pitfall table."""
    truth, pred, spacing, shape, subject, level = [], [], [], [], [], []
    for r in results:
        masks = read_truth_masks(truth_dir, r["id"], (*r["shape"], r["points"].shape[0]))
        lv = metrics.levels(r["points"].shape[0])
        for frame, pts in masks.items():
            if frame >= r["points"].shape[1]:
                raise CardiolabError(f"{truth_dir}: RVIP mask of {r['id']} frame {frame + 1} beyond its "
                                     f"{r['points'].shape[1]} frames")
            truth.append(pts)
            pred.append(r["points"][:, frame])
            n = len(pts)
            spacing += [r["native_spacing"]] * n
            shape += [r["shape"]] * n
            subject += [r["id"]] * n
            level += lv.tolist()
    if not truth:
        raise CardiolabError(f"{truth_dir}: no RVIP masks (<id>_frameNN{TRUTH_SUFFIX}.nii.gz) for these subjects")
    truth, pred = np.concatenate(truth), np.concatenate(pred)
    spacing, shape = np.asarray(spacing, float), np.asarray(shape, float)
    return {"n_subjects": len(set(subject)), "n_slices": len(truth),
            "summary": metrics.summarize(truth, pred, spacing, shape, subject=subject, level=level),
            "pitfalls": metrics.pitfall_table(truth, pred, spacing, shape)}


def write_landmarks(run_dir: str | os.PathLike, root: str | os.PathLike, out_json: str | os.PathLike,
                    profile: Profile, truth_dir: str | os.PathLike | None = None,
                    decoder: str | None = None, threshold: float | None = None) -> dict:
    """The `landmarks` verb: detect, optionally score against RVIP masks, then write the JSON (only once
    everything succeeded, atomically). Returns the written dict."""
    if truth_dir is not None and not Path(truth_dir).is_dir():
        raise CardiolabError(f"{truth_dir}: --truth is not a folder")
    results = detect_cohort(run_dir, root, profile, decoder, threshold)
    p = profile.landmarks
    out = {"run": str(run_dir), "root": str(root), "profile": profile.name,
           "decoder": decoder or p.decoder, "threshold": p.threshold if threshold is None else threshold,
           "coordinates": "voxel: (x, y, z) of the subject's _4d image; world: its affine (RAS+ mm); "
                          "frame: native index; null: no point found",
           "subjects": [subject_json(r) for r in results]}
    if truth_dir is not None:
        out["scores"] = {"truth": str(truth_dir), **score_masks(results, truth_dir)}
    write_json(out_json, out)
    return out


# ---- septal drift ----------------------------------------------------------------------------------------------
def cohort_drift(model, volumes: Sequence[dict]) -> dict:
    """Septal-angle drift of the detector's points on a cohort's volume records (profile geometry):
    `metrics.landmarks.septal_drift` per subject, then the statistics over subjects."""
    per = [metrics.septal_drift(task.predict(model, v["image"])[0], v["spacing"][:2]) for v in volumes]
    out = {"n": len(per)}
    for axis in ("slices", "frames"):
        vals = np.array([p[axis] for p in per], float)
        ok = vals[~np.isnan(vals)]
        out[axis] = {"mean": float(ok.mean()) if len(ok) else float("nan"),
                     "median": float(np.median(ok)) if len(ok) else float("nan"), "n": int(len(ok))}
    out["found"] = float(np.mean([p["found"] for p in per])) if per else float("nan")
    return out


# ---- cross-validation and variants -------------------------------------------------------------------------------
# name -> (profile overrides that change the weights, decoder); decoder-only variants reuse their base's weights.
VARIANTS = {
    "gaussian / argmax / 2D": ((), "argmax"),
    "gaussian / soft-argmax / 2D": ((), "soft_argmax"),
    "disc / argmax / 2D": (("landmarks.target=disc",), "argmax"),
    "gaussian / argmax / 2D+t": (("landmarks.temporal_context=1",), "argmax"),
}
SECOND_RATER = "labels (second rater)"


def group_folds(ids: Sequence[str], groups: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """k folds of subject ids stratified by group (the seed paper splits by pathology): each group's subjects,
    shuffled with `seed`, are dealt in turn to the fold with the fewest subjects so far."""
    if k < 2 or k > len(ids):
        raise CardiolabError(f"landmarks.folds={k}: need 2 <= folds <= {len(ids)} subjects")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    by_group: dict[str, list[str]] = {}
    for sid, g in sorted(zip(ids, groups)):
        by_group.setdefault(str(g), []).append(sid)
    for g in sorted(by_group):
        for i in rng.permutation(len(by_group[g])):
            min(folds, key=len).append(by_group[g][i])
    return [sorted(f) for f in folds]


def _label_points(vol: dict, frames: Sequence[int]) -> np.ndarray:
    labels = vol["labels"][..., list(frames)].permute(0, 3, 1, 2).numpy()             # (D, F, H, W)
    return metrics.points_from_labels(labels, vol.get("superior", (0.0, 1.0)))


def cross_validate(profile: Profile, variants: dict | None = None, folds: int | None = None,
                   out_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                   steps: int | None = None, seed: int = 0) -> dict:
    """Group-stratified k-fold CV of detector variants on the cache (every subject is scored once, by the
    variant trained on the other folds), plus the label-derived "second rater" on the same slices.

    variants: name -> (overrides, decoder) (default VARIANTS); folds: default profile.landmarks.folds; steps:
    default landmarks.cv_steps (0: landmarks.steps).
    Each (weights, fold) is a run under out_dir/<variant>/fold<k> (default runs/<profile>/landmarks_cv),
    trained only when missing or stale (`tasks.landmarks.shaping` + `engine.ensure_run`).
    Returns {"truth": (N, 2, 2), "preds": {name: (N, 2, 2)}, "spacing": (N, 2), "shape": (2,),
    "subject", "level", "fold": (N,), "folds": [[ids]], "truth_kind"}.
    """
    variants = dict(VARIANTS if variants is None else variants)
    k = profile.landmarks.folds if folds is None else folds
    cache_dir = Path(cache_dir) if cache_dir is not None else ensure_prepared(profile)
    out_dir = Path(out_dir) if out_dir is not None else profile.run(f"{task.NAME}_cv")
    steps = steps if steps is not None else (profile.landmarks.cv_steps or profile.landmarks.steps)
    subjects = load_manifest(cache_dir)["subjects"]
    groups = [s.get("attributes", {}).get("Group", "?") for s in subjects]
    fold_ids = group_folds([s["id"] for s in subjects], groups, k, seed)
    volumes = {v["id"]: v for v in cache_volumes(cache_dir)}

    truth, spacing, subject, level, fold_of = [], [], [], [], []
    preds: dict[str, list] = {name: [] for name in variants}
    preds[SECOND_RATER] = []
    for f, test_ids in enumerate(fold_ids):
        train_ids = [s for g in fold_ids if g is not test_ids for s in g]
        models = {}
        for name, (overrides, decoder) in variants.items():
            key = tuple(overrides)
            if key not in models:
                p = override(profile, list(overrides))
                run = out_dir / (("-".join(o.split(".", 1)[1] for o in overrides) or "base") + f"/fold{f}")
                ensure_run(run, steps, task.shaping(p, seed, steps, train_ids),
                           lambda resume, p=p, run=run: task.train(p, out=run, resume=resume, steps=steps, seed=seed,
                                                                    cache_dir=cache_dir, subjects=train_ids,
                                                                    evaluate_on=None))
                models[key] = run
            model = task.load(models[key], decoder=decoder)
            for sid in test_ids:
                vol = volumes[sid]
                frames = labelled_frames(vol["label_mask"])
                preds[name].append(task.predict(model, vol["image"])[0][:, frames].reshape(-1, 2, 2))
        for sid in test_ids:
            vol = volumes[sid]
            frames = labelled_frames(vol["label_mask"])
            D = vol["image"].shape[1]
            truth.append(task.truth_points(vol, frames).reshape(-1, 2, 2))
            preds[SECOND_RATER].append(_label_points(vol, frames).reshape(-1, 2, 2))
            n = D * len(frames)
            spacing += [vol["spacing"][:2]] * n
            subject += [sid] * n
            level += np.repeat(metrics.levels(D), len(frames)).tolist()
            fold_of += [f] * n
    shape = tuple(next(iter(volumes.values()))["image"].shape[2:4])
    return {"truth": np.concatenate(truth), "preds": {k_: np.concatenate(v) for k_, v in preds.items()},
            "spacing": np.asarray(spacing, float), "shape": shape, "subject": subject, "level": level,
            "fold": np.asarray(fold_of), "folds": fold_ids, "truth_kind": task.truth_kind(list(volumes.values()))}


def labelled_frames(mask) -> list[int]:
    """Indices of the True entries of a (T,) bool tensor / array."""
    return np.flatnonzero(np.asarray(mask)).tolist()


def variant_table(cv: dict, policy: metrics.Policy = metrics.Policy(), threshold: float = 5.0) -> dict:
    """`metrics.landmarks.variant_table` of a `cross_validate` result: every variant and the second rater on the
    same truth, ranked per metric (which variant wins depends on the metric)."""
    return metrics.variant_table(cv["preds"], cv["truth"], cv["spacing"], cv["shape"], policy, threshold)


def cv_summary(cv: dict, name: str, policy: metrics.Policy = metrics.Policy()) -> dict:
    """`metrics.landmarks.summarize` of one variant of a `cross_validate` result (by landmark, level, subject)."""
    return metrics.summarize(cv["truth"], cv["preds"][name], cv["spacing"], cv["shape"], policy,
                             subject=cv["subject"], level=cv["level"])


def drift_table(profile: Profile, run_dir: str | os.PathLike | None = None,
                cohorts: Mapping[str, str | os.PathLike] | None = None, split: str = "holdout") -> dict:
    """Septal drift of the real cache `split` and of each synthetic cohort (default: every cohort already under
    runs/<profile>/samples/, none generated here): {name: `cohort_drift`}; "real" first."""
    model = load_detector(run_dir if run_dir is not None else task.ensure(profile), profile)
    if cohorts is None:
        folder = profile.samples_dir
        cohorts = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and any(p.glob("*/*_4d.nii.gz"))} \
            if folder.is_dir() else {}
    spacing = (profile.data.spacing, profile.data.spacing)
    sets = {"real": load_cines(ensure_prepared(profile), profile, split)}
    sets.update({name: load_cines(path, profile) for name, path in cohorts.items()})
    return {name: cohort_drift(model, [{"image": x[None], "spacing": spacing} for x in c.images])
            for name, c in sets.items()}
