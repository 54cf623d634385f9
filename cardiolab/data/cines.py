"""The one loader of "a cohort folder or a cache split, at profile geometry".

Two sources, one result:
* a prepared cache (a folder with manifest.json) is read as is (its `split`, default: all subjects);
* an ACDC-layout cohort (real, phantom or synthetic) goes through the cache's own `prepare_subject`
  (in-plane resampling, heart-centred crop, profile.data.slices slices, [-1, 1] scaling, ED first),
  so every metric and model sees a synthetic cine exactly as it saw the real ones.

A volume record (what `cache_volumes` and `cohort_volumes` return):
    {"id": str, "image": (1, D, H, W, T) float32 in [-1, 1], "labels": (D, H, W, T) int64,
     "label_mask": (T,) bool, "spacing": (sx, sy, sz) mm, "frame_ms": float, "info": dict,
     "rvip": (D, T, 2, 2) (row, col) NaN = absent, "has_rvip": bool, "superior": (row, col) direction}
cohort records also carry the manifest-style "source" (with the native<->cache "grid") and the NIfTI "affine".
`load_cines` stacks them into a `Cines` batch.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from cardiolab.core import MANIFEST, CardiolabError, is_cache
from cardiolab.data.datasets import CineDataset, load_manifest
from cardiolab.data.phantom import read_rvip
from cardiolab.data.prepare import prepare_subject
from cardiolab.io.layouts import detect_layout, read_cohort
from cardiolab.profiles import Profile


@dataclass
class Cines:
    """A cohort at profile geometry. images: (N, D, H, W, T) in [-1, 1]; labels: (N, D, H, W, T) int64 or None."""
    ids: list[str]
    images: torch.Tensor
    labels: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None       # (N, T) frames whose labels are valid
    info: list[dict] = field(default_factory=list)
    source: dict = field(default_factory=dict)   # {"path", "split", "kind": cache|cohort, "phantom": bool}


def is_phantom(path: str | os.PathLike) -> bool:
    """True when a cohort folder (or the cohort a cache was prepared from) is a cardiolab phantom."""
    path = Path(path)
    if is_cache(path):
        root = load_manifest(path).get("source", {}).get("root")
        return bool(root) and Path(root).is_dir() and is_phantom(root)
    return path.is_dir() and any(path.glob("*/phantom_truth.json"))


def cine_cohorts(folder: str | os.PathLike) -> list[Path]:
    """The sub-folders of `folder` that are ACDC-layout cine cohorts (hold <id>/<id>_4d.nii.gz), sorted: how
    evaluate and the audits find the generators' samples (volume cohorts and nested folders are skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("*/*_4d.nii.gz"))) \
        if folder.is_dir() else []


def load_cines(path: str | os.PathLike, profile: Profile | None = None, split: str | None = None,
               label_free: bool = False) -> Cines:
    """A prepared cache (its `split`, default all) or an ACDC-layout cohort (brought to `profile` geometry).

    label_free=True: the comparison geometry, for wherever two cohorts are compared after preparation (copy audits,
    DCR / NNDR, the MIA distance attack): every cine goes through `prepare_subject(use_labels=False)`, a cache's
    subjects re-prepared from the cohort it was made from, so labels move no crop and choose no slice and a cine
    reads the same with or without label files beside it (`geometry.label_free_view`). No labels come back.
    profile: the geometry a cohort folder is brought to; a cache read as it is needs none.
    """
    path = Path(path)
    if profile is None and (label_free or not is_cache(path)):
        raise CardiolabError(f"{path}: reading a cohort folder (or label-free) needs the profile of its geometry")
    if label_free:
        return _label_free_cines(path, profile, split)
    if is_cache(path):
        ds = CineDataset(path, split=split, mode="volume")
        if len(ds) == 0:
            raise CardiolabError(f"{path / MANIFEST}: no subjects in split {split!r}")
        return Cines(ids=list(ds.ids), images=ds.stack("image")[:, 0], labels=ds.stack("labels"),
                     label_mask=ds.stack("label_mask"), info=[dict(r.get("attributes", {})) for r in ds.records],
                     source={"path": str(path), "split": split or "all", "kind": "cache", "phantom": is_phantom(path)})
    if split is not None:
        raise CardiolabError(f"{path}: a split ({split!r}) needs a prepared cache (a folder with {MANIFEST})")
    vols = cohort_volumes(path, profile)
    mask = torch.stack([v["label_mask"] for v in vols])
    return Cines(ids=[v["id"] for v in vols], images=torch.stack([v["image"][0] for v in vols]),
                 labels=torch.stack([v["labels"] for v in vols]) if mask.any() else None,
                 label_mask=mask, info=[v["info"] for v in vols],
                 source={"path": str(path), "split": None, "kind": "cohort", "phantom": is_phantom(path)})


