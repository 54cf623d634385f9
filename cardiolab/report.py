"""Gather a profile's runs into one report: runs/<profile>/report.md, report.csv and figures.

Sources, each optional (a section appears only when its files exist):
* eval/*.json written by `cardiolab.evaluate` (marked kind = "cardiolab-evaluate"): one row per model;
* vqgan/recon_*.json (benchmarks/vqgan_recon.py): VQ-GAN reconstruction fidelity;
* eval/utility.json (`cardiolab.metrics.utility`): segmentation utility, real vs synthetic training;
* eval/evaluator_validation.csv (`metrics.features.validate_evaluator`);
* any other */bench*.json or bench*.json: flat numbers of benchmarks (e.g. DiT speed);
* figures/*.png: linked at the end.
Every number is labelled with the data it came from ("phantom" when the real data was cardiolab's
phantom) and every section names the command that made it.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pandas as pd

from cardiolab.core import CardiolabError, atomic_path, read_json

log = logging.getLogger(__name__)

KIND = "cardiolab-evaluate"
# (column in the table, where in an evaluate JSON, lower is better?)
MODEL_COLUMNS = (
    ("FD-cardiolab", ("fidelity", "FD-cardiolab"), True),
    ("KID-cardiolab", ("fidelity", "KID-cardiolab"), True),
    ("KID-cardiolab std", ("fidelity", "KID-cardiolab_std"), True),
    ("FID (user weights)", ("fidelity", "FID"), True),
    ("slice NCC synth", ("consistency", "synthetic", "slice_ncc"), False),
    ("slice NCC real", ("consistency", "real", "slice_ncc"), False),
    ("LV area roughness synth", ("consistency", "synthetic", "lv_area_roughness"), True),
    ("LV area roughness real", ("consistency", "real", "lv_area_roughness"), True),
    ("temporal roughness synth", ("temporal", "synthetic", "temporal_roughness"), True),
    ("temporal roughness real", ("temporal", "real", "temporal_roughness"), True),
    ("periodicity synth", ("temporal", "synthetic", "periodicity"), True),
    ("periodicity real", ("temporal", "real", "periodicity"), True),
    ("volume curve corr synth", ("temporal", "synthetic", "volume_curve_corr"), False),
    ("PSNR", ("reconstruction", "PSNR"), False),
    ("SSIM", ("reconstruction", "SSIM"), False),
    ("MS-SSIM", ("reconstruction", "MS-SSIM"), False),
    ("n real", ("real", "n"), None),
    ("n synth", ("synthetic", "n"), None),
)


def save_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame as CSV, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def _get(d: dict, keys: tuple) -> float | None:
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def load_evaluations(run_dir: str | os.PathLike) -> list[dict]:
    """Every evaluate JSON under run_dir/eval, sorted by model name (other JSONs there are skipped)."""
    out = []
    for path in sorted((Path(run_dir) / "eval").glob("*.json")):
        data = read_json(path)
        if isinstance(data, dict) and data.get("kind") == KIND:
            out.append({**data, "_file": str(path)})
    return sorted(out, key=lambda d: d.get("model", ""))


def model_table(evaluations: list[dict]) -> pd.DataFrame:
    """One row per model: model, data, and the MODEL_COLUMNS that any model has."""
    rows = [{"model": e.get("model", Path(e["_file"]).stem), "data": e.get("data", "unknown"),
             **{col: _get(e, keys) for col, keys, _ in MODEL_COLUMNS}} for e in evaluations]
    df = pd.DataFrame(rows, columns=["model", "data", *[c for c, _, _ in MODEL_COLUMNS]])
    return df.dropna(axis=1, how="all")


def recon_table(run_dir: str | os.PathLike, data: str) -> pd.DataFrame:
    """VQ-GAN reconstruction JSONs (vqgan/recon_*.json): split, n, PSNR, SSIM (+ MS-SSIM if present)."""
    rows = []
    for path in sorted((Path(run_dir) / "vqgan").glob("recon_*.json")):
        r = read_json(path)
        rows.append({"model": "vqgan", "data": data, "split": r.get("split", path.stem[6:]), "n": r.get("n"),
                     "PSNR": r.get("psnr", r.get("PSNR")), "SSIM": r.get("ssim", r.get("SSIM")),
                     "MS-SSIM": r.get("MS-SSIM"),
                     "step": r.get("step")})
    return pd.DataFrame(rows).dropna(axis=1, how="all") if rows else pd.DataFrame()


def utility_summary(run_dir: str | os.PathLike, data: str) -> pd.DataFrame:
    """eval/utility.json as setting x mean Dice / HD95 with 95% CI."""
    path = Path(run_dir) / "eval" / "utility.json"
    if not path.exists():
        return pd.DataFrame()
    res = read_json(path)
    rows = []
    for setting, per in res.get("results", {}).items():
        for metric in ("dice", "hd95"):
            v = per.get(metric, {}).get("mean", {})
            rows.append({"setting": setting, "data": data, "metric": metric, "mean": v.get("mean"),
                         "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high")})
    return pd.DataFrame(rows)


def bench_table(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Flat numeric fields of every bench*.json under run_dir (one row per file)."""
    rows = []
    for path in sorted(set(Path(run_dir).glob("bench*.json")) | set(Path(run_dir).glob("*/bench*.json"))):
        data = read_json(path)
        flat = {k: v for k, v in _flatten(data).items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        rows.append({"file": str(path.relative_to(run_dir)), **flat})
    return pd.DataFrame(rows)


def _flatten(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def markdown_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table (no extra dependency); floats to `digits` significant digits, NaN/None as '-'."""
    def fmt(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        return str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def plot_models(table: pd.DataFrame):
    """FD-cardiolab and KID-cardiolab (with its std as error bar) per model: two bar panels."""
    import matplotlib.pyplot as plt
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
    import matplotlib.pyplot as plt
    import seaborn as sns
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
    import matplotlib.pyplot as plt
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
    import matplotlib.pyplot as plt
    import seaborn as sns
    both = pd.concat([real.assign(cohort="real"), synthetic.assign(cohort="synthetic")], ignore_index=True)
    fig, axes = plt.subplots(1, len(stats), figsize=(3.2 * len(stats), 3.2), squeeze=False)
    for ax, s in zip(axes[0], stats):
        sns.boxplot(data=both, x="structure", y=s, hue="cohort", ax=ax, fliersize=1)
        ax.set_xlabel("")
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def plot_utility(result: dict, metric: str = "dice"):
    """Bars of the utility result (`cardiolab.metrics.utility.utility`): setting x structure, 95% CI error bars."""
    import matplotlib.pyplot as plt
    from cardiolab.metrics.utility import utility_table
    t = utility_table(result)
    t = t[t.metric == metric]
    structures, settings = list(dict.fromkeys(t.structure)), list(dict.fromkeys(t.setting))
    fig, ax = plt.subplots(figsize=(6, 3.4))
    width = 0.8 / len(settings)
    for k, setting in enumerate(settings):
        rows = t[t.setting == setting].set_index("structure").reindex(structures)
        err = [rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]
        ax.bar([i + k * width for i in range(len(structures))], rows["mean"], width, yerr=err, capsize=3, label=setting)
    ax.set_xticks([i + width * (len(settings) - 1) / 2 for i in range(len(structures))], structures)
    ax.set_ylabel(f"{metric} on the real holdout")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_data_label(run_dir: str | os.PathLike) -> str:
    """'phantom' when the profile's prepared cache came from the phantom, else 'real' (or 'unknown')."""
    from cardiolab.profiles import PROFILES
    name = Path(run_dir).resolve().name
    if name not in PROFILES:
        return "unknown"
    from cardiolab.evaluate import is_phantom
    cache = PROFILES[name].cache_dir
    if not (cache / "manifest.json").exists():
        return "unknown"
    return "phantom" if is_phantom(cache) else "real"


def time_section(run_dir: str | os.PathLike) -> list[str]:
    """Markdown lines of the "Time" section from run_dir/timings.json (cardiolab.reproduce); [] when absent."""
    from cardiolab.reproduce import read_timings
    stages = read_timings(run_dir)
    if not stages:
        return []
    df = pd.DataFrame(stages, columns=["stage", "seconds", "precision", "cpu_capability"])
    total = float(df["seconds"].sum())
    return ["## Time", "", "Made by: `make reproduce` (runs/<profile>/timings.json): wall seconds of each stage's last "
            "run, the precision `amp=auto` picked and the CPU capability (bf16 is used only where native: an AVX2-only "
            "CPU runs fp32).", "", markdown_table(df, digits=6), "",
            f"Total: {total:.0f} s ({total / 60:.1f} min).", ""]


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write run_dir/report.md (+ report.csv of the model table, figures/report_models.png); return report.md."""
    from cardiolab.plots import save_figure
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CardiolabError(f"{run_dir}: no such run folder (train / evaluate something first)")
    out = Path(out) if out else run_dir / "report.md"
    data = run_data_label(run_dir)
    md = [f"# cardiolab report: {run_dir.name}", "",
          "Numbers labelled *phantom* come from cardiolab's synthetic phantom cohort, not from patients: they show "
          "that the pipeline works, not how well it would do on real CMR.", ""]

    evaluations = load_evaluations(run_dir)
    models = model_table(evaluations)
    md += ["## Generative models vs real data", ""]
    if len(models):
        save_table(models, out.with_suffix(".csv"))
        fig = plot_models(models)
        save_figure(fig, run_dir / "figures" / "report_models.png", close=True)
        commands = "; ".join(sorted({f"`{e.get('command', '?')}`" for e in evaluations}))
        md += [f"Made by: {commands}", "",
               "FD-/KID-cardiolab use cardiolab's own self-supervised evaluator (not Inception: not FID); lower is "
               "better. Consistency and temporal scores are best when *synth* is close to *real* (a blurry model can "
               "beat real data on slice NCC); volume curve corr: higher is better. PSNR/SSIM/MS-SSIM: paired, "
               "reconstructions only.", "",
               markdown_table(models), "", f"Table as CSV: `{out.with_suffix('.csv').name}`", "",
               "![FD and KID per model](figures/report_models.png)", ""]
    else:
        md += ["No evaluation yet (`python -m cardiolab evaluate --synthetic DIR --profile P`).", ""]

    recon = recon_table(run_dir, data)
    if len(recon):
        md += [f"## VQ-GAN reconstruction ({data})", "",
               f"Made by: `python benchmarks/vqgan_recon.py --run {run_dir / 'vqgan'}`", "", markdown_table(recon), ""]
    util = utility_summary(run_dir, data)
    if len(util):
        md += [f"## Segmentation utility ({data})", "",
               "Made by: `cardiolab.metrics.utility.utility(profile, synthetic_root)` (notebook 05); mean over "
               "structures, 95% CI.", "", markdown_table(util), ""]
    validation = run_dir / "eval" / "evaluator_validation.csv"
    if validation.exists():
        v = (pd.read_csv(validation).groupby(["degradation", "level", "strength"], sort=False)
             [["FD-cardiolab", "KID-cardiolab"]].mean().reset_index())
        md += [f"## Evaluator validation ({data})", "",
               "Made by: `cardiolab.metrics.features.validate_evaluator(profile)` (notebook 05). Level 0 = two "
               "halves of the real set; both distances should rise with the level. Means over random half splits.",
               "", markdown_table(v), ""]
    bench = bench_table(run_dir)
    if len(bench):
        md += ["## Benchmarks", "", "Made by: the scripts in `benchmarks/` (file column).", "",
               markdown_table(bench), ""]
    md += time_section(run_dir)
    figures = sorted(p for p in (run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    if figures:
        md += ["## Figures", ""] + [f"- [{p.stem}](figures/{p.name})" for p in figures] + [""]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(md))
    log.info("wrote %s (%d models)", out, len(models))
    return out
