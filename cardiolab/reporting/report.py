"""Gather a profile's runs into one report: runs/<profile>/report.md, report.csv and figures.

Sources, each optional (a section appears only when its files exist):
* eval/*.json written by `cardiolab.evaluation.evaluate` (marked kind = "cardiolab-evaluate"): one row per model;
* vqgan/recon_*.json (benchmarks/vqgan_recon.py): VQ-GAN reconstruction fidelity;
* eval/utility.json (`cardiolab.evaluation.utility`): segmentation utility, real vs synthetic training;
* eval/evaluator_validation.csv (`cardiolab.evaluation.evaluate.validate_evaluator`);
* any other */bench*.json or bench*.json: flat numbers of benchmarks (e.g. DiT speed);
* audit/*.json (`audit report`, cardiolab.privacy.card): copy audits and membership inference;
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

from cardiolab.core import RUN_CONFIG, CardiolabError, atomic_path, from_record, is_cache, read_json, write_csv
from cardiolab.data.cines import is_phantom
from cardiolab.dp.accounting import cohort_privacy, is_release
from cardiolab.engine import read_metrics
from cardiolab.evaluation.evaluate import load_evaluations, model_table
from cardiolab.io.cohort import samples_record
from cardiolab.plots import save_figure
from cardiolab.plots.evaluation import plot_models
from cardiolab.privacy.card import report_section
from cardiolab.profiles import PROFILES
from cardiolab.reporting.reproduce import read_timings
from cardiolab.tasks import REGISTRY, get_task

log = logging.getLogger(__name__)

def recon_table(run_dir: str | os.PathLike, data: str) -> pd.DataFrame:
    """VQ-GAN reconstruction JSONs (vqgan/recon_*.json): split, n, PSNR, SSIM (+ MS-SSIM if present)."""
    rows = []
    for path in sorted((Path(run_dir) / "vqgan").glob("recon_*.json")):
        r = read_json(path)
        rows.append({"model": "vqgan", "data": data, "split": r.get("split", path.stem[6:]), "n": r.get("n"),
                     "PSNR": r.get("PSNR"), "SSIM": r.get("SSIM"),
                     "MS-SSIM": r.get("MS-SSIM"),
                     "step": r.get("step")})
    return pd.DataFrame(rows).dropna(axis=1, how="all") if rows else pd.DataFrame()


def utility_summary(run_dir: str | os.PathLike, data: str) -> pd.DataFrame:
    """eval/utility*.json (utility.json: notebook 05's cohort; utility-<model>.json: one per generator) as model x
    test (holdout, or the cross-dataset cohort) x setting (real@0.25 = a quarter of the real subjects) x mean
    Dice / HD95 with 95% CI."""
    rows = []
    for path in sorted((Path(run_dir) / "eval").glob("utility*.json")):
        res = read_json(path)
        model = Path(res.get("synthetic_root", "?")).name
        tests = [("holdout", res.get("results", {}))]
        if "cross" in res:
            tests.append((f"cross: {Path(res['cross'].get('test_cohort', '?')).name}",
                          res["cross"].get("results", {})))
        for test, results in tests:
            for setting, per in results.items():
                for metric in ("dice", "hd95"):
                    v = per.get(metric, {}).get("mean", {})
                    rows.append({"model": model, "test": test, "setting": setting, "data": data,
                                 "steps": res.get("steps"), "metric": metric,
                                 "mean": v.get("mean"), "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high")})
    return pd.DataFrame(rows)


def training_table(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per trained model of the registry under run_dir (<run_dir>/<name>/config.json): model, kind,
    parameters, steps, s/step (median of metrics.jsonl), training time (s, summed over the logged windows) and
    s/sample (samples/<name>/samples.json, when sampled)."""
    run_dir = Path(run_dir)
    profile = PROFILES.get(run_dir.resolve().name)
    rows = []
    for name in REGISTRY:
        run = run_dir / name
        if not (run / RUN_CONFIG).exists():
            continue
        task = get_task(name)
        records = [r for r in read_metrics(run) if "s_per_step" in r]
        steps = [r["step"] for r in records]
        train_s = sum(r["s_per_step"] * (s - p) for r, s, p in zip(records, steps, [0] + steps[:-1]))
        meta = samples_record(run_dir / "samples" / name)
        try:
            params = int(task.num_parameters(profile)) if profile is not None else None
        except CardiolabError:
            params = None
        rows.append({"model": name, "kind": task.KIND, "parameters": params, "steps": steps[-1] if steps else None,
                     "s/step": float(pd.Series([r["s_per_step"] for r in records]).median()) if records else None,
                     "training s": train_s if records else None, "s/sample": meta.get("s_per_sample")})
    return pd.DataFrame(rows, columns=["model", "kind", "parameters", "steps", "s/step", "training s", "s/sample"])


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


def data_sources(run_dir: str | os.PathLike) -> list[dict]:
    """The data sources the runs under run_dir trained on, one per prepared cache their config.json files record:
    {"cache", "root", "layout", "phantom"} (cache and root as recorded; phantom from the cache's manifest)."""
    caches = set()
    for conf in sorted(Path(run_dir).rglob("config.json")):
        try:
            record = read_json(conf).get("cache_dir")
        except (CardiolabError, AttributeError):
            continue
        if isinstance(record, str):
            caches.add(record)
    out = []
    for record in sorted(caches):
        path = from_record(record) / "manifest.json"
        manifest = read_json(path) if path.exists() else {}
        source = manifest.get("source", {})
        out.append({"cache": record, "root": source.get("root"), "layout": source.get("layout"),
                    "phantom": bool(manifest) and not manifest.get("profile", {}).get("data_source")})
    return out


def describe_sources(sources: list[dict]) -> str:
    """One line naming the data the runs trained on, for the report's head."""
    if not sources:
        return "Data: no run records a prepared cache yet."
    parts = [f"the embedded phantom ({s['root']}, cache `{s['cache']}`)" if s["phantom"] else
             f"the {s['layout']} cohort `{s['root']}` (cache `{s['cache']}`)" for s in sources]
    return "Data: " + "; ".join(parts) + ("" if len(parts) == 1 else " (runs from several data sources)") + "."


def run_data_label(run_dir: str | os.PathLike) -> str:
    """'phantom' when every run under run_dir trained on the phantom, 'real' when every one on another data source
    (`data_sources`); without runs, the profile's phantom cache decides; else 'unknown'."""
    kinds = {s["phantom"] for s in data_sources(run_dir)}
    if kinds:
        return "unknown" if len(kinds) > 1 else ("phantom" if kinds == {True} else "real")
    name = Path(run_dir).resolve().name
    if name not in PROFILES:
        return "unknown"
    cache = PROFILES[name].cache_dir
    if not is_cache(cache):
        return "unknown"
    return "phantom" if is_phantom(cache) else "real"


def privacy_table(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per DP-sampled cohort under run_dir/samples: its samples.json privacy record (epsilon rdp and prv);
    "release" says whether the guarantee holds as released (no: seeded, replayable noise)."""
    rows = []
    samples = Path(run_dir) / "samples"
    for cohort in sorted(p for p in samples.iterdir() if p.is_dir()) if samples.is_dir() else []:
        if (r := cohort_privacy(cohort)) is None:
            continue
        eps = r.get("epsilon", {})
        rows.append({"cohort": cohort.name, "epsilon (rdp)": eps.get("rdp"), "epsilon (prv)": eps.get("prv"),
                     "delta": r.get("delta"), "sigma": r.get("noise_multiplier"), "q": r.get("sample_rate"),
                     "steps": r.get("steps"), "C": r.get("max_grad_norm"), "N": r.get("n_subjects"),
                     "init": Path(r["init_run"]).name if r.get("init_run") else "scratch",
                     "release": "yes" if is_release(r) else "no (replayable: not DP as released)"})
    return pd.DataFrame(rows)


def time_section(run_dir: str | os.PathLike) -> list[str]:
    """Markdown lines of the "Time" section from run_dir/timings.json (cardiolab.reporting.reproduce); [] when absent."""
    stages = read_timings(run_dir)
    if not stages:
        return []
    columns = ["stage", "seconds", "precision", "cpu_capability"]
    df = pd.DataFrame(stages, columns=columns + (["peak_rss_gib"] if any("peak_rss_gib" in s for s in stages) else []))
    total = float(df["seconds"].sum())
    return ["## Time", "", "Made by: `make reproduce` (runs/<profile>/timings.json): wall seconds of each stage's last "
            "run, the precision `amp=auto` picked, the CPU capability (bf16 is used only where native: an AVX2-only "
            "CPU runs fp32) and, where recorded, the peak resident memory of the stage's largest process (GiB).", "",
            markdown_table(df, digits=6), "",
            f"Total: {total:.0f} s ({total / 60:.1f} min).", ""]


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write run_dir/report.md (+ report.csv of the model table, figures/report_models.png); return report.md."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CardiolabError(f"{run_dir}: no such run folder (train / evaluate something first)")
    out = Path(out) if out else run_dir / "report.md"
    data = run_data_label(run_dir)
    md = [f"# cardiolab report: {run_dir.name}", "", describe_sources(data_sources(run_dir)), "",
          "Numbers labelled *phantom* come from cardiolab's synthetic phantom cohort, not from patients: they show "
          "that the pipeline works, not how well it would do on real CMR.", ""]

    models_md, n_models = _models_section(run_dir, out)
    md += models_md

    trained = training_table(run_dir)
    if len(trained):
        md += ["## Trained models", "",
               "Made by: `python -m cardiolab train <model>` and `sample --run`; s/step from each run's metrics.jsonl, "
               "s/sample from samples.json (wall time on the machine that ran them).", "", markdown_table(trained), ""]

    recon = recon_table(run_dir, data)
    if len(recon):
        md += [f"## VQ-GAN reconstruction ({data})", "",
               f"Made by: `python benchmarks/vqgan_recon.py --run {run_dir / 'vqgan'}`", "", markdown_table(recon), ""]
    util = utility_summary(run_dir, data)
    if len(util):
        md += [f"## Segmentation utility ({data})", "",
               "Made by: `cardiolab.evaluation.utility.utility(profile, synthetic_root)` (notebook 05: utility.json) and "
               "`python -m cardiolab utility --synthetic DIR` (utility-<cohort>.json); mean over structures, 95% CI; "
               "real@f: a fraction f of the real subjects; cross: scored on another cohort; image-only cohorts are "
               "pseudo-labelled by the real-trained segmenter; steps: segmenter steps per run.", "",
               markdown_table(util), ""]
    validation = run_dir / "eval" / "evaluator_validation.csv"
    if validation.exists():
        v = (pd.read_csv(validation).groupby(["degradation", "level", "strength"], sort=False)
             [["FD-cardiolab", "KID-cardiolab"]].mean().reset_index())
        md += [f"## Evaluator validation ({data})", "",
               "Made by: `cardiolab.evaluation.evaluate.validate_evaluator(profile)` (notebook 05). Level 0 = two "
               "halves of the real set; both distances should rise with the level. Means over random half splits.",
               "", markdown_table(v), ""]
    privacy = privacy_table(run_dir)
    if len(privacy):
        md += ["## Differential privacy", "",
               "Made by: `python -m cardiolab train dit-dp ...` then `sample --run RUN` (the run's privacy.json, "
               "copied into samples.json; `python -m cardiolab privacy check RUN` recomputes it). (epsilon, delta) "
               "per private training subject; sigma = noise multiplier, q = Poisson rate, C = clip norm, N = private "
               "subjects.", "", markdown_table(privacy), ""]
    bench = bench_table(run_dir)
    if len(bench):
        md += ["## Benchmarks", "", "Made by: the scripts in `benchmarks/` (file column).", "",
               markdown_table(bench), ""]
    md += report_section(run_dir)
    md += time_section(run_dir)
    figures = sorted(p for p in (run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    if figures:
        md += ["## Figures", ""] + [f"- [{p.stem}](figures/{p.name})" for p in figures] + [""]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(md))
    log.info("wrote %s (%d models)", out, n_models)
    return out


def _models_section(run_dir: Path, out: Path) -> tuple[list[str], int]:
    """The report's model table (every evaluate JSON of the run folder), its CSV and figure: (markdown lines, models)."""
    evaluations = load_evaluations(run_dir)
    models = model_table(evaluations)
    md = ["## Generative models vs real data", ""]
    if len(models):
        write_csv(models, out.with_suffix(".csv"))
        fig = plot_models(models)
        save_figure(fig, run_dir / "figures" / "report_models.png", close=True)
        commands = "; ".join(sorted({f"`{e.get('command', '?')}`" for e in evaluations}))
        md += [f"Made by: {commands}", "",
               "FD-/KID-cardiolab use cardiolab's own self-supervised evaluator (not Inception: not FID); lower is "
               "better. *evaluator valid on real* (evaluate --real): whether that evaluator ranks noisy, blurred and "
               "shuffled copies of the real reference further from it than clean data; when False, FD/KID against "
               "that reference mean little. Consistency and temporal scores are best when *synth* is close to *real* "
               "(a blurry model can "
               "beat real data on slice NCC); volume curve corr: higher is better. PSNR/SSIM/MS-SSIM: paired, "
               "reconstructions and mask-to-image on real masks only; mask Dice: segmenter Dice of two-stage "
               "images against the masks they were made from; mask shape KS: generated vs real masks (mean KS, lower is better). Septal drift (with `evaluate --landmarks RUN`): mean change of "
               "the RVIP septal angle between adjacent slices / consecutive frames, degrees; best when *synth* is close "
               "to *real*.", "",
               markdown_table(models), "", f"Table as CSV: `{out.with_suffix('.csv').name}`", "",
               "![FD and KID per model](figures/report_models.png)", ""]
    else:
        md += ["No evaluation yet (`python -m cardiolab evaluate --synthetic DIR --profile P`).", ""]
    return md, len(models)