def _label_free_cines(path: Path, profile: Profile, split: str | None) -> Cines:
    """`load_cines(label_free=True)`: a cohort folder, or the source cohort of a cache's `split`, prepared label-free."""
    kind, root, layout, ids = "cohort", path, "acdc", None
    if is_cache(path):
        manifest = load_manifest(path)
        source = manifest.get("source", {})
        root, layout, kind = Path(source.get("root") or ""), source.get("layout", "acdc"), "cache"
        ids = list(CineDataset(path, split=split, mode="volume").ids)
        if not ids:
            raise CardiolabError(f"{path / MANIFEST}: no subjects in split {split!r}")
        if not source.get("root") or not root.is_dir():
            raise CardiolabError(f"{path / MANIFEST}: its source cohort {str(root) or '(none)'} is not there; "
                                 "a comparison prepares every side label-free from its images")
    elif split is not None:
        raise CardiolabError(f"{path}: a split ({split!r}) needs a prepared cache (a folder with {MANIFEST})")
    elif not path.is_dir():
        raise CardiolabError(f"{path}: no such cohort folder or cache")
    key = (str(path.resolve()), split, repr(profile.data), str(root), layout, _stamp(path), _stamp(root))
    if key in _LABEL_FREE:
        _LABEL_FREE[key] = _LABEL_FREE.pop(key)                # least recently used goes first
        return _LABEL_FREE[key]
    got = {}
    for subject in read_cohort(root, layout):
        if ids is None or subject.id in ids:
            got[subject.id] = (prepare_subject(subject, profile, use_labels=False)[0]["image"], dict(subject.info))
    missing = [i for i in ids or () if i not in got]
    if missing:
        raise CardiolabError(f"{root}: subjects {missing[:5]} of the cache {path} are not in its source cohort")
    order = ids if ids is not None else list(got)
    if not order:
        raise CardiolabError(f"{root}: no subjects")
    cines = Cines(ids=order, images=torch.stack([got[i][0].float() for i in order]), info=[got[i][1] for i in order],
                  source={"path": str(path), "split": split or ("all" if kind == "cache" else None), "kind": kind,
                          "phantom": is_phantom(path), "label_free": True})
    while len(_LABEL_FREE) >= LABEL_FREE_MEMO:
        _LABEL_FREE.pop(next(iter(_LABEL_FREE)))
    _LABEL_FREE[key] = cines
    return cines


# An audit reads the same training, holdout and calibration cohorts again for every cohort it scores (and the
# leave-one-family-out test for every family): the label-free cines of the last few folders are kept, keyed by
# every file's size and time, so a changed folder is prepared again. Callers treat the tensors as read-only.
LABEL_FREE_MEMO = 6
_LABEL_FREE: dict = {}


def _stamp(folder: Path) -> tuple:
    files = sorted(folder.glob("*/*")) + sorted(folder.glob("*.json")) if folder.is_dir() else []
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


def cache_volumes(cache_dir: str | os.PathLike, subjects: str | Sequence[str] | None = None) -> list[dict]:
    """Volume records of the prepared cache (see the module docstring).

    subjects: a split name ('public', 'private', 'holdout'), a list of ids, or None for all subjects.
    """
    ds = CineDataset(cache_dir, split=subjects if isinstance(subjects, str) or subjects is None else list(subjects),
                     mode="volume")
    volumes = []
    for i, record in enumerate(ds.records):
        item = ds[i]
        volumes.append({"id": record["id"], "image": item["image"], "labels": item["labels"],
                        "label_mask": item["label_mask"], "spacing": tuple(record["spacing"]),
                        "frame_ms": float(record.get("frame_ms", 0.0)), "info": dict(record.get("attributes", {})),
                        **_point_fields(ds.subject(i), record)})
    return volumes


