"""`python -m cardiolab evaluate`: metrics of a synthetic cohort against real data -> JSON."""
from __future__ import annotations

import logging
import shlex

from cardiolab.cli import add_profile

HELP = "evaluate a synthetic cohort against real data (FD/KID-cardiolab, consistency, temporal, function) -> JSON"
log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--synthetic", required=True, help="synthetic cohort folder (ACDC layout) or a prepared cache")
    p.add_argument("--real", default=None,
                   help="real cohort folder (ACDC layout) or prepared cache (default: the profile's cache, holdout split)")
    p.add_argument("--split", default=None, choices=("public", "private", "holdout"),
                   help="split of a prepared --real cache (default: holdout for the profile cache, else all)")
    p.add_argument("--labels", action="store_true",
                   help="segment both cohorts with the profile's segmenter: adds LV-area / volume-curve scores, "
                        "cardiac function (W1/KS) and shape comparisons")
    p.add_argument("--name", default=None, help="model name in the report (default: the synthetic folder's name)")
    p.add_argument("--json", default=None, help="output JSON (default runs/<profile>/eval/<name>.json)")
    p.add_argument("--evaluator", default=None, help="evaluator run folder (default runs/<profile>/evaluator, trained if missing)")
    p.add_argument("--fid-weights", default=None,
                   help="TorchScript 2D feature extractor (B, 3, H, W) in [0, 1] -> features: adds standard FID")
    p.add_argument("--landmarks", default=None,
                   help="landmarks run folder: adds septal-angle drift (slices, frames) of both sides")
    add_profile(p)


def command_line(args) -> str:
    """The command as typed (rebuilt from the parsed options, so it is right however main() was called)."""
    parts = ["python", "-m", "cardiolab", "evaluate"]
    for opt in ("synthetic", "real", "split", "name", "json", "evaluator", "fid_weights", "landmarks", "profile"):
        if getattr(args, opt, None):
            parts += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    return shlex.join(parts + (["--labels"] if args.labels else []))


def run(args) -> int:
    from cardiolab.evaluate import evaluate
    from cardiolab.profiles import get_profile
    profile = get_profile(args.profile)
    result = evaluate(args.synthetic, args.real, profile, split=args.split, labels=args.labels, name=args.name,
                      out_json=args.json, fid_weights=args.fid_weights, evaluator=args.evaluator,
                      command=command_line(args), landmarks=args.landmarks)
    f = result["fidelity"]
    log.info("%s (%s, %d vs %d cines): FD-cardiolab %.4g, KID-cardiolab %.4g +- %.2g", result["model"], result["data"],
             result["real"]["n"], result["synthetic"]["n"], f["FD-cardiolab"], f["KID-cardiolab"], f["KID-cardiolab_std"])
    check = result.get("evaluator_validation")
    if check is not None and not check["passed"]:
        broken = [k for k, ok in check.get("monotonic", {}).items() if not ok]
        print(f"evaluator validation FAILED on {check['reference']}: "
              + (f"FD does not rise with the level of {', '.join(broken)}" if broken else check.get("reason", ""))
              + "; FD/KID against this reference are not meaningful (train the evaluator on it: "
              "`python -m cardiolab train evaluator --root DIR`)")
    if "landmarks" in result:
        lm = result["landmarks"]
        log.info("septal drift (deg) slices real %.1f / synth %.1f, frames real %.1f / synth %.1f",
                 lm["real"]["slices"]["mean"], lm["synthetic"]["slices"]["mean"], lm["real"]["frames"]["mean"],
                 lm["synthetic"]["frames"]["mean"])
    return 0
