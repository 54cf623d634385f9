"""Planted cohorts: non-members mixed with transformed copies of training cines, and the record of which is which.

An audit counts only if it catches copies we know are there. A planted cohort holds non-member cines (fresh
phantoms on phantom data, held-out patients on a real source: `privacy.audit.plant_cohort`) plus copies of
training subjects, each passed through the kind of change a generator or another tool might make to a
memorized scan. The changes come in families (`FAMILIES`), each with its range:

    flip      left-right mirror                     gain      intensity scale 0.85-1.15 around the background
    rotation  in-plane, <= 10 degrees               zoom      in-plane, 0.9-1.1
    shift     <= 4 px per axis, sub-pixel (bilinear) gamma    0.8-1.25 on [0, 1] intensities
    roll      circular phase roll <= a quarter beat, blur     Gaussian, sigma 0.5-1.0 px in-plane
              fractional (linear between frames)    noise     Gaussian, 2-5 % of the [-1, 1] range
    vqgan     an encode-decode round trip through the profile's VQ-GAN (what a latent generator's decoder does)

`CopyTransforms()` (the default cohort) draws the families the audit was first designed on (flip, rotation,
shift, gain, noise, whole-frame roll), each with probability 0.5; `family_transforms(F)` draws family F alone on
every copy, `family_transforms("mixed")` every family but flip and vqgan, each with probability 0.5. The copy
detector trains on its own augmentations (`tasks.copy_detector.CopyAugment`); a family it was trained without
(`train copy-detector --without F`) is the honest test of what the audit generalizes to.
`planted.json` beside the cohort maps each synthetic id to the training id it copies, or null for a non-member;
`transforms.json` holds what was drawn for each copy; `nonmembers.json` says which non-members the cohort holds;
`audit copies` then reports recall and false-positive rate.
Cines are (N, D, H, W, T) in [-1, 1] (slices, height, width, frames), as `data.cines.load_cines` returns them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from monai.transforms import Affine
from scipy import ndimage

from cardiolab.core import CardiolabError, read_json, write_json
from cardiolab.data.geometry import plain_tensor
from cardiolab.io.cohort import write_cines

PLANTED_JSON = "planted.json"          # {synthetic id: training id or null}
TRANSFORMS_JSON = "transforms.json"    # {synthetic id: the transform drawn for that copy}
NONMEMBERS_JSON = "nonmembers.json"    # {kind, description, ...}: fresh phantoms or held-out real subjects


FAMILIES = ("flip", "rotation", "shift", "zoom", "roll", "gain", "gamma", "blur", "noise", "vqgan")
MIXED = ("rotation", "shift", "zoom", "roll", "gain", "gamma", "blur", "noise")    # the combination family


@dataclass(frozen=True)
class CopyTransforms:
    """Which families each planted copy draws (each with probability `p`) and their ranges."""
    p: float = 0.5                 # keep some copies exact and some changed in several ways at once
    families: tuple[str, ...] = ("flip", "rotation", "shift", "gain", "noise", "roll")
    max_rotation_deg: float = 10.0  # the "small rotation"
    max_shift_px: float = 3.0       # in-plane, in pixels of the cine grid
    scale_range: tuple[float, float] = (0.85, 1.15)   # intensity scale around the background (-1)
    noise_range: tuple[float, float] = (0.03, 0.03)   # Gaussian noise std, in units of the [-1, 1] range
    max_roll: float = 0.125         # fraction of the beat (2 of 16 frames at tiny)
    whole_frames: bool = True       # round the roll to whole frames
    zoom_range: tuple[float, float] = (0.9, 1.1)
    gamma_range: tuple[float, float] = (0.8, 1.25)
    blur_range: tuple[float, float] = (0.5, 1.0)      # Gaussian sigma, px

    def __post_init__(self):
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise CardiolabError(f"copy transforms: unknown families {unknown}; choose from {', '.join(FAMILIES)}")


def family_transforms(family: str) -> CopyTransforms:
    """A planted cohort of one family (`FAMILIES`, drawn on every copy, at the ranges of the module docstring),
    or "mixed" (every family in MIXED, each with probability 0.5)."""
    honest = dict(max_shift_px=4.0, noise_range=(0.02, 0.05), max_roll=0.25, whole_frames=False)
    if family == "mixed":
        return CopyTransforms(p=0.5, families=MIXED, **honest)
    if family not in FAMILIES:
        raise CardiolabError(f"--family {family!r}: choose one of {', '.join(FAMILIES)}, mixed")
    return CopyTransforms(p=1.0, families=(family,), **honest)


@dataclass
class PlantedCohort:
    """images: (S, D, H, W, T) in [-1, 1]; ids: S synthetic ids; planted: {id: training id or None};
    transforms: {id: drawn transform parameters} for the copies; labels: (S, D, H, W, T) or None."""
    images: torch.Tensor
    ids: list[str]
    planted: dict[str, str | None]
    transforms: dict[str, dict] = field(default_factory=dict)
    labels: torch.Tensor | None = None


IDENTITY = {"flip": False, "rotation_deg": 0.0, "shift_px": [0.0, 0.0], "zoom": 1.0, "intensity_scale": 1.0,
            "gamma": 1.0, "blur_sigma": 0.0, "noise_std": 0.0, "frame_roll": 0.0, "vqgan": False}


def draw_transform(rng: np.random.Generator, cfg: CopyTransforms = CopyTransforms(), frames: int = 16) -> dict:
    """One copy's parameters (a family not drawn keeps its identity value, IDENTITY); `frames` per beat sets the
    roll. A family draws its magnitude uniformly over its range, either sign where it has one."""
    on = {f: bool(rng.random() < cfg.p) for f in FAMILIES}
    t = dict(IDENTITY, shift_px=[0.0, 0.0], noise_seed=int(rng.integers(2**31)))
    fam = set(cfg.families)
    if "flip" in fam and on["flip"]:
        t["flip"] = True
    if "rotation" in fam and on["rotation"]:
        t["rotation_deg"] = float(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    if "shift" in fam and on["shift"]:
        t["shift_px"] = [float(v) for v in rng.uniform(-cfg.max_shift_px, cfg.max_shift_px, 2)]
    if "zoom" in fam and on["zoom"]:
        t["zoom"] = float(rng.uniform(*cfg.zoom_range))
    if "gain" in fam and on["gain"]:
        t["intensity_scale"] = float(rng.uniform(*cfg.scale_range))
    if "gamma" in fam and on["gamma"]:
        t["gamma"] = float(np.exp(rng.uniform(*np.log(cfg.gamma_range))))
    if "blur" in fam and on["blur"]:
        t["blur_sigma"] = float(rng.uniform(*cfg.blur_range))
    if "noise" in fam and on["noise"]:
        t["noise_std"] = float(rng.uniform(*cfg.noise_range))
    if "roll" in fam and on["roll"]:
        roll = float(rng.uniform(-cfg.max_roll, cfg.max_roll)) * frames
        t["frame_roll"] = float(round(roll)) if cfg.whole_frames else roll
    if "vqgan" in fam and on["vqgan"]:
        t["vqgan"] = True
    return t


def apply_transform(cine: torch.Tensor, t: dict, labels: torch.Tensor | None = None, round_trip=None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One cine (D, H, W, T) in [-1, 1] changed by the parameters of `draw_transform`, clipped to [-1, 1],
    and its labels (D, H, W, T) moved with it (nearest neighbour; intensity, blur and noise leave them alone).
    Order: the VQ-GAN round trip (`round_trip`: (1, D, H, W, T) -> same, needed when t["vqgan"]), flip, one
    affine warp (rotation, zoom, shift; the border replicated), gamma, gain, blur, noise, phase roll."""
    t = dict(IDENTITY, **t)
    D, H, W, T = cine.shape
    x = cine.float()
    lab = None if labels is None else labels.clone()
    if t["vqgan"]:
        if round_trip is None:
            raise CardiolabError("plant: a vqgan copy needs a VQ-GAN round trip (a trained VQ-GAN run)")
        x = round_trip(x[None])[0].float()
    if t["flip"]:
        x = x.flip(2)                                                         # left-right mirror
        lab = None if lab is None else lab.flip(2)
    if t["rotation_deg"] or any(t["shift_px"]) or t["zoom"] != 1.0:
        kw = dict(rotate_params=math.radians(t["rotation_deg"]), translate_params=tuple(t["shift_px"]),
                  scale_params=(t["zoom"], t["zoom"]), padding_mode="border", image_only=True)
        planes = rearrange(x, "d h w t -> (d t) h w")                         # every slice-frame as a channel
        x = rearrange(plain_tensor(Affine(**kw)(planes)), "(d t) h w -> d h w t", d=D, t=T)
        if lab is not None:
            planes = rearrange(lab.float(), "d h w t -> (d t) h w")
            moved = plain_tensor(Affine(mode="nearest", **kw)(planes))
            lab = rearrange(moved, "(d t) h w -> d h w t", d=D, t=T).round().to(labels.dtype)
    if t["gamma"] != 1.0:
        x = ((x + 1.0) / 2.0).clamp(0.0, 1.0) ** t["gamma"] * 2.0 - 1.0
    x = (x + 1.0) * t["intensity_scale"] - 1.0                                 # background (-1) stays put
    if t["blur_sigma"]:
        x = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), (0, t["blur_sigma"], t["blur_sigma"], 0),
                                                     mode="nearest"))
    if t["noise_std"]:
        g = torch.Generator().manual_seed(t["noise_seed"])
        x = x + t["noise_std"] * torch.randn(x.shape, generator=g)
    if t["frame_roll"]:
        x = _roll(x, float(t["frame_roll"]))
        lab = None if lab is None else lab.roll(int(round(t["frame_roll"])), dims=3)
    return x.clamp(-1.0, 1.0), lab


