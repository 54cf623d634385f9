"""`python -m cardiolab check`: validate a dataset folder and list every problem, one line each."""
from __future__ import annotations

from pathlib import Path

from cardiolab.cli import add_profile, resolve_profile
from cardiolab.io.layouts import LAYOUTS, detect_layout, scan_cohort

HELP = "validate a cohort folder (ACDC, M&Ms or volume layout); exit 1 on any problem"


def add_arguments(p) -> None:
    p.add_argument("--root", type=Path, help="dataset folder (default: the profile's phantom cohort; --layout volume: its volume cohort)")
    p.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto",
                   help="folder layout; auto picks mnms when there are <code>_sa / _SA_CINE files")
    add_profile(p)


def run(args) -> int:
    profile = resolve_profile(args)
    root = args.root or (profile.volume_dir if args.layout == "volume" else profile.phantom_dir)
    if args.layout != "auto":
        layout = args.layout
    else:  # a missing root is reported as a problem by the scan below, not as an error
        layout = detect_layout(root) if Path(root).is_dir() else "acdc"
    n_subjects, problems = scan_cohort(root, layout)
    for problem in problems:
        print(problem)
    if problems:
        files = len({p.path for p in problems})
        print(f"FAILED: {len(problems)} problem(s) in {files} file(s); {n_subjects} subject folder(s) "
              f"under {root} ({layout} layout)")
        return 1
    print(f"OK: {n_subjects} subject(s) under {root} ({layout} layout), no problems")
    return 0
