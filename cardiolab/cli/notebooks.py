"""`python -m cardiolab notebooks`: run every notebook through papermill (what `make reproduce` does)."""
from __future__ import annotations

from cardiolab.cli import add_data, add_profile
from cardiolab.profiles import get_profile

HELP = "run the notebooks in order through papermill (executed copies in runs/<profile>/notebooks)"


def add_arguments(p) -> None:
    add_profile(p, sets=False)     # notebooks read the profile by name in their parameters cell
    add_data(p)
    p.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes (e.g. 01 03)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plan", action="store_true",
                   help="only print the stages and the seconds each took last time here (runs/<profile>/timings.json)")


def run(args) -> int:
    from cardiolab.reporting.reproduce import plan, run_notebooks  # lazy: CLI start-up

    profile = get_profile(args.profile)     # by name: the notebooks resolve it themselves
    if args.plan:
        print(plan(profile, only=args.only, data=args.data))
        return 0
    out = run_notebooks(profile.name, only=args.only, seed=args.seed, data=args.data,
                        layout=args.layout, holdout_vendor=args.holdout_vendor)
    print(f"executed notebooks in {out}")
    return 0
