"""Figures of DP fine-tuning (notebook 06): per-sample gradient norms around the clip, quality and measured
leakage vs epsilon."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cardiolab.data.cines import load_cines
from cardiolab.profiles import Profile


def plot_grad_norms(norms: dict, title: str = "per-subject gradient norms"):
    """Histogram of per-sample gradient norms before and after clipping, C marked. norms: dp.mechanism's
    per_sample_grad_norms result {"before", "after", "C"}."""
    before, after, C = np.asarray(norms["before"]), np.asarray(norms["after"]), float(norms["C"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    top = max(float(before.max()), C) * 1.05
    bins = np.linspace(0, top, 30)
    ax.hist(before, bins=bins, alpha=0.6, label=f"before clipping (median {np.median(before):.3g})")
    ax.hist(after, bins=bins, alpha=0.6, label="after clipping")
    ax.axvline(C, color="k", ls="--", lw=1, label=f"C = {C:g}")
    ax.set_xlabel("L2 norm of one subject's gradient")
    ax.set_ylabel("subjects")
    ax.set_title(f"{title} ({(before > C).mean():.0%} clipped)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_quality_vs_epsilon(table: pd.DataFrame, metrics=("FD-cardiolab", "KID-cardiolab", "EF_W1")):
    """One panel per metric: value vs epsilon (log axis; inf drawn at the right edge), one line per init.
    table: rows with columns epsilon, init ('pre-trained' | 'scratch') and the metrics."""
    metrics = [m for m in metrics if m in table.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    finite = table["epsilon"][np.isfinite(table["epsilon"])]
    inf_at = (finite.max() * 4) if len(finite) else 100.0
    for ax, metric in zip(axes[0], metrics):
        for init, part in table.groupby("init", sort=False):
            x = np.where(np.isfinite(part["epsilon"]), part["epsilon"], inf_at)
            order = np.argsort(x)
            ax.plot(x[order], part[metric].to_numpy()[order], "o-", label=init)
        ax.set_xscale("log")
        ax.set_xlabel("epsilon (inf at the right)")
        ax.set_title(metric)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_leakage_vs_epsilon(leak: pd.DataFrame):
    """Membership-inference AUC and TPR at 1 % FPR vs epsilon with their 95 % intervals, one line per attack, and
    the epsilon the intervals prove beside the accountant's (the diagonal). leak: `experiments.leakage_table`."""
    fig, axes = plt.subplots(1, 3, figsize=(10.8, 3.2))
    finite = leak["epsilon"][np.isfinite(leak["epsilon"])]
    inf_at = (finite.max() * 4) if len(finite) else 100.0
    lo = float(finite.min()) if len(finite) else 1.0
    for (attack, init), part in leak.groupby(["attack", "init"], sort=False):
        part = part.assign(x=np.where(np.isfinite(part["epsilon"]), part["epsilon"], inf_at)).sort_values("x")
        label = f"{attack}, {init}"
        for ax, col in zip(axes[:2], ("AUC", "TPR@1%")):
            err = np.clip([part[col] - part[f"{col} lo"], part[f"{col} hi"] - part[col]], 0, None)  # a bootstrap
            ax.errorbar(part["x"], part[col], yerr=err, marker="o", capsize=3, label=label)   # may miss its point
        axes[2].plot(part["x"], part["eps lower bound"], marker="o", label=label)
    axes[0].axhline(0.5, color="k", ls=":", lw=1)
    axes[1].axhline(0.01, color="k", ls=":", lw=1)
    axes[2].plot([lo, inf_at], [lo, inf_at], "k:", lw=1, label="accountant epsilon")
    for ax, name in zip(axes, ("MIA AUC (95 % CI)", "TPR at 1 % FPR (95 % CI)", "epsilon proven by the attack")):
        ax.set_xscale("log")
        ax.set_xlim(lo / 2, inf_at * 2)      # also when a panel has no finite value (TPR@1 % needs 100 non-members)
        ax.set_xlabel("target epsilon (right edge: inf)")
        ax.set_title(name, fontsize=9)
    axes[2].set_yscale("symlog", linthresh=0.1)
    axes[2].set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_group_samples(cohorts: dict, profile: Profile, frame: int = 0):
    """One sample per conditioned group: the middle slice at `frame` of each cohort's first study.
    cohorts: {group: cohort folder} (e.g. controllability's runs/<profile>/eval/<run>-groups/<group>)."""
    fig, axes = plt.subplots(1, len(cohorts), figsize=(2.2 * len(cohorts), 2.4), squeeze=False)
    for ax, (group, cohort) in zip(axes[0], cohorts.items()):
        images = load_cines(cohort, profile).images                    # (N, D, H, W, T)
        ax.imshow(images[0, images.shape[1] // 2, :, :, frame].numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(group)
        ax.axis("off")
    fig.tight_layout()
    return fig