def cohort_volumes(root: str | os.PathLike, profile: Profile, all_slices: bool = False,
                   ids: Sequence[str] | None = None) -> list[dict]:
    """Volume records of a cohort folder (real, phantom or synthetic; ACDC or M&Ms layout, `detect_layout`),
    preprocessed exactly as the cache.

    Each subject goes through `cardiolab.data.prepare.prepare_subject` (in-plane resampling, heart-centred crop,
    profile.data.slices slices, percentile intensity scaling, frames resampled with ED first), so the segmenter
    sees synthetic cines as it saw the real ones. Labels: the label series when present, else the ED/ES frames;
    an image-only cohort has an all-False label_mask.
    all_slices: keep every slice and frame of each subject (for volumes: the cache keeps profile.data.slices
    slices, chosen differently with and without labels). ids: only these subjects.
    """
    volumes = []
    for subject in read_cohort(root, detect_layout(root)):
        if ids is not None and subject.id not in ids:
            continue
        geometry = profile
        if all_slices:
            data = dataclasses.replace(profile.data, slices=subject.image.shape[2], frames=subject.n_frames)
            geometry = dataclasses.replace(profile, data=data)
        tensors, entry = prepare_subject(subject, geometry, read_rvip(Path(root) / subject.id))
        volumes.append({"id": subject.id, "image": tensors["image"][None].float(), "labels": tensors["labels"].long(),
                        "label_mask": tensors["label_mask"].bool(), "spacing": tuple(entry["spacing"]),
                        "frame_ms": entry["frame_ms"], "info": dict(subject.info),
                        **_point_fields(tensors, entry), "source": entry["source"], "affine": subject.affine})
    return volumes


def _point_fields(tensors: dict, entry: dict) -> dict:
    """RVIP fields of a volume record: "rvip" (D, T, 2, 2) (row, col) NaN = absent, "has_rvip" (point truth
    exists), "superior" (the naming direction for label-derived points, `prepare.superior_direction`)."""
    out = {"has_rvip": bool(entry.get("rvip", False)), "superior": tuple(entry.get("superior", (0.0, 1.0)))}
    if "rvip" in tensors:
        out["rvip"] = tensors["rvip"].float()
    return out


def cohort_geometry(cache_dir: str | os.PathLike) -> dict:
    """Voxel spacing, frame time and ES of the synthetic cohort: medians over the non-holdout cache subjects.

    ES is the training cohort's median ES frame (frames are resampled so that ED is frame 0), rounded.
    """
    subjects = [s for s in load_manifest(cache_dir)["subjects"] if s["split"] != "holdout"]
    if not subjects:
        raise CardiolabError(f"{Path(cache_dir) / MANIFEST}: no non-holdout subjects")
    spacing = np.median(np.array([s["spacing"] for s in subjects], dtype=float), axis=0)
    return {"spacing": [float(v) for v in spacing], "frame_ms": float(np.median([s["frame_ms"] for s in subjects])),
            "es": int(round(float(np.median([s["es"] for s in subjects]))))}


MOTION_HARMONICS = 2         # the motion map is the amplitude of the first temporal harmonics: the beat lives there,
                             # white noise spreads over all T/2 of them
MOTION_POWER = 1.0           # weight of the motion map above its median: linear, so the centre of a blurred map stays
                             # the centre of the map (power 2 moved a 1 px blurred copy's centre by up to 1.5 px)
ALIGN_ITERATIONS = 3         # re-estimate the centre on the moved cine: what enters / leaves the field of view moves
                             # the estimate, and a fixed point is what a shifted copy and its source both reach


