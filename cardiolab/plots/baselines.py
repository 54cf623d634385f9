"""Figures of the CardioDiT baselines (notebook 04): one row per model, each cine (D, H, W, T) in [-1, 1].

- `montages`: every slice at ED, one row per model;
- `long_axis_cuts`: a cut through the stacked short-axis slices (slice x height at the centre column), which shows
  whether slices sampled independently (factorized, ddpm, ldm, flow) agree with each other;
- `xt_profiles`: the centre column of the middle slice over time (height x frames): motion coherence;
- `two_stage`: mask-to-image samples with the masks they were made from outlined;
- `denoising_trajectory`: x0 predictions of one study along the sampler (middle slice, ED);
- `timing_bars`: s/step and s/sample per model from `report.training_table`.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cardiolab.core import CardiolabError
from cardiolab.plots import _contours, _np


def _rows(cines: dict) -> list[tuple[str, np.ndarray]]:
    if not cines:
        raise CardiolabError("no cines to plot: sample the baselines first")
    return [(name, _np(c)) for name, c in cines.items()]


def montages(cines: dict, frame: int = 0, cell: float = 1.1):
    """Rows = models, columns = slices (base -> apex) at `frame`. cines: {name: (D, H, W, T)}."""
    rows = _rows(cines)
    D = max(c.shape[0] for _, c in rows)
    fig, axes = plt.subplots(len(rows), D, figsize=(cell * D + 1.4, cell * len(rows)), squeeze=False)
    for r, (name, c) in enumerate(rows):
        for d in range(D):
            ax = axes[r][d]
            ax.set_xticks([])
            ax.set_yticks([])
            if d < c.shape[0]:
                ax.imshow(c[d, :, :, min(frame, c.shape[3] - 1)].T, cmap="gray", vmin=-1, vmax=1, origin="lower")
            if d == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(f"slice {d}", fontsize=8)
    fig.suptitle(f"one sample per model, frame {frame} (ED)", fontsize=9)
    fig.tight_layout()
    return fig


def long_axis_cuts(cines: dict, frame: int = 0, aspect: float = 1.0, cell: float = 1.6):
    """A long-axis cut through the stacked slices of each model: (slice, height) at the centre column.

    aspect: slice thickness / in-plane pixel size, so that the cut has true proportions."""
    rows = _rows(cines)
    fig, axes = plt.subplots(1, len(rows), figsize=(cell * len(rows) + 0.5, cell + 0.6), squeeze=False)
    for ax, (name, c) in zip(axes[0], rows):
        cut = c[:, :, c.shape[2] // 2, min(frame, c.shape[3] - 1)]          # (D, H)
        ax.imshow(cut, cmap="gray", vmin=-1, vmax=1, aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks(range(c.shape[0]))
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("slice", fontsize=8)
    fig.tight_layout()
    return fig


def xt_profiles(cines: dict, slice: int | None = None, cell: float = 1.6):
    """x-t profiles: the centre column of the middle slice (or `slice`) over time, height x frames, per model."""
    rows = _rows(cines)
    fig, axes = plt.subplots(1, len(rows), figsize=(cell * len(rows) + 0.5, cell + 0.6), squeeze=False)
    for ax, (name, c) in zip(axes[0], rows):
        d = c.shape[0] // 2 if slice is None else slice
        ax.imshow(c[d, :, c.shape[2] // 2, :], cmap="gray", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("frame", fontsize=7)
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def two_stage(images, masks, frames: Sequence[int] = (0,), title: str = "mask-to-image", cell: float = 1.3):
    """Samples (N, D, H, W, T) with their conditioning masks (N, D, H, W, T) outlined: rows = samples x frames,
    columns = slices."""
    images, masks = _np(images), _np(masks)
    if images.shape != masks.shape:
        raise CardiolabError(f"two_stage: images {images.shape} and masks {masks.shape} differ")
    N, D = images.shape[:2]
    rows = [(n, t) for n in range(N) for t in frames]
    fig, axes = plt.subplots(len(rows), D, figsize=(cell * D + 1.2, cell * len(rows)), squeeze=False)
    for r, (n, t) in enumerate(rows):
        for d in range(D):
            ax = axes[r][d]
            ax.imshow(images[n, d, :, :, t].T, cmap="gray", vmin=-1, vmax=1, origin="lower")
            _contours(ax, masks[n, d, :, :, t].T)
            ax.set_xticks([])
            ax.set_yticks([])
            if d == 0:
                ax.set_ylabel(f"sample {n + 1}, t={t}", fontsize=7)
    fig.suptitle(f"{title}: samples with their masks outlined", fontsize=9)
    fig.tight_layout()
    return fig


def denoising_trajectory(steps: list, slice: int | None = None, frame: int = 0, title: str = "", cell: float = 1.3):
    """x0 predictions along the sampler: steps = [(step i, (D, H, W, T))] from `tasks.common.trajectory`."""
    if not steps:
        raise CardiolabError("denoising_trajectory: no steps")
    fig, axes = plt.subplots(1, len(steps), figsize=(cell * len(steps) + 0.4, cell + 0.5), squeeze=False)
    for ax, (i, x) in zip(axes[0], steps):
        x = _np(x).astype(np.float32)
        d = x.shape[0] // 2 if slice is None else slice
        ax.imshow(x[d, :, :, frame].T, cmap="gray", vmin=float(min(-1, x.min())), vmax=float(max(1, x.max())),
                  origin="lower")
        ax.set_title(f"step {i + 1}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title} x0 prediction along the sampler".strip(), fontsize=9)
    fig.tight_layout()
    return fig


def timing_bars(table: pd.DataFrame):
    """Two panels: s/step (training) and s/sample per model (`cardiolab.reporting.report.training_table`)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for ax, column in zip(axes, ("s/step", "s/sample")):
        t = table.dropna(subset=[column])
        ax.barh(t["model"], t[column], color="tab:gray")
        ax.set_xlabel(column)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig
