"""`python -m cardiolab audit <plant|copies|mia|canaries|subset|sweep|report>`: privacy audits (issue 15).

    python -m cardiolab audit plant --out runs/tiny/audit/planted          # fresh phantoms + copies, planted.json
    python -m cardiolab audit copies --synthetic runs/tiny/audit/planted --embedding copy-detector
    python -m cardiolab audit mia --run runs/tiny/dit
"""
from __future__ import annotations

import sys
from pathlib import Path

from cardiolab.cli import add_profile

HELP = ("privacy audits: plant (a cohort with known copies), copies (copy detection, DCR, NNDR), mia "
        "(membership inference)")


def _splits(text: str | None) -> tuple[str, ...] | None:
    return tuple(s for s in text.split(",") if s) if text else None


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="audit", required=True, metavar="<audit>")
    plant = sub.add_parser("plant", help="fresh phantoms plus transformed copies of training subjects")
    add_profile(plant)
    plant.add_argument("--out", type=Path, required=True, help="planted cohort folder (ACDC layout + planted.json)")
    plant.add_argument("--train", type=Path, default=None, help="training cache or cohort (default: profile cache)")
    plant.add_argument("--train-split", default="public,private", help="cache splits that trained the generator")
    plant.add_argument("--n-copies", type=int, default=None, help="copies (default: one per training subject)")
    plant.add_argument("--n-fresh", type=int, default=None, help="fresh phantoms (default: as many as copies)")
    plant.add_argument("--seed", type=int, default=0, help="which subjects are copied and how")
    plant.add_argument("--fresh-seed", type=int, default=7, help="phantom seed of the fresh cines")

    copies = sub.add_parser("copies", help="copy detection (tau from held-out data), DCR, NNDR, Mann-Whitney")
    add_profile(copies)
    copies.add_argument("--synthetic", type=Path, required=True, help="synthetic cohort folder")
    copies.add_argument("--train", type=Path, default=None, help="training cache or cohort (default: profile cache)")
    copies.add_argument("--train-split", default="public,private", help="cache splits of the training set")
    copies.add_argument("--holdout", type=Path, default=None, help="held-out cache or cohort (default: profile cache)")
    copies.add_argument("--holdout-split", default="holdout", help="cache split of the held-out set")
    copies.add_argument("--percentile", type=float, default=5.0, help="tau = this percentile of train->holdout NN")
    copies.add_argument("--embedding", default="pixels", choices=("pixels", "copy-detector", "evaluator"),
                        help="what cines are compared in: pixels, or a trained copy-detector / evaluator run")
    copies.add_argument("--detector", type=Path, default=None,
                        help="run folder of the learned embedding (default runs/<p>/<embedding>)")
    copies.add_argument("--max-copy-fraction", type=float, default=None, help="exit 1 above this %% of copies")
    copies.add_argument("--json", type=Path, default=None, help="output JSON (default runs/<p>/audit/copies.json)")


    mia = sub.add_parser("mia", help="membership inference against a DiT run (loss, PIA, calibrated, distance)")
    add_profile(mia)
    mia.add_argument("--run", type=Path, required=True, help="a DiT run folder (dit or dit-dp)")
    mia.add_argument("--reference", type=Path, default=None,
                     help="a DiT that never saw the subjects (default: a dit-dp run's public init)")
    mia.add_argument("--synthetic", type=Path, default=None,
                     help="the run's synthetic cohort for the distance attack (default runs/<p>/samples/<task>)")
    mia.add_argument("--n-fresh", type=int, default=None, help="fresh phantom non-members (default: phantom_subjects)")
    mia.add_argument("--json", type=Path, default=None, help="output JSON (default runs/<p>/audit/mia-<run>.json)")


def _mia(args) -> int:
    from cardiolab.privacy.membership import audit_mia

    r = audit_mia(args.run, args.profile, args.reference, args.synthetic, args.n_fresh, out_json=args.json)
    print(f"MIA on {r['run']} ({r['n_members']} members, {r['n_nonmembers']} non-members):")
    for name, a in r["attacks"].items():
        lo, hi = a["auc_ci95"]
        tpr = ", ".join(f"TPR@{k} {v if isinstance(v, str) else f'{v:.3f}'}" for k, v in a["tpr_at_fpr"].items())
        print(f"  {name:10s} AUC {a['auc']:.3f} [{lo:.3f}, {hi:.3f}], balanced acc {a['balanced_accuracy']:.3f}, {tpr}")
    for name, why in r["skipped"].items():
        print(f"  {name:10s} skipped: {why}")
    print(r["json"])
    return 0


def run(args) -> int:
    from cardiolab.privacy.audit import audit_copies, plant_cohort

    if args.audit == "mia":
        return _mia(args)

    if args.audit == "plant":
        s = plant_cohort(args.out, args.profile, args.train, _splits(args.train_split), args.n_copies, args.n_fresh,
                         args.seed, args.fresh_seed)
        print(f"planted {s['n_copies']} copies among {s['n_fresh']} fresh cines in {s['out']}")
        return 0
    r = audit_copies(args.synthetic, args.profile, args.train, args.holdout, _splits(args.train_split),
                     args.holdout_split or None, args.percentile, args.embedding, args.max_copy_fraction, args.json,
                     args.detector)
    line = (f"copies {r['copy_fraction']:.1f} % of {r['n_synthetic']} synthetic, "
            f"memorized {r['memorized_fraction']:.1f} % of {r['n_train']} training "
            f"(tau {r['threshold']:.4f}, p{r['percentile']:g}, {r['embedding']}); "
            f"nearer train {r['distances']['share_nearer_train']:.0f} % (expected "
            f"{r['distances']['share_expected']:.0f} %), Mann-Whitney p {r['distances']['mannwhitney_p']:.3g}")
    if "planted" in r:
        line += f"; planted recall {r['planted']['recall']:.1f} %, FPR {r['planted']['fpr']:.1f} %"
    print(line)
    print(r["json"])
    if r.get("passed") is False:
        print(f"refused: copy fraction {r['copy_fraction']:.2f} % above --max-copy-fraction "
              f"{r['max_copy_fraction']:.2f} %", file=sys.stderr)
        return 1
    return 0
