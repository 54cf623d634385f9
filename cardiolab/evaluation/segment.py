"""Segment an ACDC-layout cohort with a trained segmenter and write the labels in the cohort's own geometry.

Every frame of every slice goes through `prepare_subject` at the profile's in-plane spacing and crop (all
slices and frames kept: `cohort_volumes(all_slices=True)`'s geometry), is segmented there, and the labels
are mapped back by undoing prepare's steps in reverse order:

    frames   resample_cycle with frames = T is a roll by ED          -> roll back
    crop     crop_around(centre, image_size) after resampling        -> paste into a zero canvas
    resample resample_inplane to profile.data.spacing                -> nearest resize to the input's X, Y
    flips    canonical_inplane swaps / flips x, y by the affine      -> the inverse index map

The output is a copy of the cohort (images, Info.cfg, affines as read) whose labels are the predictions:
`<id>_4d_gt.nii.gz` plus ED / ES `_frameXX_gt.nii.gz`, so `check` and `function` read it like any cohort.
Where the input has labels, Dice and HD95 (mm) per structure and subject are computed in the input geometry.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from cardiolab.core import CardiolabError, atomic_path, write_json
from cardiolab.data.geometry import canonical_inplane, label_stack
from cardiolab.data.prepare import prepare_subject
from cardiolab.io.cohort import Subject, write_subject
from cardiolab.io.layouts import read_cohort, scan_cohort
from cardiolab.metrics.segmentation import STRUCTURES, seg_scores
from cardiolab.profiles import Profile
from cardiolab.tasks import segmenter as seg
from cardiolab.tasks import task_of_run

log = logging.getLogger(__name__)


def check_inputs(root: str | os.PathLike, out: str | os.PathLike, run: str | os.PathLike | None = None) -> None:
    """Raise a one-line CardiolabError for bad input: a cohort `check` rejects, an --out that exists and is not
    empty, a run folder that is missing or not a segmenter's."""
    root, out = Path(root), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CardiolabError(f"{out}: output folder exists and is not empty (choose a new --out)")
    if not root.is_dir():
        raise CardiolabError(f"{root}: no such cohort folder")
    n, problems = scan_cohort(root, "acdc")
    if problems:
        raise CardiolabError(f"{root}: `check` finds {len(problems)} problem(s), first: {problems[0]} "
                             f"(run `python -m cardiolab check --root {root}`)")
    if n == 0:
        raise CardiolabError(f"{root}: no subjects in the ACDC layout")
    if run is not None:
        name = task_of_run(run)          # raises for a missing run folder
        if name != seg.NAME:
            raise CardiolabError(f"{run}: a {name} run, not a segmenter run")
        if not (Path(run) / "checkpoint.pt").exists():
            raise CardiolabError(f"{run}: no checkpoint.pt (train the segmenter first)")


