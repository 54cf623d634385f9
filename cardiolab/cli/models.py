"""`python -m cardiolab models`: every registered model, its kind, size and the state of its run."""
from __future__ import annotations

import json

from cardiolab.cli import add_profile
from cardiolab.tasks import describe

HELP = "list the registered models: kind, parameters, whether the profile's run is trained"


def add_arguments(p) -> None:
    add_profile(p)
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def run(args) -> int:
    rows = describe(args.profile)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    wn, wk = (max(len(r[k]) for r in rows) + 2 for k in ("name", "kind"))     # columns as wide as their entries
    print(f"{'model':<{wn}}{'kind':<{wk}}{'parameters':>12}  run")
    for r in rows:
        print(f"{r['name']:<{wn}}{r['kind']:<{wk}}{r['parameters']:>12,}  {r['status']:<9} {r['run']}")
    return 0