def _roll(x: torch.Tensor, shift: float) -> torch.Tensor:
    """(..., T) rolled circularly by `shift` frames (new[t] = old[t - shift]), linear between frames."""
    T = x.shape[-1]
    t = (torch.arange(T, dtype=torch.float64) - shift) % T
    lo = torch.floor(t).long()
    w = (t - lo).to(x.dtype)
    return (1 - w) * x[..., lo % T] + w * x[..., (lo + 1) % T]


def plant(train: torch.Tensor, train_ids: Sequence[str], fresh: torch.Tensor, n_copies: int, seed: int = 0,
          cfg: CopyTransforms = CopyTransforms(), prefix: str = "plant", train_labels: torch.Tensor | None = None,
          fresh_labels: torch.Tensor | None = None, round_trip=None) -> PlantedCohort:
    """Fresh cines (M, D, H, W, T) plus `n_copies` transformed copies of training cines (N, D, H, W, T).

    Training subjects are drawn without replacement (with replacement only when n_copies > N). The order is
    shuffled and ids are fresh (`plant0001`, ...), so neither position nor name tells a copy from a fresh cine.
    train_labels / fresh_labels (same shapes, int): when both are given, the cohort carries labels too, moved
    with each copy. round_trip: the VQ-GAN encode-decode (1, D, H, W, T) -> same, for the vqgan family.
    """
    if train.ndim != 5 or fresh.ndim != 5 or train.shape[1:] != fresh.shape[1:]:
        raise CardiolabError(f"plant: training {tuple(train.shape)} and fresh {tuple(fresh.shape)} cines must be "
                             "(N, D, H, W, T) of one geometry")
    if len(train_ids) != len(train):
        raise CardiolabError(f"plant: {len(train_ids)} training ids for {len(train)} training cines")
    if n_copies < 0 or (n_copies and len(train) == 0):
        raise CardiolabError(f"plant: cannot draw {n_copies} copies from {len(train)} training cines")
    labelled = train_labels is not None and fresh_labels is not None
    if labelled and (train_labels.shape != train.shape or fresh_labels.shape != fresh.shape):
        raise CardiolabError(f"plant: labels {tuple(train_labels.shape)} / {tuple(fresh_labels.shape)} do not match "
                             f"the cines {tuple(train.shape)} / {tuple(fresh.shape)}")
    rng = np.random.default_rng(seed)
    src = rng.choice(len(train), n_copies, replace=n_copies > len(train))
    transforms = [draw_transform(rng, cfg, train.shape[-1]) for _ in src]
    items = [(*apply_transform(train[j], t, train_labels[j] if labelled else None, round_trip), str(train_ids[j]), t)
             for j, t in zip(src, transforms)]
    items += [(fresh[i].float().clamp(-1.0, 1.0), fresh_labels[i] if labelled else None, None, None)
              for i in range(len(fresh))]
    order = rng.permutation(len(items))
    ids = [f"{prefix}{k + 1:04d}" for k in range(len(items))]
    planted = {ids[k]: items[i][2] for k, i in enumerate(order)}
    done = {ids[k]: items[i][3] for k, i in enumerate(order) if items[i][3] is not None}
    images = torch.stack([items[i][0] for i in order]) if items else fresh[:0].float()
    labels = torch.stack([items[i][1] for i in order]) if labelled and items else None
    return PlantedCohort(images=images, ids=ids, planted=planted, transforms=done, labels=labels)


