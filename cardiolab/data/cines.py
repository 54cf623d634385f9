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

from cardiolab.core import CardiolabError
from cardiolab.data.datasets import CineDataset, load_manifest
from cardiolab.data.phantom import read_rvip
from cardiolab.data.prepare import prepare_subject
from cardiolab.io.acdc import read_acdc
from cardiolab.profiles import Profile, get_profile


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
    if (path / "manifest.json").exists():
        root = load_manifest(path).get("source", {}).get("root")
        return bool(root) and Path(root).is_dir() and is_phantom(root)
    return path.is_dir() and any(path.glob("*/phantom_truth.json"))


def cine_cohorts(folder: str | os.PathLike) -> list[Path]:
    """The sub-folders of `folder` that are ACDC-layout cine cohorts (hold <id>/<id>_4d.nii.gz), sorted: how
    evaluate and the audits find the generators' samples (volume cohorts and nested folders are skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("*/*_4d.nii.gz"))) \
        if folder.is_dir() else []


def load_cines(path: str | os.PathLike, profile: Profile | str | None = None, split: str | None = None) -> Cines:
    """A prepared cache (its `split`, default all) or an ACDC-layout cohort (brought to `profile` geometry)."""
    path = Path(path)
    if (path / "manifest.json").exists():
        ds = CineDataset(path, split=split, mode="volume")
        if len(ds) == 0:
            raise CardiolabError(f"{path / 'manifest.json'}: no subjects in split {split!r}")
        return Cines(ids=list(ds.ids), images=ds.stack("image")[:, 0], labels=ds.stack("labels"),
                     label_mask=ds.stack("label_mask"), info=[dict(r.get("attributes", {})) for r in ds.records],
                     source={"path": str(path), "split": split or "all", "kind": "cache", "phantom": is_phantom(path)})
    if split is not None:
        raise CardiolabError(f"{path}: a split ({split!r}) needs a prepared cache (a folder with manifest.json)")
    vols = cohort_volumes(path, profile)
    mask = torch.stack([v["label_mask"] for v in vols])
    return Cines(ids=[v["id"] for v in vols], images=torch.stack([v["image"][0] for v in vols]),
                 labels=torch.stack([v["labels"] for v in vols]) if mask.any() else None,
                 label_mask=mask, info=[v["info"] for v in vols],
                 source={"path": str(path), "split": None, "kind": "cohort", "phantom": is_phantom(path)})


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


def cohort_volumes(root: str | os.PathLike, profile: Profile | str | None = None, all_slices: bool = False,
                   ids: Sequence[str] | None = None) -> list[dict]:
    """Volume records of an ACDC-layout cohort (real, phantom or synthetic), preprocessed exactly as the cache.

    Each subject goes through `cardiolab.data.prepare.prepare_subject` (in-plane resampling, heart-centred crop,
    profile.data.slices slices, percentile intensity scaling, frames resampled with ED first), so the segmenter
    sees synthetic cines as it saw the real ones. Labels: the label series when present, else the ED/ES frames;
    an image-only cohort has an all-False label_mask.
    all_slices: keep every slice and frame of each subject (for volumes: the cache keeps profile.data.slices
    slices, chosen differently with and without labels). ids: only these subjects.
    """
    profile = get_profile(profile)
    volumes = []
    for subject in read_acdc(root):
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
        raise CardiolabError(f"{Path(cache_dir) / 'manifest.json'}: no non-holdout subjects")
    spacing = np.median(np.array([s["spacing"] for s in subjects], dtype=float), axis=0)
    return {"spacing": [float(v) for v in spacing], "frame_ms": float(np.median([s["frame_ms"] for s in subjects])),
            "es": int(round(float(np.median([s["es"] for s in subjects]))))}
