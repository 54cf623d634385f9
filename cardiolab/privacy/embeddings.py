"""Embeddings the copy audit compares cines in: one (F,) vector per cine.

Every kind first brings each cine to a canonical phase and place (`cardiolab.data.cines.align_cines`): a circular
roll of the frames (whole or fractional) cancels exactly, an in-plane shift to within about half a pixel. The
cines themselves come from the label-free comparison geometry (`load_cines(label_free=True)`), so no kind sees
which files sat beside an image. Beyond that:
`pixels`: the aligned cine average-pooled in-plane to a small grid: no training; invariant to a per-cine intensity
gain and offset (the correlation distance) and to a roll, nearly to a shift; not to flips, rotation, zoom, gamma,
blur or strong noise. A baseline and a check on the learned embeddings.
`copy-detector`: the profile's copy-detector run (`cardiolab.tasks.copy_detector`, a CineEncoder over all slices
trained on aligned cines to be invariant to `copy_detector.CopyAugment`: flip (exactly, by averaging with the
mirror), rotation, shift, zoom, elastic warp, gain, offset, gamma, noise, blur and a frame roll): the audit's
embedding, its projections (`copy_detector.embed`). A change outside those ranges (or a generator's decoder) is
only as near as the network generalizes: `audit plant --family` measures that per family.
`evaluator`: the FD evaluator's run (slab features averaged per cine), a comparison only: it is trained to stay
sensitive to noise and blur, so a noisy copy moves away from its source.
The learned ones are loaded from runs/<profile>/<name>; train them first (`train copy-detector`).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from cardiolab.core import CardiolabError

EMBEDDINGS = ("pixels", "copy-detector", "evaluator")
LEARNED = ("copy-detector", "evaluator")
PIXEL_GRID = 16            # in-plane size of the pooled grid: coarse enough to ignore noise, fine enough for anatomy


def pixel_embeddings(images: torch.Tensor, grid: int = PIXEL_GRID) -> torch.Tensor:
    """images (N, D, H, W, T) -> (N, D * g * g * T) float64, each (H, W) plane average-pooled to g x g (g <= H, W)."""
    if images.ndim != 5:
        raise CardiolabError(f"pixel embeddings: expected cines (N, D, H, W, T), got shape {tuple(images.shape)}")
    N, D, H, W, T = images.shape
    g = min(grid, H, W)
    planes = rearrange(images.float(), "n d h w t -> (n d t) 1 h w")
    pooled = F.adaptive_avg_pool2d(planes, g)                                  # (N D T, 1, g, g)
    return rearrange(pooled, "(n d t) 1 h w -> n (d h w t)", n=N, d=D, t=T).double()


def check_embedding(kind: str) -> str:
    if kind not in EMBEDDINGS:
        raise CardiolabError(f"--embedding {kind!r}: choose one of {', '.join(EMBEDDINGS)}")
    return kind


def embedder(kind: str = "pixels", profile=None, run_dir=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function cines (N, D, H, W, T) in [-1, 1] -> embeddings (N, F) float64, for `kind` (one of EMBEDDINGS).

    Learned kinds load their run (default runs/<profile>/<kind>) once; a missing run raises CardiolabError.
    """
    from cardiolab.data.cines import align_cines

    check_embedding(kind)
    if kind == "pixels":
        return lambda images: pixel_embeddings(align_cines(images))
    from cardiolab.engine import run_status
    from cardiolab.metrics.features import features
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import get_task

    run = run_dir or get_profile(profile).run(kind)
    if run_status(run, 0) == "fresh":
        raise CardiolabError(f"--embedding {kind}: no trained run in {run} (run `train {kind}` first)")
    task = get_task(kind)
    model = task.load(run)
    if kind == "copy-detector":
        return lambda images: task.embed(model, align_cines(images))
    return lambda images: features(model, align_cines(images), per_cine=True).double()


def default_embedding(profile=None) -> str:
    """The copy audit's embedding when none is named: the copy detector when its run is trained, else pixels (the
    caller says so in one line: pixels miss rotated and re-rendered copies)."""
    from cardiolab.engine import run_status
    from cardiolab.profiles import get_profile

    return "copy-detector" if run_status(get_profile(profile).run("copy-detector"), 0) != "fresh" else "pixels"


def embed(images: torch.Tensor, kind: str = "pixels", profile=None) -> torch.Tensor:
    """Embeddings (N, F) of cines (N, D, H, W, T) in [-1, 1] by `kind` (one of EMBEDDINGS)."""
    return embedder(kind, profile)(images)