def segment_subject(model, subject: Subject, profile: Profile) -> np.ndarray:
    """Labels (X, Y, Z, T) uint8 of every frame of `subject`, in its own voxel grid (see the module docstring)."""
    X, Y, Z, T = subject.image.shape
    data = dataclasses.replace(profile.data, slices=Z, frames=T)
    tensors, entry = prepare_subject(subject, dataclasses.replace(profile, data=data))
    pred = seg.segment(model, tensors["image"][None, None])[0]                 # (Z, H, W, T), ED first
    pred = torch.roll(pred, shifts=subject.ed, dims=-1)                       # frame k back to (k + ED) % T

    # the canonical grid's size after resampling, and where the crop sat in it
    index = np.arange(X * Y).reshape(X, Y, 1, 1)
    canon_index, _, affine = canonical_inplane(index, index, subject.affine)
    Xc, Yc = canon_index.shape[:2]
    sx, sy = np.linalg.norm(affine[:3, :3], axis=0)[:2]
    Xr, Yr = (max(1, round(n * s / profile.data.spacing)) for n, s in ((Xc, sx), (Yc, sy)))
    size = profile.data.image_size
    start = [int(np.floor(c - (size - 1) / 2 + 0.5)) for c in entry["source"]["centre"]]
    canvas = torch.zeros((Z, Xr, Yr, T), dtype=torch.uint8)
    x0, y0 = max(0, start[0]), max(0, start[1])
    x1, y1 = min(Xr, start[0] + size), min(Yr, start[1] + size)
    if x1 > x0 and y1 > y0:
        canvas[:, x0:x1, y0:y1] = pred[:, x0 - start[0]:x1 - start[0], y0 - start[1]:y1 - start[1]].to(torch.uint8)

    # back to the canonical grid at the input spacing: one-hot labels resized bilinearly, then argmax (smoother
    # borders than nearest-neighbour labels), then the inverse of the flips / swap
    onehot = F.one_hot(rearrange(canvas.long(), "z x y t -> (z t) x y"), len(STRUCTURES) + 1)
    onehot = rearrange(onehot.float(), "n x y c -> n c x y")
    up = F.interpolate(onehot, size=(Xc, Yc), mode="bilinear", align_corners=False).argmax(1)   # (Z T, Xc, Yc)
    labels = rearrange(up.to(torch.uint8), "(z t) x y -> x y z t", z=Z).numpy()
    out = np.zeros((X * Y, Z, T), np.uint8)
    out[canon_index[..., 0, 0].reshape(-1)] = labels.reshape(Xc * Yc, Z, T)
    return out.reshape(X, Y, Z, T)


def subject_scores(pred: np.ndarray, subject: Subject) -> dict | None:
    """Dice and HD95 (mm) per structure, means over the subject's labelled frames; None without labels.
    pred: (X, Y, Z, T) labels in the subject's geometry."""
    truth, valid = label_stack(subject)
    if not valid.any():
        return None
    frames = np.flatnonzero(valid)
    sx, sy, sz = np.linalg.norm(subject.affine[:3, :3], axis=0)
    to_fzxy = lambda a: torch.from_numpy(np.ascontiguousarray(rearrange(a[..., frames], "x y z f -> f z x y")))
    s = seg_scores(to_fzxy(pred).long(), to_fzxy(truth).long(), spacing=(sz, sx, sy))
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in s.items()}


def segment_cohort(root: str | os.PathLike, out: str | os.PathLike, profile: Profile,
                   run: str | os.PathLike | None = None, json_out: str | os.PathLike | None = None) -> dict:
    """Segment every frame of every subject of the ACDC-layout cohort `root` into the new cohort `out`.

    run: a segmenter run folder (default: the profile's, trained if missing). Writes `out` atomically and,
    when json_out is given, {"root", "out", "run", "n_subjects", "n_labelled", "dice", "hd95", "per_subject"}.
    Returns that summary.
    """
    check_inputs(root, out, run)
    run = Path(run) if run is not None else seg.ensure(profile)
    model = seg.load(run)
    rows, n = [], 0
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for subject in read_cohort(root, "acdc"):
            n += 1
            pred = segment_subject(model, subject, profile)
            scores = subject_scores(pred, subject)
            if scores is not None:
                rows.append({"id": subject.id, **scores})
            write_subject(tmp, dataclasses.replace(subject, labels={}, label_series=pred))
            if scores is not None:
                log.info("segmented %s (Dice %s)", subject.id,
                         ", ".join(f"{n} {scores['dice_' + n]:.3f}" for n in STRUCTURES))
    summary = {"root": str(root), "out": str(out), "run": str(run), "profile": profile.name,
               "n_subjects": n, "n_labelled": len(rows), "per_subject": rows}
    for metric in ("dice", "hd95"):
        vals = {n: float(np.nanmean([r[f"{metric}_{n}"] for r in rows])) if rows else None for n in STRUCTURES}
        vals["mean"] = float(np.nanmean(list(vals.values()))) if rows else None
        summary[metric] = vals
    if json_out is not None:
        write_json(json_out, summary)
    return summary
