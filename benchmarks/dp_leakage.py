"""Measured leakage of the DP fine-tuning grid: per epsilon, membership inference (AUC, TPR at 1 % FPR, with
intervals) and the one-run empirical epsilon lower bound, beside the accountant's epsilon. Phantom data.

Per epsilon, in order, each stage reused when already done (kill and rerun to resume):
  1. `dit-dp` fine-tune of the public DiT on the private phantom cohort (runs/<p>/dit-dp-eps<e>-pre-trained);
  2. its own samples (runs/<p>/samples/<run name>), for the distance attack;
  3. `audit mia` on it: the profile's mia.fresh fresh non-members, LiRA with mia.references reference models
     (runs/<p>/audit/mia-<run name>.json);
  4. one-run audit (Steinke et al. 2023) of a separate run with canaries (runs/<p>/audit/one-run-eps<e>/one-run.json;
     not at epsilon = inf, which has no accountant to compare with).
After each stage the table so far is written to --json and printed as markdown.

    OMP_NUM_THREADS=1 python benchmarks/dp_leakage.py --profile tiny --epsilons 10,1,inf \
        --set dp.steps=300 dp.batch=16 dp.private_subjects=150 --json runs/bench/dp_leakage-tiny.json
    python benchmarks/dp_leakage.py --profile tiny --data-only    # the phantoms alone (no model needed)
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

from cardiolab.core import machine_info, read_json, write_json
from cardiolab.engine import run_status
from cardiolab.privacy import experiments
from cardiolab.privacy.cohorts import phantom_cohort
from cardiolab.privacy.experiments import Setting
from cardiolab.privacy.lira import shadow_cohort
from cardiolab.privacy.membership import fresh_cines
from cardiolab.profiles import get_profile, override
from cardiolab.tasks.dp import PRIVATE_LATENTS

ATTACKS = ("loss", "calibrated", "lira", "pia", "distance")


def data_only(profile) -> None:
    """Every phantom cohort the grid needs and no model does: private, LiRA's shadows, the fresh non-members."""
    phantom_cohort(profile, "private", profile.dp.private_subjects, 1, (profile.run(PRIVATE_LATENTS),))
    for k in range(profile.mia.references):
        shadow_cohort(profile, k)
    fresh_cines(profile, profile.mia.fresh)


def _row(eps: float, mia: dict | None, one_run: dict | None, seconds: dict) -> dict:
    row = {"epsilon": eps, "seconds": seconds}
    if mia:
        row["accountant_epsilon"] = (mia.get("dp") or {}).get("epsilon", math.inf)
        row["n_members"], row["n_nonmembers"] = mia["n_members"], mia["n_nonmembers"]
        for name in ATTACKS:
            a = mia["attacks"].get(name)
            if a:
                p = a["operating_points_ci95"].get("1%")
                row[name] = {"auc": a["auc"], "auc_ci95": a["auc_ci95"],
                             "tpr_1%": p if isinstance(p, dict) else None,
                             "epsilon_lower_bound": a.get("epsilon_lower_bound")}
    if one_run:
        row["one_run"] = {k: one_run[k] for k in ("epsilon_lower_bound", "m", "k", "guesses", "correct", "epsilon")}
    return row


def markdown(rows: list[dict]) -> str:
    out = ["| epsilon | attack | AUC [95 % CI] | TPR@1 % FPR [95 % CI] | one-run eps lower bound (95 %) |",
           "|---|---|---|---|---|"]
    for r in rows:
        one = r.get("one_run")
        bound = f"{one['epsilon_lower_bound']:.3f} ({one['correct']}/{one['guesses']} of m={one['m']})" if one else "-"
        for name in ATTACKS:
            a = r.get(name)
            if not a:
                continue
            p = a["tpr_1%"]
            tpr = f"{p['tpr']:.3f} [{p['tpr_ci'][0]:.3f}, {p['tpr_ci'][1]:.3f}]" if p else "n too small"
            out.append(f"| {r['epsilon']:g} | {name} | {a['auc']:.3f} [{a['auc_ci95'][0]:.3f}, {a['auc_ci95'][1]:.3f}]"
                       f" | {tpr} | {bound if name == 'calibrated' else ''} |")
    return "\n".join(out)


def main(args) -> None:
    from cardiolab.privacy.membership import audit_mia
    from cardiolab.privacy.one_run import ONE_RUN_JSON, audit_one_run
    from cardiolab.tasks import dit
    from cardiolab.tasks import dp as dp_task

    profile = override(get_profile(args.profile), args.set)
    if args.data_only:
        data_only(profile)
        return
    private = experiments.private_cohort(profile)
    steps = profile.dp.steps
    rows, out = [], Path(args.json or profile.run_dir.parent / "bench" / f"dp_leakage-{profile.name}.json")
    for eps in (float(e) for e in args.epsilons.split(",")):
        seconds, setting = {}, Setting(eps)
        run = profile.run(setting.name)
        p_eps = override(profile, [f"dp.epsilon={eps}"])
        t0 = time.perf_counter()
        shaping = dp_task.shaping(p_eps, private["latents"], private["public_dit"], 0)
        if run_status(run, steps, {"shaping": shaping}) != "finished":
            experiments.run_setting(profile, setting, private, steps)
        seconds["train"] = time.perf_counter() - t0
        cohort, t0 = profile.samples(run.name), time.perf_counter()
        n, sample_steps = dit.sample_defaults(profile)["n"], dit.sample_defaults(profile)["steps"]
        if not (cohort / "samples.json").exists():
            dp_task.sample_cohort(run, n, sample_steps, 0, cohort, cond="from-training-distribution")
        seconds["sample"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mia = audit_mia(run, profile, synthetic=cohort)
        seconds["mia"] = time.perf_counter() - t0
        rows.append(_row(eps, mia, None, seconds))
        write_json(out, {"profile": profile.name, "machine": machine_info(), "rows": rows})
        print(markdown(rows), flush=True)
        if math.isfinite(eps):
            audit_dir, t0 = profile.run_dir / "audit" / f"one-run-eps{eps:g}", time.perf_counter()
            done = audit_dir / ONE_RUN_JSON
            one = read_json(done) if done.exists() else audit_one_run(profile, private["latents"],
                                                                      private["public_dit"], audit_dir, epsilon=eps)
            seconds["one_run"] = time.perf_counter() - t0
            rows[-1] = _row(eps, mia, one, seconds)
            write_json(out, {"profile": profile.name, "machine": machine_info(), "rows": rows})
            print(markdown(rows), flush=True)
    print(out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="tiny")
    p.add_argument("--epsilons", default="10,1,inf", help="comma-separated targets (inf: non-private fine-tune)")
    p.add_argument("--json", default=None, help="output (default runs/bench/dp_leakage-<profile>.json)")
    p.add_argument("--data-only", action="store_true", help="only the phantom cohorts (no trained model needed)")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                   help="profile overrides, e.g. dp.steps=300 (the measured tiny table: the DP settings before tiny's "
                        "were cut for notebook 06)")
    main(p.parse_args())