def write_planted(out: str | os.PathLike, cohort: PlantedCohort, spacing: Sequence[float], frame_ms: float,
                  es: int, nonmembers: dict | None = None) -> Path:
    """Write a planted cohort as an ACDC-layout cohort with planted.json, transforms.json and (when given) the
    `nonmembers` record in nonmembers.json, atomically (labels as the full label series when the cohort has them).

    spacing: (sx, sy, sz) mm of the cine grid (H, W, D axes -> NIfTI x, y, slice, as prepare.py orders them);
    frame_ms, es: the frame spacing and 0-based ES frame every subject gets (ED is frame 0, as in the cache).
    """
    def extra(tmp: Path) -> None:
        write_json(tmp / PLANTED_JSON, cohort.planted)
        write_json(tmp / TRANSFORMS_JSON, cohort.transforms)
        if nonmembers is not None:
            write_json(tmp / NONMEMBERS_JSON, nonmembers)

    write_cines(out, cohort.images, {"spacing": list(spacing), "frame_ms": float(frame_ms), "es": int(es)},
                ids=cohort.ids, labels=cohort.labels, extra=extra)
    return Path(out)


def read_planted(root: str | os.PathLike) -> dict[str, str | None]:
    """planted.json of a planted cohort folder: {synthetic id: training id or None}."""
    path = Path(root) / PLANTED_JSON
    if not path.is_file():
        raise CardiolabError(f"{path}: file not found (not a planted cohort; make one with `audit plant`)")
    planted = read_json(path)
    if not isinstance(planted, dict) or not all(v is None or isinstance(v, str) for v in planted.values()):
        raise CardiolabError(f"{path}: expected {{synthetic id: training id or null}}")
    return planted


def read_nonmembers(root: str | os.PathLike) -> dict | None:
    """nonmembers.json of a planted cohort folder ({kind, description, ...}), or None for a cohort planted before
    the record existed (its non-members are fresh phantoms)."""
    path = Path(root) / NONMEMBERS_JSON
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        raise CardiolabError(f"{path}: expected {{kind, description, ...}}")
    return record
