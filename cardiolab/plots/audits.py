"""Privacy-audit figures: copy calibration, planted-copy ROC, DCR histograms, membership-inference ROCs,
canary recall and memorization against training steps. Inputs are the audits' JSON records (or their arrays);
every function returns a matplotlib Figure, `save_mia_roc` also writes it."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from cardiolab.metrics.privacy import dp_tpr_bound, roc_curve
from cardiolab.plots import save_figure


def plot_calibration(calibration: dict):
    """Histogram of the unseen reference scans' distances to their nearest training scan and the copy threshold
    tau (the `calibration` part of an `audit copies` record: dcr_reference, threshold, rank, fpr_bound)."""
    c = calibration
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.hist(np.asarray(c["dcr_reference"]), bins=20, color="tab:gray")
    label = f"tau = no. {c['rank']} of {c['n_reference']} = {c['threshold']:.3g} (FPR <= {c['fpr_bound']:.1f} %)"
    if c.get("confidence"):
        label = label[:-1] + f" at {c['confidence']:.0%})"
    ax.axvline(c["threshold"], color="tab:red", ls="--", label=label)
    ax.set(xlabel="correlation distance to nearest training scan", ylabel="unseen scans",
           title="copy threshold calibration")
    ax.legend(fontsize=8)
    return fig


def plot_planted_roc(copies: dict, planted: dict):
    """ROC of the nearest-training distance as a copy score on a planted cohort: an `audit copies` record and
    the cohort's planted.json ({synthetic id: training id or None})."""
    per = copies["per_synthetic"]
    score = -np.array([p["distance"] for p in per])
    truth = np.array([planted[p["id"]] is not None for p in per])
    fpr, tpr, _ = roc_curve(score, truth)
    fig, ax = plt.subplots(figsize=(4, 4), layout="constrained")
    ax.plot(fpr, tpr, label=copies.get("embedding", ""))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    p = copies["planted"]
    ax.plot(p["fpr"] / 100, p["recall"] / 100, "ro", label="at tau")
    ax.set(xlabel="false-positive rate (non-members)", ylabel="recall (planted copies)", title="planted-copy ROC")
    ax.legend(fontsize=8)
    return fig


def plot_dcr(distances: dict):
    """DCR histograms: synthetic -> train against holdout -> train (the `distances` part of `audit copies`)."""
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    d = distances
    bins = np.histogram_bin_edges(np.r_[d["dcr_synthetic"], d["dcr_holdout"]], bins=20)
    ax.hist(d["dcr_synthetic"], bins=bins, alpha=0.6, density=True, label="synthetic -> train")
    ax.hist(d["dcr_holdout"], bins=bins, alpha=0.6, density=True, label="holdout -> train")
    ax.set(xlabel="distance to closest training record", ylabel="density",
           title=f"DCR (Mann-Whitney p = {d['mannwhitney_p']:.3g})")
    ax.legend(fontsize=8)
    return fig


def plot_mia_result(result: dict):
    """The log-log ROC of an `audit mia` record (its "roc" curves and, for a DP run, its bound)."""
    dp = result.get("dp")
    return plot_mia_roc({k: (np.asarray(v["fpr"]), np.asarray(v["tpr"])) for k, v in result["roc"].items()},
                        None if not dp else (dp["epsilon"], dp["delta"]))


def save_mia_roc(curves: dict, path: str | os.PathLike, dp: tuple[float, float] | None = None):
    fig = plot_mia_roc(curves, dp)
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_canary_recall(canaries: dict):
    """Share of canaries flagged, per duplication count m (an `audit canaries` score record)."""
    rows = canaries["by_copies"]
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    ax.bar([str(r["m"]) for r in rows], [r["recall"] for r in rows], color="tab:orange")
    ax.set(xlabel="copies of the canary in training (m)", ylabel="flagged (%)", ylim=(0, 100),
           title="canary recall")
    return fig


def plot_memorization_vs_steps(sweep: dict):
    """Copy and memorized fractions of each kept checkpoint (an `audit sweep` record)."""
    rows = sweep["checkpoints"]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.plot(steps, [r["copy_fraction"] for r in rows], "o-", label="synthetic copies")
    ax.plot(steps, [r["memorized_fraction"] for r in rows], "s--", label="training memorized")
    ax.set(xlabel="training step", ylabel="%", title="memorization vs training length")
    ax.legend(fontsize=8)
    return fig


def plot_top_pairs(pairs: list[dict]):
    """Each suspected pair (`privacy.audit.top_pairs`): synthetic and nearest training cine, middle slice, ED."""
    fig, axes = plt.subplots(2, max(1, len(pairs)), figsize=(2.2 * max(1, len(pairs)), 4.6), squeeze=False,
                             layout="constrained")
    for j, p in enumerate(pairs):
        for i, (key, name) in enumerate((("synthetic", p["id"]), ("train", p["train_id"]))):
            x = np.asarray(p[key])
            axes[i, j].imshow(x[x.shape[0] // 2, :, :, 0], cmap="gray", vmin=-1, vmax=1)
            axes[i, j].set_title(f"{name}" + (f"\nd = {p['distance']:.3g}" if i == 0 else ""), fontsize=7)
            axes[i, j].axis("off")
    fig.suptitle("top suspected copies (top: synthetic, bottom: nearest training cine)", fontsize=8)
    return fig


def plot_mia_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], dp: tuple[float, float] | None = None):
    """Log-log ROC of each attack {name: (fpr, tpr)}, the chance diagonal and, for a DP run, the (eps, delta) bound.

    Log axes show the low-FPR corner where privacy attacks matter; zero rates are drawn at 1e-4.
    Returns the matplotlib Figure.
    """
    floor = 1e-4
    fig, ax = plt.subplots(figsize=(4, 4), layout="constrained")
    grid = np.logspace(np.log10(floor), 0, 200)
    ax.plot(grid, grid, "k:", lw=1, label="chance")
    for name, (fpr, tpr) in curves.items():
        ax.step(np.maximum(fpr, floor), np.maximum(tpr, floor), where="post", label=name)
    if dp is not None:
        eps, delta = dp
        ax.plot(grid, dp_tpr_bound(grid, eps, delta), "r--", lw=1, label=f"DP bound (eps={eps:g}, delta={delta:g})")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.05), xlabel="false-positive rate",
           ylabel="true-positive rate", title="membership inference ROC")
    ax.legend(fontsize=7, loc="lower right")
    return fig
