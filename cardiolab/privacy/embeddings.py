"""Embeddings the copy audit compares cines in: one (F,) vector per cine.

`pixels`: the cine itself, average-pooled in-plane to a small grid: no training, no invariances (a flipped or
rotated copy looks different), a baseline and a check on the learned embeddings. The learned ones
(`copy-detector`, `evaluator`: models/evaluator.CineEncoder runs) are wired in by the audit issue.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from cardiolab.core import CardiolabError

EMBEDDINGS = ("pixels",)
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


def embed(images: torch.Tensor, kind: str = "pixels") -> torch.Tensor:
    """Embeddings (N, F) of cines (N, D, H, W, T) in [-1, 1] by `kind` (one of EMBEDDINGS)."""
    if kind not in EMBEDDINGS:
        raise CardiolabError(f"--embedding {kind!r}: available here: {', '.join(EMBEDDINGS)} "
                             "(copy-detector and evaluator are not wired in yet)")
    return pixel_embeddings(images)
