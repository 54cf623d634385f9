"""Embeddings the copy audit compares cines in: one (F,) vector per cine.

Every kind sees the same thing (`Embedder`): the cine from the label-free comparison geometry
(`load_cines(label_free=True)`, so no kind sees which files sat beside an image), brought to a canonical phase and
place (`cardiolab.data.cines.align_cines`: a circular roll of the frames, whole or fractional, cancels exactly; an
in-plane shift to within about a pixel when the heart's motion dominates the field of view), then cut to its
`central` window (a band of MARGIN x the size blanked on every side), so what a shift brought into the field of
view, and how the copying tool filled it, is not compared. A scan compared with the training set is embedded in
several views, magnified by each of VIEW_ZOOMS about the aligned motion centre (`Embedder.views`), and is as near
as its nearest view: a zoom of 0.9-1.1 (about any point) is undone to within 2.5 %. Beyond that, per kind:

=============  ==========================================================================================
kind           invariant to (besides phase roll, translation, zoom and which label files sit beside it)
=============  ==========================================================================================
pixels         a per-cine intensity gain and offset (the correlation distance), mild noise (pooled to a
               16 x 16 grid). Not flips, rotation, gamma, blur or a VQ-GAN round trip. No training: a
               baseline and a check on the learned ones.
copy-detector  left-right flip exactly (`copy_detector.embed` averages each cine with its mirror); blur
               largely (it sees every cine through a fixed 1 px Gaussian, `copy_detector.canonical`); what it
               was trained on (`copy_detector.CopyAugment`): rotation <= 10 degrees, zoom 0.92-1.08, a
               residual shift, elastic warp, gain, offset, gamma 0.85-1.18, blur sigma <= 0.8 px, noise and
               whole-frame rolls. A change outside those ranges, or a generator's decoder (the VQ-GAN round
               trip), only as far as the network generalizes: `audit families` measures each family with a
               detector trained without it. The audit's embedding: its projections.
evaluator      gain and offset, roughly small moves; trained to stay *sensitive* to noise and blur (it ranks
               degraded cohorts for FD), so a noisy or blurred copy moves away from its source. A comparison.
=============  ==========================================================================================

The learned ones are loaded from runs/<profile>/<name>; train them first (`train copy-detector`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from cardiolab.core import CardiolabError
from cardiolab.data.cines import align_cines, zoom_cines
from cardiolab.engine import run_status
from cardiolab.metrics.features import features
from cardiolab.profiles import Profile
from cardiolab.tasks import get_task

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


MARGIN = 0.125            # of the in-plane size, blanked on every side before embedding (`central`): 8 px at tiny
                          # (tiny, design plant seeds 1-2: shift recall 90.6-96.9 % -> 100 %; 0.2 lost mixed copies)


def central(images: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Cines (N, D, H, W, T) with a band of `margin` x the in-plane size on every side set to the background (-1):
    the window a moved copy and its source share (what entered the field of view, however the copying tool filled
    it, is not compared). The copy detector trains on whole aligned cines; its views fill what a move brings in with
    the same background, so a blank band is nothing new to it."""
    H, W = images.shape[2:4]
    mh, mw = round(margin * H), round(margin * W)
    out = torch.full_like(images, -1.0)
    out[:, :, mh:H - mh, mw:W - mw] = images[:, :, mh:H - mh, mw:W - mw]
    return out


VIEW_ZOOMS = (1.0, 0.9, 0.95, 1.05, 1.1)   # the query's views: zooms of 0.9-1.1 (and between) come within 2.5 %


class Embedder:
    """Cines (N, D, H, W, T) in [-1, 1] -> embeddings (N, F) float64 of their `central` window after `align_cines`.
    Embeddings are kept per cine content for the process (an audit embeds the same training and reference cines for
    every cohort it scores)."""

    def __init__(self, kind: str, run, fn: Callable[[torch.Tensor], torch.Tensor]):
        weights = Path(run) / "checkpoint.pt" if run else None
        self.kind, self.fn = kind, fn
        self.run = (str(run), weights.stat().st_mtime_ns if weights and weights.exists() else None)  # retrained: new

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._memo(images, "one", lambda: self.fn(central(align_cines(images))))

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """(N, V, F): the embeddings of each aligned cine magnified by every VIEW_ZOOMS (view 0: as it is). A query
        compared in all its views (`copies.correlation_distance`) is as near as its nearest view: a zoomed copy
        meets its source in the view that undoes the zoom to within half a step."""
        def compute():
            aligned = align_cines(images)
            return torch.stack([self.fn(central(zoom_cines(aligned, z) if z != 1.0 else aligned))
                                for z in VIEW_ZOOMS], dim=1)
        return self._memo(images, "views", compute)

    def _memo(self, images: torch.Tensor, what: str, compute) -> torch.Tensor:
        digest = hashlib.sha1(images.detach().float().contiguous().numpy().tobytes()).hexdigest()
        key = (self.kind, self.run, what, tuple(images.shape), digest)
        if key not in _MEMO:
            while len(_MEMO) >= MEMO_SIZE:
                _MEMO.pop(next(iter(_MEMO)))                      # least recently used
            _MEMO[key] = compute()
        _MEMO[key] = _MEMO.pop(key)
        return _MEMO[key]


MEMO_SIZE = 8
_MEMO: dict = {}


def embedder(kind: str = "pixels", profile: Profile | None = None, run_dir=None) -> Embedder:
    """The `Embedder` of `kind` (one of EMBEDDINGS). Learned kinds load their run (default runs/<profile>/<kind>:
    give `profile` or `run_dir`) once; a missing run raises CardiolabError."""
    check_embedding(kind)
    if kind == "pixels":
        return Embedder(kind, None, pixel_embeddings)
    run = run_dir or profile.run(kind)
    if run_status(run, 0) == "fresh":
        raise CardiolabError(f"--embedding {kind}: no trained run in {run} (run `train {kind}` first)")
    task = get_task(kind)
    model = task.load(run)
    if kind == "copy-detector":
        return Embedder(kind, run, lambda aligned: task.embed(model, aligned))
    return Embedder(kind, run, lambda aligned: features(model, aligned, per_cine=True).double())


def default_embedding(profile: Profile) -> str:
    """The copy audit's embedding when none is named: the copy detector when its run is trained, else pixels (the
    caller says so in one line: pixels miss rotated and re-rendered copies)."""
    return "copy-detector" if run_status(profile.run("copy-detector"), 0) != "fresh" else "pixels"


def embed(images: torch.Tensor, kind: str = "pixels", profile: Profile | None = None) -> torch.Tensor:
    """Embeddings (N, F) of cines (N, D, H, W, T) in [-1, 1] by `kind` (one of EMBEDDINGS)."""
    return embedder(kind, profile)(images)
