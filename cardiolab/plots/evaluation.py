"""Figures of evaluation: FD/KID per model, function and shape distributions, agreement, utility, the
evaluator's validation. Each function returns a matplotlib Figure; save it with `cardiolab.plots.save_figure`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def plot_models(table: pd.DataFrame):
    """FD-cardiolab and KID-cardiolab (with its std as error bar) per model: two bar panels."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, col in zip(axes, ("FD-cardiolab", "KID-cardiolab")):
        err = table.get("KID-cardiolab std") if col == "KID-cardiolab" else None
        ax.bar(table["model"], table[col], yerr=err, capsize=4, color="tab:blue")
        ax.set_title(f"{col} ({', '.join(sorted(set(table['data'])))}), lower is better")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def plot_function_distributions(real: pd.DataFrame, synthetic: pd.DataFrame,
                                metrics: tuple[str, ...] = ("EDV", "ESV", "EF", "LV_mass", "RV_EF")):
    """Violins of cardiac function, real vs synthetic, one panel per metric (tables of `function_table`)."""
    metrics = [m for m in metrics if m in real.columns and m in synthetic.columns]
    both = pd.concat([real.assign(cohort="real"), synthetic.assign(cohort="synthetic")], ignore_index=True)
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.violinplot(data=both, x="cohort", y=m, hue="cohort", ax=ax, cut=0, inner="point", legend=False)
        ax.set_xlabel("")
    fig.tight_layout()
    return fig


def plot_bland_altman(table: pd.DataFrame, a: str = "EF_truth", b: str = "EF_segmenter", unit: str = "%"):
    """Bland-Altman plot of b - a against their mean, with the bias and 95% limits of agreement."""
    mean, diff = (table[a] + table[b]) / 2, table[b] - table[a]
    bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(mean, diff, s=18, color="k")
    limits = ((bias, "-", "bias"), (bias + 1.96 * sd, "--", "+1.96 SD"), (bias - 1.96 * sd, "--", "-1.96 SD"))
    for y, style, label in limits:
        ax.axhline(y, linestyle=style, color="tab:red", linewidth=1, label=f"{label} {y:.2f}")
    ax.set_xlabel(f"mean of {a} and {b} ({unit})")
    ax.set_ylabel(f"{b} - {a} ({unit})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_shape_stats(real: pd.DataFrame, synthetic: pd.DataFrame,
                     stats: tuple[str, ...] = ("area", "eccentricity", "roundness", "solidity")):
    """Box plots of mask shape statistics per structure, real vs synthetic (tables of `shape_table`)."""
    both = pd.concat([real.assign(cohort="real"), synthetic.assign(cohort="synthetic")], ignore_index=True)
    fig, axes = plt.subplots(1, len(stats), figsize=(3.2 * len(stats), 3.2), squeeze=False)
    for ax, s in zip(axes[0], stats):
        sns.boxplot(data=both, x="structure", y=s, hue="cohort", ax=ax, fliersize=1)
        ax.set_xlabel("")
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def plot_utility(table: pd.DataFrame, metric: str = "dice", test: str = "holdout"):
    """Bars of the utility table (`cardiolab.evaluation.utility.utility_table`): setting x structure, 95% CI error bars.

    test: 'holdout' (the real holdout split) or 'cross' (the cross-dataset test cohort)."""
    t = table[table.metric == metric]
    if "test" in t:
        t = t[t.test == test]
    structures, settings = list(dict.fromkeys(t.structure)), list(dict.fromkeys(t.setting))
    fig, ax = plt.subplots(figsize=(6, 3.4))
    width = 0.8 / len(settings)
    for k, setting in enumerate(settings):
        rows = t[t.setting == setting].set_index("structure").reindex(structures)
        err = [rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]
        ax.bar([i + k * width for i in range(len(structures))], rows["mean"], width, yerr=err, capsize=3, label=setting)
    ax.set_xticks([i + width * (len(settings) - 1) / 2 for i in range(len(structures))], structures)
    ax.set_ylabel(f"{metric} on the real holdout" if test == "holdout" else f"{metric} on the cross-dataset cohort")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_validation(df):
    """Two panels (FD, KID), one line per degradation against its level (mean over the half splits; symlog y)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("FD-cardiolab", "KID-cardiolab")):
        sns.lineplot(data=df, x="level", y=metric, hue="degradation", marker="o", errorbar=None, ax=ax)
        ax.set_xticks(range(int(df.level.max()) + 1))
        ax.set_xlabel("degradation level (0 = two clean halves)")
        ax.set_yscale("symlog", linthresh=0.1 if metric.startswith("FD") else 0.01)  # shuffles dwarf the rest
        ax.set_title(f"{metric} vs degradation")
    fig.tight_layout()
    return fig
