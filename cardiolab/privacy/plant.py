"""Planted cohorts: fresh cines mixed with transformed copies of training cines, and the record of which is which.

An audit counts only if it catches copies we know are there. A planted cohort holds fresh phantom cines plus
copies of training subjects, each passed through the kind of change a generator might make to a memorized
scan: a left-right flip, a small in-plane rotation (<= 10 degrees), a shift, an intensity scale, noise and a
roll of the frames. `planted.json` beside the cohort maps each synthetic id to the training id it copies,
or null for a fresh cine; `audit copies` then reports recall and false-positive rate on it.
Cines are (N, D, H, W, T) in [-1, 1] (slices, height, width, frames), as `evaluate.load_cines` returns them.
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

from cardiolab.core import CardiolabError, read_json, write_json
from cardiolab.io.cohort import write_cines

PLANTED_JSON = "planted.json"          # {synthetic id: training id or null}
TRANSFORMS_JSON = "transforms.json"    # {synthetic id: the transform drawn for that copy}


@dataclass(frozen=True)
class CopyTransforms:
    """Ranges of the changes drawn for each planted copy (each applied with probability `p`)."""
    p: float = 0.5                 # keep some copies exact and some changed in several ways at once
    max_rotation_deg: float = 10.0  # the "small rotation"
    max_shift_px: float = 3.0       # in-plane, in pixels of the cine grid
    scale_range: tuple[float, float] = (0.85, 1.15)   # intensity scale around the background (-1)
    noise_std: float = 0.03         # Gaussian noise, in units of the [-1, 1] range
    max_roll: int = 2               # frames


@dataclass
class PlantedCohort:
    """images: (S, D, H, W, T) in [-1, 1]; ids: S synthetic ids; planted: {id: training id or None};
    transforms: {id: drawn transform parameters} for the copies; labels: (S, D, H, W, T) or None."""
    images: torch.Tensor
    ids: list[str]
    planted: dict[str, str | None]
    transforms: dict[str, dict] = field(default_factory=dict)
    labels: torch.Tensor | None = None


def draw_transform(rng: np.random.Generator, cfg: CopyTransforms = CopyTransforms()) -> dict:
    """One copy's parameters; a change not drawn keeps its identity value."""
    on = rng.random(6) < cfg.p
    shift = rng.uniform(-cfg.max_shift_px, cfg.max_shift_px, 2)
    return {"flip": bool(on[0]),
            "rotation_deg": float(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)) if on[1] else 0.0,
            "shift_px": [float(v) for v in shift] if on[2] else [0.0, 0.0],
            "intensity_scale": float(rng.uniform(*cfg.scale_range)) if on[3] else 1.0,
            "noise_std": cfg.noise_std if on[4] else 0.0,
            "frame_roll": int(rng.integers(-cfg.max_roll, cfg.max_roll + 1)) if on[5] else 0,
            "noise_seed": int(rng.integers(2**31))}


def apply_transform(cine: torch.Tensor, t: dict, labels: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One cine (D, H, W, T) in [-1, 1] changed by the parameters of `draw_transform`, clipped to [-1, 1],
    and its labels (D, H, W, T) moved with it (nearest neighbour; intensity and noise leave them alone)."""
    from monai.transforms import Affine

    D, H, W, T = cine.shape
    x = cine.float()
    lab = None if labels is None else labels.clone()
    if t["flip"]:
        x = x.flip(2)                                                         # left-right mirror
        lab = None if lab is None else lab.flip(2)
    if t["rotation_deg"] or any(t["shift_px"]):
        kw = dict(rotate_params=math.radians(t["rotation_deg"]), translate_params=tuple(t["shift_px"]),
                  padding_mode="border", image_only=True)
        planes = rearrange(x, "d h w t -> (d t) h w")                         # every slice-frame as a channel
        x = rearrange(_plain(Affine(**kw)(planes)), "(d t) h w -> d h w t", d=D, t=T)
        if lab is not None:
            planes = rearrange(lab.float(), "d h w t -> (d t) h w")
            moved = _plain(Affine(mode="nearest", **kw)(planes))
            lab = rearrange(moved, "(d t) h w -> d h w t", d=D, t=T).round().to(labels.dtype)
    x = (x + 1.0) * t["intensity_scale"] - 1.0                                 # background (-1) stays put
    if t["noise_std"]:
        g = torch.Generator().manual_seed(t["noise_seed"])
        x = x + t["noise_std"] * torch.randn(x.shape, generator=g)
    if t["frame_roll"]:
        x = x.roll(t["frame_roll"], dims=3)
        lab = None if lab is None else lab.roll(t["frame_roll"], dims=3)
    return x.clamp(-1.0, 1.0), lab


def _plain(x) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor (its metadata has no use here)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def plant(train: torch.Tensor, train_ids: Sequence[str], fresh: torch.Tensor, n_copies: int, seed: int = 0,
          cfg: CopyTransforms = CopyTransforms(), prefix: str = "plant", train_labels: torch.Tensor | None = None,
          fresh_labels: torch.Tensor | None = None) -> PlantedCohort:
    """Fresh cines (M, D, H, W, T) plus `n_copies` transformed copies of training cines (N, D, H, W, T).

    Training subjects are drawn without replacement (with replacement only when n_copies > N). The order is
    shuffled and ids are fresh (`plant0001`, ...), so neither position nor name tells a copy from a fresh cine.
    train_labels / fresh_labels (same shapes, int): when both are given, the cohort carries labels too, moved
    with each copy; a labelled cohort is re-centred on its labels when read back at profile geometry.
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
    transforms = [draw_transform(rng, cfg) for _ in src]
    items = [(*apply_transform(train[j], t, train_labels[j] if labelled else None), str(train_ids[j]), t)
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
                  es: int) -> Path:
    """Write a planted cohort as an ACDC-layout cohort with planted.json and transforms.json, atomically
    (labels as the full label series when the cohort has them).

    spacing: (sx, sy, sz) mm of the cine grid (H, W, D axes -> NIfTI x, y, slice, as prepare.py orders them);
    frame_ms, es: the frame spacing and 0-based ES frame every subject gets (ED is frame 0, as in the cache).
    """
    def extra(tmp: Path) -> None:
        write_json(tmp / PLANTED_JSON, cohort.planted)
        write_json(tmp / TRANSFORMS_JSON, cohort.transforms)

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
