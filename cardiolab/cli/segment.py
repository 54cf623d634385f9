"""`python -m cardiolab segment`: label every frame of an ACDC-layout cohort, in the cohort's own geometry."""
from __future__ import annotations

from pathlib import Path

from cardiolab.cli import add_profile
from cardiolab.evaluation.segment import segment_cohort

HELP = "segment every frame of a cohort with the trained segmenter (Dice/HD95 where labelled)"


def add_arguments(p) -> None:
    p.add_argument("--root", type=Path, required=True, help="ACDC-layout cohort (real, phantom or synthetic)")
    p.add_argument("--run", type=Path, help="segmenter run folder (default: the profile's, trained if missing)")
    p.add_argument("--out", type=Path, required=True, help="new cohort folder (must not exist, or be empty)")
    p.add_argument("--json", type=Path, help="write Dice / HD95 per structure and subject here")
    add_profile(p)


def run(args) -> int:
    summary = segment_cohort(args.root, args.out, args.profile, run=args.run, json_out=args.json)
    line = f"segmented {summary['n_subjects']} subject(s) into {args.out}"
    if summary["n_labelled"]:
        line += " (Dice " + ", ".join(f"{k} {v:.3f}" for k, v in summary["dice"].items()) + ")"
    print(line)
    if args.json:
        print(f"wrote {args.json}")
    return 0
