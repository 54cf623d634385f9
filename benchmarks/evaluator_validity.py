"""Is the evaluator valid on small references it never saw? Evaluator validation on 10-cine cohorts.

    python -m cardiolab phantom --profile tiny --subjects 10 --seed 101 --out runs/evalval/seed101   # and seed 202
    python benchmarks/evaluator_validity.py --profile tiny runs/evalval/seed101 runs/evalval/seed202 \
        [--evaluator RUN] [--json runs/bench/evaluator_validity.json]

For each cohort (any ACDC-layout folder or prepared cache, brought to the profile's geometry): the validation of
`cardiolab.evaluation.evaluate.evaluator_check` (FD and KID against four degradations at four levels, 3 random 5 v 5 half
splits of the 10 cines) and the FD floor (two same-distribution halves). With two cohorts A, B it also scores
the question a user asks: is B closer to A than a degraded copy of B (noise 0.3 and 0.5 std, blur sigma 1 px)?
Default evaluator: the profile's (`ensure`, trained if missing). Prints one table; writes JSON with the machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from cardiolab.core import CardiolabError, machine_info, write_json
from cardiolab.data.cines import load_cines
from cardiolab.evaluation.evaluate import evaluator_check
from cardiolab.metrics.features import corrupt, distances, fd_floor, features
from cardiolab.profiles import get_profile
from cardiolab.tasks import evaluator as evaluator_task

# (name, [(kind, strength), ...]): degraded copies of B, as a user checking the metric on real halves would make
MIXED = (("noise 0.3 + blur 1", (("noise", 0.3), ("blur", 1.0))),
         ("noise 0.5 + blur 1", (("noise", 0.5), ("blur", 1.0))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohorts", nargs="+", help="10-cine cohorts (ACDC layout) or prepared caches")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--evaluator", default=None, help="evaluator run folder (default: the profile's)")
    ap.add_argument("--json", default="runs/bench/evaluator_validity.json")
    args = ap.parse_args(argv)
    profile = get_profile(args.profile)
    run = Path(args.evaluator) if args.evaluator else evaluator_task.ensure(profile)
    model = evaluator_task.load(run)
    out = {"evaluator": str(run), "profile": profile.name, "machine": machine_info(), "cohorts": {}}
    cines = {c: load_cines(c, profile) for c in args.cohorts}
    for name, c in cines.items():
        check = evaluator_check(model, c, profile=profile)
        check["fd_floor"] = fd_floor(features(model, c.images), len(c.ids))
        out["cohorts"][name] = check
        print(f"{name}: n={check['n_real']} passed={check['passed']} FD floor (5 v 5) {check['fd_floor']['mean']:.3f}")
        for kind, fd in check["fd"].items():
            print(f"  {kind:17s} FD {' '.join(f'{v:7.3f}' for v in fd)}  monotonic FD {check['monotonic'][kind]}"
                  f" KID {check['monotonic_kid'][kind]}")
    if len(cines) >= 2:
        (na, a), (nb, b) = list(cines.items())[:2]
        fa, fb = features(model, a.images), features(model, b.images)
        pair = {"A": na, "B": nb, "A v B": distances(fa, fb)}
        for label, steps in MIXED:
            x = b.images
            for kind, strength in steps:
                x = corrupt(x, kind, strength, torch.Generator().manual_seed(0))
            pair[f"A v {label}(B)"] = distances(fa, features(model, x))
        out["pair"] = pair
        for k, d in pair.items():
            if isinstance(d, dict):
                print(f"{k:28s} FD {d['FD-cardiolab']:.3f}  KID {d['KID-cardiolab']:.4f} "
                      f"[{d['KID-cardiolab_ci95'][0]:.4f}, {d['KID-cardiolab_ci95'][1]:.4f}]  precision "
                      f"{d['precision']:.2f} recall {d['recall']:.2f} density {d['density']:.2f} coverage "
                      f"{d['coverage']:.2f}")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CardiolabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
