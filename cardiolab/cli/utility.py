"""`python -m cardiolab utility`: does a synthetic cohort help train a segmenter that works on real cines?"""
from __future__ import annotations

from pathlib import Path

from cardiolab.cli import add_data, add_profile, resolve_profile
from cardiolab.core import CardiolabError
from cardiolab.io.layouts import scan_cohort

HELP = "downstream utility: segmenters trained on real / synthetic / both, scored on real data"


def add_arguments(p) -> None:
    p.add_argument("--synthetic", required=True, type=Path, help="synthetic cohort folder (ACDC layout)")
    p.add_argument("--fractions", default="1",
                   help="shares of the real public subjects, comma-separated in (0, 1], e.g. 0.25,0.5,1 (the "
                        "limited-data setting); each f < 1 adds real@f and real+synthetic@f")
    p.add_argument("--test-cohort", type=Path, default=None,
                   help="labelled ACDC-layout cohort of another site for a cross-dataset score (e.g. `phantom "
                        "--seed 2 --snr 6,10 --out DIR`, or M&Ms)")
    p.add_argument("--steps", type=int, default=None, help="segmenter steps per run (default profile.eval.seg_steps)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per setting (default "
                                                           "profile.eval.utility_seeds; one: bootstrap CIs)")
    p.add_argument("--json", type=Path, default=None,
                   help="output JSON (default runs/<profile>/eval/utility-<cohort folder name>.json)")
    add_profile(p)
    add_data(p)


def run(args) -> int:
    from cardiolab.evaluation.utility import utility, utility_table  # lazy: CLI start-up

    for flag, path in (("--synthetic", args.synthetic), ("--test-cohort", args.test_cohort)):
        if path is None:
            continue
        if not path.is_dir():
            raise CardiolabError(f"{flag} {path}: not a folder")
        n, problems = scan_cohort(path)                  # every file read in full, before any training
        if problems:
            raise CardiolabError(f"{flag}: {problems[0]}")
        if not n:
            raise CardiolabError(f"{flag} {path}: no subject folders (ACDC layout: patientNNN/ or synthNNNN/)")
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        raise CardiolabError(f"--fractions {args.fractions!r}: expected numbers in (0, 1], e.g. 0.25,0.5,1") from None
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise CardiolabError(f"--fractions {args.fractions!r}: every share must lie in (0, 1]")
    for flag, value in (("--steps", args.steps), ("--seeds", args.seeds)):
        if value is not None and value < 1:
            raise CardiolabError(f"{flag} {value}: must be >= 1")
    profile = resolve_profile(args)
    out = args.json or profile.eval_dir / f"utility-{args.synthetic.name}.json"
    result = utility(profile, args.synthetic, out_json=out, seeds=args.seeds, steps=args.steps,
                     fractions=fractions, test_cohort=args.test_cohort)
    table = utility_table(result)
    table = table[(table.metric == "dice") & (table.structure == "mean")].drop(columns=["metric", "structure"])
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"written {out}")
    return 0
