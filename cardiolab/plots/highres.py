"""Figures of the high-resolution 3D pipeline: where memory goes per switch, orthogonal slices beside masks.

Arrays are (X, Y, Z) as in the volume layout (cardiolab.io.volume); memory rows are those of
cardiolab.bench.highres (bytes). Every function returns a matplotlib Figure.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from cardiolab.io.volume import LABELS

MB = 2 ** 20
PARTS = (("weights_bytes", "weights", "tab:gray"), ("grads_optimizer_bytes", "grads + AdamW", "tab:orange"),
         ("activations_bytes", "activations", "tab:blue"))
STRUCTURE_COLOURS = {1: "tab:red", 2: "tab:pink", 3: "tab:purple", 4: "tab:green", 5: "gold", 6: "tab:cyan"}


def _switch_name(row: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in row["switches"].items()) or "baseline"


def memory_bars(results: Mapping[str, Sequence[Mapping]], title: str | None = None):
    """One panel per stage: a stacked bar (weights, grads + AdamW, activations; MB) per switch setting.

    results: {stage: rows} as `bench highres --json` writes (rows that ran out of memory are marked).
    """
    stages = [s for s, rows in results.items() if rows]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = results[stage]
        names = [_switch_name(r) for r in rows]
        bottom = np.zeros(len(rows))
        for key, label, colour in PARTS:
            values = np.array([0.0 if r["oom"] else r[key] / MB for r in rows])
            ax.bar(range(len(rows)), values, bottom=bottom, color=colour, label=label)
            bottom += values
        for i, r in enumerate(rows):
            if r["oom"]:
                ax.text(i, 0, "OOM", ha="center", va="bottom", color="red")
        ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=7)
        size = "x".join(map(str, rows[0]["size"]))
        ax.set_title(f"{stage} ({size})", fontsize=9)
        ax.set_ylabel("MB" if ax is axes[0][0] else "")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _outline(ax, labels: np.ndarray, style: str = "-") -> None:
    for value, colour in STRUCTURE_COLOURS.items():
        m = labels == value
        if m.any() and not m.all():
            ax.contour(m.T.astype(float), levels=[0.5], colors=colour, linewidths=0.8, linestyles=style)


def orthogonal_slices(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], titles: Sequence[str],
                      predictions: Sequence[np.ndarray] | None = None, centre: Sequence[int] | None = None):
    """Rows = volumes; columns = axial (z), coronal (y) and sagittal (x) slices through `centre` (default: the
    centre of the heart mask) with the mask outlined (solid) and, when given, a segmentation (dashed).

    images, masks, predictions: (X, Y, Z) each; titles: one per row (e.g. the id and its Dice).
    """
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i, (img, mask) in enumerate(zip(images, masks)):
        img, mask = np.asarray(img), np.asarray(mask)
        if centre is not None:
            c = list(centre)
        elif (mask > 0).any():
            c = [int(round(v)) for v in np.argwhere(mask > 0).mean(0)]
        else:
            c = [s // 2 for s in mask.shape]
        views = [(img[:, :, c[2]], mask[:, :, c[2]], "axial"), (img[:, c[1], :], mask[:, c[1], :], "coronal"),
                 (img[c[0], :, :], mask[c[0], :, :], "sagittal")]
        pred_views = None
        if predictions is not None:
            p = np.asarray(predictions[i])
            pred_views = [p[:, :, c[2]], p[:, c[1], :], p[c[0], :, :]]
        for j, (im, lab, name) in enumerate(views):
            ax = axes[i][j]
            ax.imshow(im.T, cmap="gray", vmin=-1, vmax=1, origin="lower")
            _outline(ax, lab)
            if pred_views is not None:
                _outline(ax, pred_views[j], "--")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{titles[i]} · {name}" if j == 0 else name, fontsize=8)
    handles = [plt.Line2D([], [], color=c, label=LABELS[v]) for v, c in STRUCTURE_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def dice_bars(dice: Mapping[str, Mapping[str, float]], title: str = "adherence: Dice per structure"):
    """Grouped bars of Dice per structure, one group member per setting (e.g. conditional vs unconditional)."""
    settings = list(dice)
    names = [k for k in dice[settings[0]] if k != "mean"]
    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.8 / len(settings)
    for k, s in enumerate(settings):
        ax.bar(np.arange(len(names)) + k * width, [dice[s][n] for n in names], width, label=s)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
