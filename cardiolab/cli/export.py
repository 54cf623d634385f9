"""`python -m cardiolab export`: a shareable copy of a synthetic cohort (nnU-Net v2 raw or ACDC), behind a copy gate."""
from __future__ import annotations

import sys
from pathlib import Path

from cardiolab.core import CardiolabError

HELP = "export a synthetic cohort for release (nnU-Net v2 raw or ACDC layout, gate, data card)"


def add_arguments(p) -> None:
    p.add_argument("--synthetic", type=Path, required=True, help="synthetic cohort folder (ACDC layout)")
    p.add_argument("--format", choices=("nnunet", "acdc"), required=True, help="layout of the copy")
    p.add_argument("--out", type=Path, required=True, help="new (or empty) folder; for nnU-Net name it DatasetXXX_Name")
    p.add_argument("--gate", type=Path, default=None,
                   help="`audit copies` JSON of this cohort (required unless --no-gate): refuse (exit 1) above its "
                        "limit, drop the cases it flags, refuse an audit of another training set")
    p.add_argument("--no-gate", action="store_true", help="export without a copy audit (the data card says so)")
    p.add_argument("--max-copy-fraction", type=float, default=None,
                   help="limit in %% of synthetic scans flagged as copies (default: the audit JSON's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled fresh case ids")


def run(args) -> int:
    from cardiolab.privacy.export import export_cohort, gate_message, read_gate  # lazy: CLI start-up

    if args.max_copy_fraction is not None and args.gate is None:
        raise CardiolabError("--max-copy-fraction: only meaningful with --gate AUDIT_JSON")
    gate = read_gate(args.gate, args.max_copy_fraction) if args.gate is not None else None
    if gate is not None and not gate["passed"]:
        print(f"refused: {gate_message(gate)}", file=sys.stderr)
        return 1
    summary = export_cohort(args.synthetic, args.format, args.out, gate=gate, seed=args.seed, no_gate=args.no_gate)
    dropped = f"; dropped {len(summary['dropped'])} flagged as copies" if summary["dropped"] else ""
    print(f"exported {summary['n_subjects']} subjects ({summary['format']}) to {summary['out']}{dropped}")
    return 0
