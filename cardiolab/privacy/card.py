"""`audit report`: one audit card per profile (runs/<profile>/audit/card.md) and the report's privacy section.

The card gathers the audit JSONs of runs/<profile>/audit/: a copy audit of every synthetic cohort in
runs/<profile>/samples/* (the DiT, the baselines and DP runs; made here when missing), membership inference
(mia-*.json from `audit mia`), the planted-copy check, canary recall and the memorization sweep, with the
thresholds used, the figures and the command behind each number.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from cardiolab.core import CardiolabError, atomic_path, read_json
from cardiolab.data.cines import cine_cohorts
from cardiolab.plots import save_figure
from cardiolab.plots.audits import plot_dcr
from cardiolab.privacy.audit import audit_copies
from cardiolab.privacy.copies import check_percentile
from cardiolab.privacy.embeddings import check_embedding, default_embedding
from cardiolab.profiles import AUDIT_DIR, Profile

log = logging.getLogger(__name__)

CARD = "card.md"


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _read(path: Path) -> dict | None:
    try:
        r = read_json(path)
    except CardiolabError:
        return None
    return r if isinstance(r, dict) else None


def _audits(audit_dir: Path, pattern: str, kind: str):
    """(path, record) of every audit JSON in audit_dir matching `pattern` whose "kind" is `kind`, by name."""
    for path in sorted(audit_dir.glob(pattern)):
        r = _read(path)
        if r and r.get("kind") == kind:
            yield path, r


def copies_rows(audit_dir: Path) -> list[dict]:
    """One row per copy-audit JSON (copies*.json) in audit_dir."""
    rows = []
    for path, r in _audits(audit_dir, "copies*.json", "cardiolab-audit-copies"):
        d = r["distances"]
        rows.append({"cohort": Path(r["synthetic"]).name, "embedding": r["embedding"], "tau": r["threshold"],
                     "percentile": r["percentile"],
                     "FPR bound %": r.get("calibration", {}).get("fpr_bound"),
                     "references": r.get("calibration", {}).get("n_reference"), "copies %": r["copy_fraction"],
                     "memorized %": r["memorized_fraction"], "nearer train %": d["share_nearer_train"],
                     "expected %": d["share_expected"], "DCR syn median": d["dcr_synthetic_train"]["median"],
                     "DCR hold median": d["dcr_holdout_train"]["median"],
                     "NNDR syn median": d["nndr_synthetic_train"]["median"], "Mann-Whitney p": d["mannwhitney_p"],
                     "planted recall %": r.get("planted", {}).get("recall"),
                     "planted FPR %": r.get("planted", {}).get("fpr"), "json": path.name})
    return rows


def mia_rows(audit_dir: Path) -> list[dict]:
    """One row per (run, attack) of the mia-*.json in audit_dir."""
    rows = []
    for path, r in _audits(audit_dir, "mia-*.json", "cardiolab-audit-mia"):
        eps = r["dp"]["epsilon"] if r.get("dp") else None
        for name, a in r["attacks"].items():
            point = a.get("operating_points_ci95", {}).get("1%")
            rows.append({"run": Path(r["run"]).name, "attack": name, "AUC": a["auc"],
                         "AUC 95% CI": "[" + ", ".join(_fmt(x) for x in a["auc_ci95"]) + "]",
                         "TPR@1%": a["tpr_at_fpr"].get("1%"),
                         "TPR@1% 95% CI": ("[" + ", ".join(_fmt(x) for x in point["tpr_ci"]) + "]"
                                           if isinstance(point, dict) else None),
                         "TPR@0.1%": a["tpr_at_fpr"].get("0.1%"),
                         "eps lower bound": a.get("epsilon_lower_bound"),
                         "balanced acc": a["balanced_accuracy"], "members": r["n_members"],
                         "non-members": r["n_nonmembers"], "DP epsilon": eps, "figure": Path(r["figure"]).name})
    return rows


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    cols = list(rows[0])
    return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            + ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows] + [""])


def audit_report(profile: Profile, embedding: str | None = None, percentile: float = 5.0) -> Path:
    """Copy-audit each cohort in runs/<profile>/samples/* that has no copies-<name>.json yet, draw the DCR
    histograms, then write runs/<profile>/audit/card.md. embedding: default copy-detector when its run is trained,
    else pixels. Returns the card's path."""
    percentile = check_percentile(percentile)
    if embedding is not None:
        check_embedding(embedding)
    audit_dir = profile.audit_dir
    if embedding is None:
        embedding = default_embedding(profile)
    for cohort in cine_cohorts(profile.samples_dir):
        out = audit_dir / f"copies-{cohort.name}.json"
        if not out.exists():
            log.info("audit report: copy audit of %s (%s)", cohort, embedding)
            audit_copies(cohort, profile, percentile=percentile, embedding=embedding, out_json=out)
    figures = []
    for path, r in _audits(audit_dir, "copies*.json", "cardiolab-audit-copies"):
        fig_path = audit_dir / "figures" / f"dcr-{path.stem}.png"
        save_figure(plot_dcr(r["distances"]), fig_path, close=True)
        figures.append(fig_path)
    if not audit_dir.is_dir():
        raise CardiolabError(f"{audit_dir}: no audits yet (sample a generator, or run `audit copies` / `audit mia`)")
    lines = card_lines(profile, audit_dir, figures)
    card = audit_dir / CARD
    with atomic_path(card) as tmp:
        tmp.write_text("\n".join(lines))
    return card


def card_lines(profile: Profile, audit_dir: Path, figures: list[Path]) -> list[str]:
    p = profile.name
    md = [f"# Privacy audit card: {p}", "",
          "Numbers on cardiolab's phantom cohort are *phantom* numbers: they show the audits work, not how private "
          "a model trained on patients would be. CPU timings, where any, were taken on shared machines.", "",
          "## Copies, DCR, NNDR", "",
          "A synthetic cine is a copy when its nearest training cine is closer (correlation distance of the "
          "embedding) than tau (Dar et al. 2024), calibrated on unseen scans compared with the same training set: "
          "tau is the k-th smallest unseen -> nearest-training distance of n references (the holdout split, plus "
          "fresh calibration phantoms on phantom data), k the largest rank whose false-positive rate stays <= p % "
          "with --confidence (default 90 %) over the draw of the references ('FPR bound'). Nearer-train share: "
          "expected value without memorization beside it; Mann-Whitney: one-sided, synthetic -> train DCR smaller "
          "than holdout -> train.", "",
          f"Made by: `python -m cardiolab audit report --profile {p}` (one `audit copies --synthetic "
          f"runs/{p}/samples/<model> --json runs/{p}/audit/copies-<model>.json` per cohort); the planted check by "
          f"`audit plant --profile {p} --out runs/{p}/audit/planted` then `audit copies --synthetic "
          f"runs/{p}/audit/planted`.", ""]
    md += _table(copies_rows(audit_dir)) or ["No copy audits.", ""]
    md += ["## Membership inference", "",
           "Members: the run's training latents; non-members: its holdout plus fresh phantoms (seed 7). "
           "TPR at 1 % / 0.1 % FPR only with >= 100 / 1000 non-members; their 95 % intervals are Clopper-Pearson, "
           "AUC's a bootstrap. For DP runs no attack may exceed TPR <= e^eps FPR + delta; an attack counts as beating "
           "it only when TPR's lower end exceeds e^eps times FPR's upper end plus delta, and 'eps lower bound' is "
           "the epsilon those interval ends prove (Jagielski et al. 2020).", "",
           f"Made by: `python -m cardiolab audit mia --profile {p} --run runs/{p}/<dit run> [--reference RUN]`.", ""]
    md += _table(mia_rows(audit_dir)) or ["No membership-inference audits.", ""]
    canary = audit_dir / "canary-recall.json"
    if (r := _read(canary)) is not None:
        md += ["## Canaries", "", "Made by: `audit canaries --out DIR`, `train dit --latents DIR/latents.pt`, "
               "`sample`, `audit copies`, `audit canaries --score COPIES_JSON --canaries DIR`.", ""]
        md += _table([{"group": f"m = {g['m']}", **{k: g[k] for k in ("n", "flagged", "recall")}}
                      for g in r["by_copies"]] + [{"group": "outliers", **r["outliers"]},
                                                  {"group": "control", **r["control"]}])
    for sweep in sorted(audit_dir.glob("sweep-*/sweep.json")):
        if (r := _read(sweep)) is not None:
            md += [f"## Memorization vs steps: {Path(r['run']).name}", "",
                   f"Made by: `train dit --keep-every K`, then `audit sweep {r['run']} --profile {p}`.", ""]
            md += _table([{k: row[k] for k in ("step", "copy_fraction", "memorized_fraction", "share_nearer_train")}
                          for row in r["checkpoints"]])
    figs = figures + sorted(audit_dir.glob("mia-*.png"))
    if figs:
        md += ["## Figures", ""] + [f"- [{f.stem}]({f.relative_to(audit_dir)})" for f in figs] + [""]
    return md


def report_section(run_dir: str | os.PathLike) -> list[str]:
    """Markdown lines of the report's "Privacy audits" section from run_dir/audit; [] when there is none."""
    audit_dir = Path(run_dir) / AUDIT_DIR
    if not audit_dir.is_dir():
        return []
    copies = [{k: r[k] for k in ("cohort", "embedding", "copies %", "memorized %", "nearer train %",
                                 "Mann-Whitney p")} for r in copies_rows(audit_dir)]
    mia = [{k: r[k] for k in ("run", "attack", "AUC", "TPR@1%", "DP epsilon")} for r in mia_rows(audit_dir)]
    if not copies and not mia:
        return []
    card = "audit/card.md" if (audit_dir / CARD).exists() else None
    return (["## Privacy audits", "", "Made by: `python -m cardiolab audit report` (details, thresholds and figures: "
             + (f"[{card}]({card})" if card else "the audit card") + ").", ""] + _table(copies) + _table(mia))
