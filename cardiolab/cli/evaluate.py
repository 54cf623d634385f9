"""`python -m cardiolab evaluate`: metrics of a synthetic cohort against real data -> JSON."""
from __future__ import annotations

import logging
import shlex
from pathlib import Path

from cardiolab.cli import add_data, add_profile, resolve_profile
from cardiolab.core import CardiolabError
from cardiolab.io.layouts import detect_layout

HELP = "score a synthetic cohort against real data (fidelity, consistency, function) -> JSON"
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
    p.add_argument("--unconditional", default=None,
                   help="volume cohorts (highres): a cohort sampled at --conditioning-scale 0 from the same masks, "
                        "scored beside --synthetic; its Dice against the unused masks is the chance level")
    p.add_argument("--segmenter", default=None,
                   help="volume cohorts: highres-segmenter run (default runs/<profile>/highres-segmenter, trained if "
                        "missing)")
    add_profile(p)
    add_data(p)


def command_line(args) -> str:
    """The command as typed (rebuilt from the parsed options, so it is right however main() was called)."""
    parts = ["python", "-m", "cardiolab", "evaluate"]
    for opt in ("synthetic", "real", "split", "name", "json", "evaluator", "fid_weights", "landmarks", "profile"):
        if getattr(args, opt, None):
            parts += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    return shlex.join(parts + (["--labels"] if args.labels else []))


def run(args) -> int:
    from cardiolab.evaluation.evaluate import evaluate  # lazy: CLI start-up
    profile = resolve_profile(args)
    if _is_volume_cohort(args.synthetic):
        return run_highres(args, profile)
    for flag in ("unconditional", "segmenter"):
        if getattr(args, flag):
            raise CardiolabError(f"evaluate --{flag}: only for volume cohorts (highres); {args.synthetic} is not one")
    result = evaluate(args.synthetic, args.real, profile=profile, split=args.split, labels=args.labels, name=args.name,
                      out_json=args.json, fid_weights=args.fid_weights, evaluator=args.evaluator,
                      command=command_line(args), landmarks=args.landmarks)
    f = result["fidelity"]
    floor = f.get("FD-cardiolab_floor", {}).get("mean", float("nan"))
    log.info("%s (%s, %d vs %d cines): FD-cardiolab %.4g (two halves of the real set: %.4g), KID-cardiolab %.4g "
             "(95%% interval %.2g to %.2g), precision %.2f, recall %.2f, density %.2f, coverage %.2f", result["model"],
             result["data"], result["real"]["n"], result["synthetic"]["n"], f["FD-cardiolab"], floor,
             f["KID-cardiolab"], *f["KID-cardiolab_ci95"], f["precision"], f["recall"], f["density"], f["coverage"])
    check = result.get("evaluator_validation")
    if check is not None and not check["passed"]:
        broken = [f"{m} with {k}" for m, key in (("FD", "monotonic"), ("KID", "monotonic_kid"))
                  for k, ok in check.get(key, {}).items() if not ok]
        print(f"evaluator validation FAILED on {check['reference']}: "
              + (f"no steady rise of {', '.join(broken)}" if broken else check.get("reason", ""))
              + f"; FD/KID against this reference are not meaningful ({check['advice']})")
    if "landmarks" in result:
        lm = result["landmarks"]
        log.info("septal drift (deg) slices real %.1f / synth %.1f, frames real %.1f / synth %.1f",
                 lm["real"]["slices"]["mean"], lm["synthetic"]["slices"]["mean"], lm["real"]["frames"]["mean"],
                 lm["synthetic"]["frames"]["mean"])
    return 0


def _is_volume_cohort(path) -> bool:
    return Path(path).is_dir() and detect_layout(path) == "volume"


def run_highres(args, profile) -> int:
    """A synthetic volume cohort (and optionally its unconditional twin): adherence Dice and regional-volume W1
    per structure (cardiolab.evaluation.highres.compare_highres), printed as one table and written to --json."""
    from cardiolab.evaluation.highres import compare_highres, highres_table  # lazy: CLI start-up

    for flag in ("labels", "evaluator", "fid_weights", "landmarks", "split"):
        if getattr(args, flag):
            raise CardiolabError(f"evaluate --{flag.replace('_', '-')}: not an option for volume cohorts")
    cohorts = {"conditional": args.synthetic}
    if args.unconditional:
        if not _is_volume_cohort(args.unconditional):
            raise CardiolabError(f"--unconditional {args.unconditional}: not a volume-layout cohort")
        cohorts["unconditional"] = args.unconditional
    name = args.name or Path(args.synthetic).name
    out = args.json or profile.eval_dir / f"highres_{name}.json"
    scores = compare_highres(cohorts, real=args.real, profile=profile, segmenter_run=args.segmenter, out=out)
    print(highres_table(scores))
    print(f"written {out}")
    return 0
