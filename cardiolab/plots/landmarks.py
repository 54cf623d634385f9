"""RV insertion point figures (notebook 08): heatmap targets, predictions on cine frames, error distributions,
septal drift of real vs synthetic cines. Each returns a matplotlib Figure; points are (row, col) pixels of the
(H, W) frames shown, landmark 0 anterior, 1 inferior (cardiolab.metrics.landmarks conventions)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from cardiolab.plots import _np

MARKERS = {"truth": ("o", "none"), "pred": ("x", None)}
COLOURS = ("tab:orange", "tab:cyan")          # anterior, inferior


def _points(ax, pts: np.ndarray, kind: str) -> None:
    marker, face = MARKERS[kind]
    for j, colour in enumerate(COLOURS):
        if not np.isnan(pts[j]).any():
            ax.plot(pts[j, 1], pts[j, 0], marker, ms=6, mec=colour, mfc=face or colour, color=colour)


def plot_targets(image, heatmaps, points: np.ndarray, title: str = "heatmap targets"):
    """One frame (H, W), its two target maps (2, H, W) and the points (2, 2) they encode."""
    image, heatmaps = _np(image), _np(heatmaps)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8), layout="constrained")
    axes[0].imshow(image, cmap="gray")
    _points(axes[0], points, "truth")
    axes[0].set_title("frame + truth")
    for j, name in enumerate(("anterior", "inferior")):
        axes[j + 1].imshow(heatmaps[j], cmap="magma", vmin=0, vmax=1)
        axes[j + 1].set_title(f"{name} target")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def plot_predictions(image, truth: np.ndarray, pred: np.ndarray, slices: Sequence[int] | None = None,
                     frames: Sequence[int] | None = None, title: str = "RVIPs: truth (o) vs detector (x)"):
    """Grid of one cine (D, H, W, T): rows = slices, columns = frames, truth and predicted points (D, T, 2, 2)."""
    image = _np(image)
    D, _, _, T = image.shape
    slices = list(range(D)) if slices is None else list(slices)
    frames = list(np.unique(np.linspace(0, T - 1, min(T, 4)).round().astype(int))) if frames is None else list(frames)
    fig, axes = plt.subplots(len(slices), len(frames), figsize=(1.6 * len(frames), 1.6 * len(slices)),
                             squeeze=False, layout="constrained")
    for r, z in enumerate(slices):
        for c, t in enumerate(frames):
            ax = axes[r, c]
            ax.imshow(image[z, :, :, t], cmap="gray")
            _points(ax, truth[z, t], "truth")
            _points(ax, pred[z, t], "pred")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"slice {z}", fontsize=7)
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def plot_error_distributions(errors: Mapping[str, np.ndarray], unit: str = "mm",
                             title: str = "RVIP localisation error"):
    """Histogram per named error set (e.g. variant or landmark -> (N,) errors; NaN dropped), shared bins."""
    clean = {k: np.asarray(v, float)[~np.isnan(np.asarray(v, float))] for k, v in errors.items()}
    top = max([float(np.percentile(v, 99)) for v in clean.values() if len(v)] + [1.0])
    bins = np.linspace(0, top, 30)
    fig, ax = plt.subplots(figsize=(5.5, 3.2), layout="constrained")
    for name, v in clean.items():
        if len(v):
            ax.hist(np.clip(v, 0, top), bins=bins, histtype="step", lw=1.5,
                    label=f"{name} (median {np.median(v):.1f})")
    ax.set_xlabel(f"error ({unit}; clipped at the 99th percentile)")
    ax.set_ylabel("points")
    ax.legend(fontsize=7)
    ax.set_title(title)
    return fig


def plot_septal_drift(drift: Mapping[str, Mapping], title: str = "septal-angle drift: real vs synthetic"):
    """Bars of mean drift between adjacent slices and over frames per cohort: drift = {name: {"slices": {"mean"},
    "frames": {"mean"}}} (e.g. evaluate's "landmarks" entry: real, synthetic)."""
    names = list(drift)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 3.0), layout="constrained")
    for k, axis in enumerate(("slices", "frames")):
        vals = [drift[n][axis]["mean"] for n in names]
        ax.bar(x + (k - 0.5) * 0.38, np.nan_to_num(vals), width=0.38, label=f"between {axis}")
    ax.set_xticks(x, names)
    ax.set_ylabel("mean angle change (deg)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig
