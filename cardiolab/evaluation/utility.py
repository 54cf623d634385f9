"""Downstream utility of a synthetic cohort: does it help train a segmenter that works on real cines?

The same segmenter (`cardiolab.tasks.segmenter`) is trained on (a) the real public split, (b) the synthetic
cohort, (c) both, for several seeds, and tested on the real holdout split: Dice and HD95 (mm) per structure
(MONAI DiceMetric / HausdorffDistanceMetric), with 95% confidence intervals over seeds (t-interval; with one
seed, a bootstrap over test subjects).

Synthetic cines need labels. A cohort with labels (label series or ED/ES masks, e.g. from a two-stage
mask-conditioned generator) is used as is; image-only subjects (CardioDiT samples) are pseudo-labelled by the
real-trained segmenter of seed 0, and the result says so in "synthetic_labels".
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from cardiolab.core import MANIFEST, SCORES, CardiolabError, read_json, write_json
from cardiolab.data.cines import cohort_volumes
from cardiolab.data.prepare import ensure_prepared
from cardiolab.engine import ensure_run
from cardiolab.metrics.segmentation import STRUCTURES, bootstrap_ci, mean_ci
from cardiolab.profiles import Profile
from cardiolab.tasks import segmenter as seg

log = logging.getLogger(__name__)

SETTINGS = ("real", "synthetic", "real+synthetic")
PSEUDO = "pseudo (segmenter trained on real public split)"


def _summarise(scores: list[dict]) -> dict:
    """Per-seed scores.json contents -> {"dice": {RV: {mean, ci_low, ci_high, per_seed}, ...}, "hd95": ...}."""
    out = {}
    for metric in ("dice", "hd95"):
        out[metric] = {}
        for name in (*STRUCTURES, "mean"):
            per_seed = [s[metric][name] for s in scores]
            if len(scores) >= 2:
                mean, lo, hi = mean_ci(per_seed)
            else:   # one seed: bootstrap over test subjects
                subj = [r[f"{metric}_{name}"] if name != "mean" else
                        np.nanmean([r[f"{metric}_{n}"] for n in STRUCTURES]) for r in scores[0]["per_subject"]]
                mean, lo, hi = bootstrap_ci(subj)
            out[metric][name] = {"mean": mean, "ci_low": lo, "ci_high": hi, "per_seed": per_seed}
    return out


def utility(profile: Profile, synthetic_root: str | os.PathLike,
            out_json: str | os.PathLike | None = None, seeds: int | Sequence[int] | None = None,
            steps: int | None = None, cache_dir: str | os.PathLike | None = None,
            run_root: str | os.PathLike | None = None, fractions: Sequence[float] = (1.0,),
            test_cohort: str | os.PathLike | None = None) -> dict:
    """Train on real / synthetic / real+synthetic, test on the real holdout split; write and return the result.

    fractions: shares of the real public subjects (the limited-data setting, e.g. (0.25, 0.5, 1.0)); each
    fraction f < 1 adds the settings "real@f" and "real+synthetic@f" (the first round(f * N) subjects of a
    seeded permutation of the public ids, at least one). test_cohort: an ACDC-layout cohort from another
    "site" (e.g. `phantom --seed 1 --snr 6,10`, or M&Ms) on which every run is also scored: result["cross"].

    synthetic_root: ACDC-layout synthetic cohort. seeds: a count or list (default profile.eval.utility_seeds).
    steps: segmenter steps per run (default profile.eval.seg_steps). run_root: where the training runs go
    (default <run_dir>/eval/utility; real-only runs are shared, the others go to <run_root>/<cohort name>/).
    out_json default: <run_dir>/eval/utility.json.
    Returns {"profile", "synthetic_root", "synthetic_labels", "test_split", "n_test", "n_train", "seeds",
    "steps", "ci", "results": {setting: {"dice": {RV|MYO|LV|mean: {mean, ci_low, ci_high, per_seed}},
    "hd95": ...}}}.
    """
    seeds = list(seeds) if isinstance(seeds, (list, tuple)) else list(range(seeds or profile.eval.utility_seeds))
    if not seeds:
        raise CardiolabError("utility: at least one seed is needed")
    cache = Path(cache_dir) if cache_dir is not None else ensure_prepared(profile)
    run_root = Path(run_root) if run_root is not None else profile.eval_dir / "utility"
    out_json = Path(out_json) if out_json is not None else profile.eval_dir / "utility.json"

    def train(setting: str, seed: int, **data) -> Path:
        out = run_root / f"{setting.replace('+', '_')}-seed{seed}"
        if "cohort" in data:     # one folder per synthetic cohort, so cohorts can be scored side by side
            out = run_root / Path(synthetic_root).name / out.name
            return seg.train(profile, out=out, steps=steps, seed=seed, cache_dir=cache, evaluate_on="holdout", **data)
        # real subjects only: the same run serves every synthetic cohort, so it is trained once (staleness rule)
        subjects = data["subjects"] if isinstance(data["subjects"], str) else list(data["subjects"])
        return ensure_run(out, steps or profile.eval.seg_steps,
                          seg.shaping(profile, seed, cache, {"subjects": subjects}, steps),
                          lambda resume: seg.train(profile, out=out, resume=resume, steps=steps, seed=seed,
                                                   cache_dir=cache, evaluate_on="holdout", subjects=subjects),
                          require=(SCORES,))

    fractions = sorted({float(f) for f in fractions})
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise CardiolabError(f"utility: fractions must lie in (0, 1], got {fractions}")
    public = sorted(read_json(cache / MANIFEST)["splits"]["public"])
    subsets = {f: fraction_ids(public, f) for f in fractions if f < 1}
    settings = [*SETTINGS, *[f"{s}@{f:g}" for f in subsets for s in ("real", "real+synthetic")]]
    runs = {s: {} for s in settings}
    if seeds[0] == 0 and steps is None and cache_dir is None:   # the same run as the profile's own segmenter
        runs["real"][0] = seg.ensure(profile)
    else:
        runs["real"][seeds[0]] = train("real", seeds[0], subjects="public")   # first: it pseudo-labels
    synth, labels = _labelled_synthetic(synthetic_root, profile, runs["real"][seeds[0]])
    data = {"real": dict(subjects="public"), "synthetic": dict(cohort=synth),
            "real+synthetic": dict(subjects="public", cohort=synth)}
    for f, ids in subsets.items():
        data[f"real@{f:g}"] = dict(subjects=ids)
        data[f"real+synthetic@{f:g}"] = dict(subjects=ids, cohort=synth)
    for seed in seeds:
        for setting in settings:
            if seed not in runs[setting]:
                runs[setting][seed] = train(setting, seed, **data[setting])

    scores = {s: [read_json(runs[s][seed] / SCORES) for seed in seeds] for s in settings}
    manifest = read_json(cache / MANIFEST)
    result = {
        "profile": profile.name, "synthetic_root": str(synthetic_root), "synthetic_labels": labels,
        "test_split": "holdout", "n_test": scores["real"][0]["n_subjects"],
        "n_train": {"real": len(manifest["splits"]["public"]), "synthetic": len(synth),
                    **{f"real@{f:g}": len(ids) for f, ids in subsets.items()}},
        "fractions": fractions,
        "seeds": seeds, "steps": steps if steps is not None else profile.eval.seg_steps,
        "ci": "95% t-interval over seeds" if len(seeds) >= 2 else "95% bootstrap over test subjects",
        "results": {s: _summarise(scores[s]) for s in settings},
    }
    if test_cohort is not None:
        result["cross"] = _cross_site(test_cohort, profile, runs, seeds)
    write_json(out_json, result)
    return result


def _cross_site(test_cohort: str | os.PathLike, profile: Profile, runs: dict, seeds: list[int]) -> dict:
    """Every run of `utility` scored on a labelled cohort of another site."""
    test = cohort_volumes(test_cohort, profile)
    if not any(bool(v["label_mask"].any()) for v in test):
        raise CardiolabError(f"{test_cohort}: no labels to score a cross-dataset test on")
    cross = {s: [seg.score(seg.load(runs[s][seed]), test) for seed in seeds] for s in runs}
    return {"test_cohort": str(test_cohort), "n_test": cross["real"][0]["n_subjects"],
            "results": {s: _summarise(cross[s]) for s in runs}}


def fraction_ids(ids: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """The first max(1, round(fraction * N)) of a seeded permutation of ids (nested: a smaller fraction's
    subjects are part of every larger one's)."""
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order[:max(1, round(fraction * len(ids)))]]


def _labelled_synthetic(root: str | os.PathLike, profile: Profile, real_run: Path) -> tuple[list[dict], str]:
    """The synthetic cohort's volume records, image-only subjects pseudo-labelled; and how labels were made."""
    synth = cohort_volumes(root, profile)
    unlabelled = [v for v in synth if not v["label_mask"].any()]
    if unlabelled:
        model = seg.load(real_run)
        for v in unlabelled:
            v["labels"] = seg.segment(model, v["image"][None])[0]
            v["label_mask"] = torch.ones_like(v["label_mask"])
    if not unlabelled:
        labels = "provided"
    else:
        labels = PSEUDO if len(unlabelled) == len(synth) else f"mixed: {len(unlabelled)} of {len(synth)} {PSEUDO}"
    log.info("utility: %d synthetic subjects, labels %s", len(synth), labels)
    return synth, labels


def utility_table(result: dict) -> pd.DataFrame:
    """The `utility` result as a long table: test (holdout | cross), setting, metric, structure, mean, ci_low,
    ci_high."""
    tests = [("holdout", result["results"])] + ([("cross", result["cross"]["results"])] if "cross" in result else [])
    rows = [{"test": test, "setting": setting, "metric": metric, "structure": name,
             **{k: v[k] for k in ("mean", "ci_low", "ci_high")}}
            for test, results in tests for setting, res in results.items() for metric, per in res.items()
            for name, v in per.items()]
    return pd.DataFrame(rows)
