"""`python -m cardiolab function`: cardiac function (EDV, ESV, SV, EF, LV mass, RV) of a labelled cohort."""
from __future__ import annotations

import math
from pathlib import Path

from cardiolab.cli import add_profile, resolve_profile
from cardiolab.core import write_json
from cardiolab.io.layouts import LAYOUTS, detect_layout, read_cohort

HELP = "cardiac function (volumes, EF, mass) from a cohort's own ED/ES label maps"


def add_arguments(p) -> None:
    p.add_argument("--root", type=Path, help="dataset folder (default: the profile's phantom cohort)")
    p.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto")
    p.add_argument("--json", type=Path, help="write {subjects, summary} here")
    add_profile(p)


def run(args) -> int:
    from cardiolab.metrics.function import METRICS, cohort_function   # scipy.stats: imported only when used

    root = args.root or resolve_profile(args).phantom_dir
    layout = detect_layout(root) if args.layout == "auto" else args.layout
    table, summary = cohort_function(read_cohort(root, layout))
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    for group, stats in summary["by_group"].items():
        cells = (f"{m} {_fmt(stats[m]['mean'])}±{_fmt(stats[m]['std'])}" for m in ("EDV", "EF", "LV_mass"))
        print(f"{group} (n={stats['EF']['n']}): " + ", ".join(cells))
    if summary["skipped"]:
        print(f"skipped (no ED/ES labels): {', '.join(summary['skipped'])}")
    if args.json:
        records = [{k: _clean(v) for k, v in row.items()} for row in table.to_dict(orient="records")]
        write_json(args.json, {"root": str(root), "layout": layout, "metrics": list(METRICS),
                               "subjects": records, "summary": summary})
        print(f"wrote {args.json}")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _clean(v):
    """JSON-safe: NaN -> None, numpy scalars -> python."""
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v