def align_cines(images: torch.Tensor) -> torch.Tensor:
    """Cines (N, D, H, W, T) in [-1, 1] -> each moved to a canonical phase and in-plane position (same shape), so
    what a copy may differ by in time and place is undone before two cines are compared:

    * phase: a Fourier shift along the (periodic) frames that brings the phase of the first temporal harmonic of
      the cine's mean intensity to 0; a circular roll by any number of frames, whole or fractional, cancels
      exactly, and an ED-first cine moves by a fraction of a frame;
    * place: a bilinear shift (background -1 filled in) that brings the centre of mass of the motion map (the
      per-pixel amplitude of the first MOTION_HARMONICS temporal harmonics above its median: what beats, not
      noise or a padded band) to the middle. Phase-free, so a frame roll leaves it unchanged.
    Both are functions of the cine alone (no labels, no partner), so an exact copy aligns exactly as its source.
    """
    if images.ndim != 5:
        raise CardiolabError(f"align_cines: expected cines (N, D, H, W, T), got shape {tuple(images.shape)}")
    N, D, H, W, T = images.shape
    x = images.float()
    spec = torch.fft.rfft(x, dim=-1)                                                  # (N, D, H, W, T//2+1)
    phase = torch.angle(spec[..., 1].mean(dim=(1, 2, 3))) if T > 2 else torch.zeros(N, dtype=x.dtype)
    k = torch.arange(spec.shape[-1], dtype=x.dtype)
    x = torch.fft.irfft(spec * torch.exp(-1j * phase.view(N, 1, 1, 1, 1) * k), n=T, dim=-1)
    # the motion map of a moved cine is the moved motion map (the -1 fill does not move): iterate on the map alone
    harmonics = spec[..., 1:MOTION_HARMONICS + 1].abs().pow(2).sum(-1)                 # |.| is phase-free
    motion = harmonics.mean(dim=1, keepdim=True).sqrt() * (2.0 / T)                   # (N, 1, H, W), ~ amplitude
    shift = torch.zeros(N, 2, dtype=x.dtype)                                          # (x, y) px, applied as one move
    for _ in range(ALIGN_ITERATIONS):
        shift = shift + _motion_centre(_shift_planes(motion - 1.0, shift)[:, 0] + 1.0)
    planes = _shift_planes(rearrange(x, "n d h w t -> n (d t) h w"), shift)
    return rearrange(planes, "n (d t) h w -> n d h w t", d=D).clamp(-1.0, 1.0).to(images.dtype)


def _motion_centre(motion: torch.Tensor) -> torch.Tensor:
    """Motion maps (N, H, W) -> (N, 2) (x, y) px of their weighted centre from the middle (0 without motion)."""
    N, H, W = motion.shape
    w = (motion - motion.flatten(1).median(dim=1).values.view(N, 1, 1)).clamp(min=0) ** MOTION_POWER
    total = w.sum(dim=(1, 2))
    rows, cols = torch.arange(H, dtype=motion.dtype), torch.arange(W, dtype=motion.dtype)
    cy = (w.sum(2) * rows).sum(1) / total.clamp(min=1e-12) - (H - 1) / 2
    cx = (w.sum(1) * cols).sum(1) / total.clamp(min=1e-12) - (W - 1) / 2
    return torch.where((total > 0)[:, None], torch.stack([cx, cy], 1), 0.0)


def zoom_cines(images: torch.Tensor, zoom: float) -> torch.Tensor:
    """Cines (N, D, H, W, T) in [-1, 1] magnified by `zoom` about the middle of the plane (bilinear, -1 outside the
    field of view): after `align_cines` the middle is the heart's motion centre, so a copy zoomed about any point
    and then aligned is undone by `zoom_cines(aligned, 1 / zoom)` up to interpolation."""
    N, D, H, W, T = images.shape
    planes = rearrange(images.float(), "n d h w t -> n (d t) h w")
    out = _shift_planes(planes, torch.zeros(N, 2), zoom)
    return rearrange(out, "n (d t) h w -> n d h w t", d=D).to(images.dtype)


def _shift_planes(planes: torch.Tensor, shift: torch.Tensor, zoom: float = 1.0) -> torch.Tensor:
    """planes (N, C, H, W) in [-1, 1] sampled at +shift (N, 2) (x, y) px and magnified by `zoom` about the middle,
    bilinear, -1 outside the field of view."""
    N, C, H, W = planes.shape
    theta = torch.zeros(N, 2, 3, dtype=planes.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    theta[:, 0, 2], theta[:, 1, 2] = 2 * shift[:, 0] / W, 2 * shift[:, 1] / H
    grid = F.affine_grid(theta, (N, 1, H, W), align_corners=False)
    return F.grid_sample(planes + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0
