"""Plotting, one home by topic: this module holds the shared helpers (cine montages, animated GIFs, volume
curves, group distributions, save_figure); `plots.training` the training figures, `plots.evaluation` the
evaluation figures.

Every function returns a matplotlib Figure (the notebook shows it) and never calls plt.show();
`save_figure` writes it as a PNG atomically. Arrays may be numpy or torch, in the cache layout
(D, H, W, T): slices, height, width, frames.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter

from cardiolab.core import CardiolabError, atomic_path
from cardiolab.io.acdc import read_acdc
from cardiolab.io.cohort import LABELS, from_stored

LABEL_COLOURS = {LABELS["RV"]: "tab:blue", LABELS["MYO"]: "tab:green", LABELS["LV"]: "tab:red"}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _contours(ax, labels: np.ndarray) -> None:
    """Outline each foreground class of one (H, W) label map."""
    for value, colour in LABEL_COLOURS.items():
        mask = labels == value
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.7)


def cine_montage(image, labels=None, slices: Sequence[int] | None = None, frames: Sequence[int] | None = None,
                 title: str | None = None, vmin: float | None = None, vmax: float | None = None,
                 cell: float = 1.2):
    """Grid of one cine: rows = slices (base -> apex), columns = frames.

    image: (D, H, W, T); labels: optional (D, H, W, T) drawn as contours (RV blue, MYO green, LV red).
    slices, frames: which to show (default all slices, at most 8 evenly spaced frames).
    """
    image = _np(image)
    if image.ndim != 4:
        raise CardiolabError(f"cine_montage: image must be (D, H, W, T), got shape {image.shape}")
    D, _, _, T = image.shape
    slices = list(range(D)) if slices is None else list(slices)
    frames = list(np.unique(np.linspace(0, T - 1, min(T, 8)).round().astype(int))) if frames is None else list(frames)
    lab = None if labels is None else _np(labels)
    vmin = float(np.min(image)) if vmin is None else vmin
    vmax = float(np.max(image)) if vmax is None else vmax
    fig, axes = plt.subplots(len(slices), len(frames), figsize=(cell * len(frames), cell * len(slices)),
                             squeeze=False, layout="constrained")
    for r, z in enumerate(slices):
        for c, t in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(image[z, :, :, t], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            if lab is not None:
                _contours(ax, lab[z, :, :, t])
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"z={z}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_gif(image, path: str | os.PathLike, slice: int | None = None, labels=None, fps: int = 8,
             size: float = 3.0, title: str | None = None) -> Path:
    """Write one slice of a cine as an animated GIF (matplotlib PillowWriter), atomically.

    image: (D, H, W, T) (slice picks one, default the middle) or (H, W, T); labels: same shape, optional.
    """
    image = _np(image)
    lab = None if labels is None else _np(labels)
    if image.ndim == 4:
        z = image.shape[0] // 2 if slice is None else slice
        image, lab = image[z], None if lab is None else lab[z]
    if image.ndim != 3:
        raise CardiolabError(f"save_gif: image must be (D, H, W, T) or (H, W, T), got shape {image.shape}")
    fig, ax = plt.subplots(figsize=(size, size), layout="constrained")
    ax.set_axis_off()
    shown = ax.imshow(image[..., 0], cmap="gray", vmin=float(image.min()), vmax=float(image.max()))
    label = ax.set_title("", fontsize=9)

    def draw(t):
        shown.set_data(image[..., t])
        for c in list(ax.collections):
            c.remove()
        if lab is not None:
            _contours(ax, lab[..., t])
        label.set_text(f"{title + '  ' if title else ''}frame {t}")
        return [shown]

    anim = FuncAnimation(fig, draw, frames=image.shape[-1], blit=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        anim.save(tmp, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def save_cohort_gifs(cohort: str | os.PathLike) -> Path:
    """One animated GIF (middle slice) per study of an ACDC-layout cohort, in cohort/gifs/<id>.gif."""
    cohort = Path(cohort)
    for s in read_acdc(cohort):
        image = from_stored(s.image).transpose(2, 0, 1, 3)           # (X, Y, Z, T) -> (D, H, W, T)
        save_gif(image, cohort / "gifs" / f"{s.id}.gif", title=s.id)
    return cohort / "gifs"


def volume_curves(curves: dict, frame_ms: float | None = None, title: str | None = None, ax=None):
    """Volume curves over the cycle, e.g. LV / RV / MYO ml from `cardiolab.metrics.function.volume_curves`.

    curves: {name: (T,) volumes}; names LV, RV, MYO get the label colours. frame_ms: x axis in ms.
    """
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3), layout="constrained")
    for name, values in curves.items():
        values = _np(values)
        x = np.arange(len(values)) * frame_ms if frame_ms else np.arange(len(values))
        ax.plot(x, values, marker=".", color=LABEL_COLOURS.get(LABELS.get(name)), label=name)
    ax.set_xlabel("time (ms)" if frame_ms else "frame")
    ax.set_ylabel("volume (ml)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig or ax.figure


def group_distributions(table, columns: Sequence[str], by: str = "Group", order: Sequence[str] | None = None):
    """One box + strip plot per column of a pandas DataFrame, grouped by `by` (e.g. EF, EDV, mass per group)."""
    import seaborn as sns  # lazy: seaborn is a slow import, needed only here

    missing = [c for c in (*columns, by) if c not in table.columns]
    if missing:
        raise CardiolabError(f"group_distributions: table has no columns {missing}")
    order = list(order) if order is not None else sorted(table[by].dropna().unique())
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3), squeeze=False, layout="constrained")
    for ax, col in zip(axes[0], columns):
        sns.boxplot(data=table, x=by, y=col, order=order, ax=ax, color="0.85", fliersize=0)
        sns.stripplot(data=table, x=by, y=col, order=order, ax=ax, size=3, color="k")
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel("")
    return fig


def side_by_side(cohorts: dict, slice_fraction: float = 0.5, frame: int = 0):
    """One mid-ventricular ED frame per cohort, in the same display convention (imshow, row 0 at the top).

    cohorts: {name: (image (D, H, W, T), labels (D, H, W, T) or None)}; contours RV blue, MYO green, LV red.
    """
    fig, axes = plt.subplots(1, len(cohorts), figsize=(3.2 * len(cohorts), 3.4), squeeze=False)
    for ax, (name, (image, labels)) in zip(axes[0], cohorts.items()):
        img = _np(image)
        z = int(round(slice_fraction * (img.shape[0] - 1)))
        ax.imshow(img[z, :, :, frame], cmap="gray", vmin=-1, vmax=1)
        if labels is not None:
            _contours(ax, _np(labels)[z, :, :, frame])
        ax.set_title(f"{name}: slice {z}, frame {frame}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 110, close: bool = False) -> Path:
    """Write a figure as PNG, atomically (the folder is created). Leaves it open for notebooks unless close."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    if close:
        plt.close(fig)
    return path
