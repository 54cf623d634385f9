"""`python -m cardiolab reader-study`: export a blinded real-vs-synthetic reading, or score a filled sheet.

    python -m cardiolab reader-study --real data/phantom/tiny-volume --synthetic runs/tiny/samples/highres-controlnet --out study
    python -m cardiolab reader-study --score study/score_sheet.csv
"""
from __future__ import annotations

import json
from pathlib import Path

from cardiolab.core import CardiolabError, write_json

HELP = "blinded real-vs-synthetic reader study: cases, hidden key, score sheet (--score scores it)"


def add_arguments(p) -> None:
    p.add_argument("--real", type=Path, help="real cohort folder (any layout)")
    p.add_argument("--synthetic", type=Path, help="synthetic cohort folder (same layout)")
    p.add_argument("--out", type=Path, help="new folder for cases/, score_sheet.csv and the hidden .key.json")
    p.add_argument("--n", type=int, default=None, help="at most this many cases per source")
    p.add_argument("--seed", type=int, default=0, help="seed of the case order")
    p.add_argument("--score", type=Path, metavar="SHEET", help="score a filled score_sheet.csv")
    p.add_argument("--key", type=Path, help="with --score: the key (default: .key.json beside the sheet)")


def run(args) -> int:
    from cardiolab.evaluation import reader_study  # lazy: CLI start-up

    if args.score:
        result = reader_study.score(args.score, args.key)
        write_json(args.score.with_name("reader_scores.json"), result)
        print(json.dumps(result, indent=2))
        return 0
    if not (args.real and args.synthetic and args.out):
        raise CardiolabError("reader-study: give --real, --synthetic and --out (export), or --score SHEET")
    if args.n is not None and args.n < 1:
        raise CardiolabError(f"--n must be >= 1, got {args.n}")
    out = reader_study.export(args.real, args.synthetic, args.out, seed=args.seed, n=args.n)
    print(f"reader study in {out}: give readers {out / 'cases'} and {out / reader_study.SHEET}; "
          f"keep {out / reader_study.KEY} hidden")
    return 0
