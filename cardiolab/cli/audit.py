"""`python -m cardiolab audit <plant|copies|families|mia|canaries|subset|sweep|report>`: privacy audits.

    python -m cardiolab audit plant --out runs/tiny/audit/planted          # non-members + copies, planted.json
    python -m cardiolab audit copies --synthetic runs/tiny/audit/planted --embedding copy-detector
    python -m cardiolab audit mia --run runs/tiny/dit
"""
from __future__ import annotations

import sys
from pathlib import Path

from cardiolab.cli import add_data, add_profile
from cardiolab.core import CardiolabError, read_json, write_json
from cardiolab.privacy.copies import DEFAULT_CONFIDENCE, min_references

HELP = "privacy audits: planted copies, copy detection, membership inference, audit report"


def _splits(text: str | None) -> tuple[str, ...] | None:
    return tuple(s for s in text.split(",") if s) if text else None


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="audit", required=True, metavar="<audit>")
    for add in (_add_plant, _add_copies, _add_families, _add_mia, _add_canaries, _add_subset, _add_sweep,
                _add_report):
        add(sub)


def _add_plant(sub) -> None:
    plant = sub.add_parser("plant", help="non-members (fresh phantoms, or on real data held-out patients) plus "
                                         "transformed copies of training subjects")
    add_profile(plant)
    add_data(plant)
    plant.add_argument("--out", type=Path, required=True, help="planted cohort folder (ACDC layout + planted.json)")
    plant.add_argument("--train", type=Path, default=None, help="training cache or cohort (default: profile cache)")
    plant.add_argument("--train-split", default="public,private", help="cache splits that trained the generator")
    plant.add_argument("--n-copies", type=int, default=None, help="copies (default: one per training subject)")
    plant.add_argument("--n-fresh", type=int, default=None,
                       help="non-members (default: the profile's copydetector.fresh): fresh phantoms, or on real "
                            "data (--data) holdout patients, at most half the holdout split (the other half "
                            "calibrates tau)")
    plant.add_argument("--seed", type=int, default=0, help="which subjects are copied and how")
    plant.add_argument("--fresh-seed", type=int, default=7, help="phantom seed of the fresh cines (phantom data)")
    plant.add_argument("--family", default=None,
                       help="one transform family on every copy (flip, rotation, shift, zoom, roll, gain, gamma, "
                            "blur, noise, vqgan) or mixed; default: the detector's own families, each at p 0.5")
    plant.add_argument("--vqgan", type=Path, default=None, help="VQ-GAN run of --family vqgan (default runs/<p>/vqgan)")


def _add_copies(sub) -> None:
    copies = sub.add_parser("copies", help="copy detection (tau from held-out data), DCR, NNDR, Mann-Whitney")
    add_profile(copies)
    add_data(copies)
    copies.add_argument("--synthetic", type=Path, required=True, help="synthetic cohort folder")
    copies.add_argument("--train", type=Path, default=None, help="training cache or cohort (default: profile cache)")
    copies.add_argument("--train-split", default="public,private", help="cache splits of the training set")
    copies.add_argument("--holdout", type=Path, default=None, help="held-out cache or cohort (default: profile cache)")
    copies.add_argument("--holdout-split", default="holdout", help="cache split of the held-out set")
    copies.add_argument("--percentile", type=float, default=5.0,
                        help="false-positive rate tau buys: tau = the k-th smallest of n unseen->train distances "
                             "(holdout + calibration scans), the largest k whose FPR stays <= p %% with "
                             "--confidence")
    copies.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                        help="probability, over the draw of the reference scans, that the FPR stays <= "
                             "--percentile (default %(default)s)")
    copies.add_argument("--calibration", type=int, default=None,
                        help="fresh phantoms added to the holdout to calibrate tau (phantom data only; default "
                             "the profile's copydetector.calibration; 0: holdout only)")
    copies.add_argument("--embedding", default=None, choices=("pixels", "copy-detector", "evaluator"),
                        help="what cines are compared in (default: the copy detector when trained, else pixels)")
    copies.add_argument("--detector", type=Path, default=None,
                        help="run folder of the learned embedding (default runs/<p>/<embedding>)")
    copies.add_argument("--control", type=Path, default=None,
                        help="samples of a model that never saw the training set (e.g. the public model a DP run "
                             "fine-tuned), scored at the same tau: a copy it shares is a look-alike, not memorization")
    copies.add_argument("--max-copy-fraction", type=float, default=None, help="exit 1 above this %% of copies")
    copies.add_argument("--json", type=Path, default=None, help="output JSON (default runs/<p>/audit/copies.json)")


def _add_families(sub) -> None:
    fam = sub.add_parser("families", help="leave-one-family-out: per transform family, a detector trained without "
                                          "it finds copies made with it alone (recall / FPR table)")
    add_profile(fam)
    add_data(fam)
    fam.add_argument("--out", type=Path, required=True, help="folder for the detectors, cohorts and families.json")
    fam.add_argument("--families", default=None, help="comma-separated (default: every family and mixed)")
    fam.add_argument("--seeds", default="11", help="plant seeds of the reported cohorts (fresh seed 100 + s)")
    fam.add_argument("--steps", type=int, default=None, help="detector steps (default copydetector.steps)")
    fam.add_argument("--n-fresh", type=int, default=None, help="fresh phantoms per cohort (default copydetector.fresh)")
    fam.add_argument("--keep-families", action="store_true",
                     help="score every family with the full detector instead of leaving it out")
    fam.add_argument("--vqgan", type=Path, default=None, help="VQ-GAN run of the vqgan family (default runs/<p>/vqgan)")
    fam.add_argument("--train", type=Path, default=None, help="training cache (default: the profile's)")
    fam.add_argument("--holdout", type=Path, default=None, help="held-out cache or cohort (default: the profile's)")


def _add_mia(sub) -> None:
    mia = sub.add_parser("mia", help="membership inference against a DiT run (loss, PIA, calibrated, LiRA, distance)")
    add_profile(mia)
    mia.add_argument("--run", type=Path, required=True, help="a DiT run folder (dit or dit-dp)")
    mia.add_argument("--reference", type=Path, default=None,
                     help="a DiT that never saw the subjects (default: a dit-dp run's public init)")
    mia.add_argument("--synthetic", type=Path, default=None,
                     help="the run's synthetic cohort for the distance attack (default: runs/<p>/samples/<run name>, or "
                          "samples/<task> when sampled from this run)")
    mia.add_argument("--n-fresh", type=int, default=None,
                     help="fresh phantom non-members (default: mia.fresh; none on a real data source)")
    mia.add_argument("--references", type=int, default=None,
                     help="LiRA reference models, trained once on shadow phantoms (default mia.references; none on a "
                          "real data source; 0: none)")
    mia.add_argument("--json", type=Path, default=None, help="output JSON (default runs/<p>/audit/mia-<run>.json)")


def _add_canaries(sub) -> None:
    can = sub.add_parser("canaries", help="write a latents.pt with duplicated and outlier canaries, or score them")
    add_profile(can)
    can.add_argument("--latents", type=Path, default=None, help="source latents.pt (default: the profile's)")
    can.add_argument("--out", type=Path, default=None, help="folder for latents.pt + canaries.json")
    can.add_argument("--k", type=int, default=2, help="canary subjects per duplication count")
    can.add_argument("--copies", default="4", help="duplication counts m, comma-separated (e.g. 2,8)")
    can.add_argument("--outliers", type=int, default=2, help="most isolated training subjects marked as canaries")
    can.add_argument("--seed", type=int, default=0)
    can.add_argument("--score", type=Path, default=None,
                     help="an `audit copies` JSON of samples from a model trained on the canaries: report recall")
    can.add_argument("--canaries", type=Path, default=None, help="canaries.json (or its folder) to score against")
    can.add_argument("--json", type=Path, default=None, help="recall JSON (default: beside --score)")


def _add_subset(sub) -> None:
    subs = sub.add_parser("subset", help="latents.pt subsets of the training subjects (memorization vs data size)")
    add_profile(subs)
    subs.add_argument("--latents", type=Path, default=None, help="source latents.pt (default: the profile's)")
    subs.add_argument("--fraction", default="0.25,0.5", help="fractions of the training subjects, comma-separated")
    subs.add_argument("--out", type=Path, required=True, help="folder; writes <out>/subset-<fraction>/latents.pt")
    subs.add_argument("--seed", type=int, default=0)


def _add_sweep(sub) -> None:
    sweep = sub.add_parser("sweep", help="sample and audit every kept checkpoint of a DiT run (train --keep-every)")
    add_profile(sweep)
    sweep.add_argument("run", type=Path, help="a DiT run folder with checkpoint-<step>.pt files")
    sweep.add_argument("--n", type=int, default=None, help="samples per checkpoint (default: the DiT's)")
    sweep.add_argument("--steps", type=int, default=None, help="sampling steps (default: the DiT's)")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--embedding", default=None, choices=("pixels", "copy-detector", "evaluator"),
                       help="default: the copy detector when trained, else pixels")
    sweep.add_argument("--train", type=Path, default=None, help="training cache or cohort (default: profile cache)")
    sweep.add_argument("--holdout", type=Path, default=None, help="held-out cache or cohort (default: profile cache)")
    sweep.add_argument("--out", type=Path, default=None, help="folder (default runs/<p>/audit/sweep-<run>)")


def _add_report(sub) -> None:
    rep = sub.add_parser("report", help="runs/<p>/audit/card.md: every cohort in runs/<p>/samples audited")
    add_profile(rep)
    rep.add_argument("--embedding", default=None, choices=("pixels", "copy-detector", "evaluator"),
                     help="copy-audit embedding (default: copy-detector when trained, else pixels)")
    rep.add_argument("--percentile", type=float, default=5.0,
                     help="false-positive rate tau buys on unseen scans (see `audit copies --help`)")


def _report(args) -> int:
    from cardiolab.privacy.card import audit_report  # lazy: CLI start-up

    print(audit_report(args.profile, args.embedding, args.percentile))
    return 0


def _latents(path, profile):
    from cardiolab.tasks.vqgan import ensure_latents, load_latents  # lazy: CLI start-up

    return load_latents(path if path is not None else ensure_latents(profile))


def _canaries(args) -> int:
    # lazy: CLI start-up
    from cardiolab.privacy.canaries import canary_recall, make_canaries, read_canaries, write_latents

    if args.score is not None:
        if args.canaries is None:
            raise CardiolabError("audit canaries --score: also give --canaries (canaries.json or its folder)")
        r = canary_recall(read_json(args.score), read_canaries(args.canaries))
        out = args.json or args.score.with_name("canary-recall.json")
        write_json(out, r)
        groups = ", ".join(f"m={g['m']}: {g['recall']:.0f} %" for g in r["by_copies"])
        print(f"canary recall {r['overall']:.0f} % ({groups}; outliers {r['outliers']['recall']:.0f} %; "
              f"control {r['control']['recall']:.0f} %)")
        print(out)
        return 0
    if args.out is None:
        raise CardiolabError("audit canaries: give --out (to write canaries) or --score (to score them)")
    try:
        copies = [int(m) for m in args.copies.split(",") if m]
    except ValueError:
        raise CardiolabError(f"--copies {args.copies!r}: expected integers, comma-separated") from None
    record, canaries = make_canaries(_latents(args.latents, args.profile), args.k, copies, args.outliers, args.seed)
    path = write_latents(record, args.out, canaries)
    print(f"{len(canaries['canaries'])} canaries in {path}; train with `train dit --latents {path}`")
    return 0


def _subset(args) -> int:
    from cardiolab.privacy.canaries import subset, write_latents  # lazy: CLI start-up

    try:
        fractions = [float(f) for f in args.fraction.split(",") if f]
    except ValueError:
        raise CardiolabError(f"--fraction {args.fraction!r}: expected numbers, comma-separated") from None
    record = _latents(args.latents, args.profile)
    parts = [subset(record, f, args.seed) for f in fractions]            # every check before any write
    for f, part in zip(fractions, parts):
        print(write_latents(part, args.out / f"subset-{f:g}"))
    return 0


def _sweep(args) -> int:
    from cardiolab.privacy.audit import audit_sweep  # lazy: CLI start-up

    r = audit_sweep(args.run, args.profile, args.n, args.steps, args.seed, args.embedding, args.out, args.train,
                    args.holdout)
    for row in r["checkpoints"]:
        print(f"step {row['step']}: copies {row['copy_fraction']:.1f} %, memorized {row['memorized_fraction']:.1f} %")
    print(r["json"])
    return 0


def _mia(args) -> int:
    from cardiolab.privacy.membership import audit_mia  # lazy: CLI start-up

    r = audit_mia(args.run, args.profile, args.reference, args.synthetic, args.n_fresh, out_json=args.json,
                  references=args.references)
    print(f"MIA on {r['run']} ({r['n_members']} members, {r['n_nonmembers']} non-members):")
    for name, a in r["attacks"].items():
        lo, hi = a["auc_ci95"]
        tpr = ", ".join(f"TPR@{k} {v if isinstance(v, str) else f'{v:.3f}'}" for k, v in a["tpr_at_fpr"].items())
        print(f"  {name:10s} AUC {a['auc']:.3f} [{lo:.3f}, {hi:.3f}], balanced acc {a['balanced_accuracy']:.3f}, {tpr}")
    for name, why in r["skipped"].items():
        print(f"  {name:10s} skipped: {why}")
    print(r["json"])
    return 0


def _families(args) -> int:
    from cardiolab.privacy.audit import audit_families, families_table  # lazy: CLI start-up

    seeds = tuple(int(v) for v in args.seeds.split(",") if v)
    r = audit_families(args.out, args.profile, _splits(args.families), seeds, not args.keep_families, args.steps,
                       args.n_fresh, args.train, args.holdout, vqgan=args.vqgan)
    print(families_table(r))
    print(r["json"])
    return 0


def run(args) -> int:
    from cardiolab.privacy.audit import audit_copies, plant_cohort  # lazy: CLI start-up

    verbs = {"mia": _mia, "canaries": _canaries, "subset": _subset, "sweep": _sweep, "report": _report,
             "families": _families}
    if args.audit in verbs:
        return verbs[args.audit](args)

    if args.audit == "plant":
        s = plant_cohort(args.out, args.profile, args.train, _splits(args.train_split), args.n_copies, args.n_fresh,
                         args.seed, args.fresh_seed, family=args.family, vqgan=args.vqgan)
        print(f"planted {s['n_copies']} copies ({', '.join(s['families'])}) among {s['n_fresh']} non-members "
              f"({s['nonmembers']}) in {s['out']}")
        return 0
    if args.embedding is None:
        from cardiolab.privacy.embeddings import default_embedding  # lazy: CLI start-up

        args.embedding = default_embedding(args.profile)
        if args.embedding == "pixels":
            print(f"warning: no trained copy detector for profile {args.profile.name}; comparing pixels, which miss "
                  "rotated and re-rendered copies (`train copy-detector` first)", file=sys.stderr)
    r = audit_copies(args.synthetic, args.profile, args.train, args.holdout, _splits(args.train_split),
                     args.holdout_split or None, args.percentile, args.embedding, args.max_copy_fraction, args.json,
                     args.detector, args.calibration, args.confidence, args.control)
    c, d = r["calibration"], r["distances"]
    print(f"copies {r['copy_fraction']:.1f} % of {r['n_synthetic']} synthetic, "
          f"memorized {r['memorized_fraction']:.1f} % of {r['n_train']} training ({r['embedding']})")
    print(f"tau {r['threshold']:.4f}: unseen->train distance no. {c['rank']} of {c['n_reference']} "
          f"({c['n_holdout']} holdout + {c['n_calibration']} calibration phantoms), false-positive rate "
          f"<= {c['fpr_bound']:.1f} % with {c['confidence']:.0%} confidence (mean {c['fpr_expected']:.1f} %, "
          f"p{r['percentile']:g})" + ("" if c["enough"] else f"; too few references for p{r['percentile']:g} "
          f"(need {min_references(r['percentile'], c['confidence'])}): add --calibration phantoms or raise "
          "--percentile"))
    print(f"DCR median synthetic {d['dcr_synthetic_train']['median']:.4f} / holdout "
          f"{d['dcr_holdout_train']['median']:.4f}, NNDR median {d['nndr_synthetic_train']['median']:.3f} / "
          f"{d['nndr_holdout_train']['median']:.3f}; nearer train {d['share_nearer_train']:.0f} % (expected "
          f"{d['share_expected']:.0f} %), Mann-Whitney p {d['mannwhitney_p']:.3g}")
    if "control" in r:
        k, n = r["control"], len({p["nearest_train_id"] for p in r["per_synthetic"] if p["is_copy"]})
        print(f"control {k['synthetic']}: copies {k['copy_fraction']:.1f} % of {k['n_synthetic']} (excess "
              f"{k['excess_copy_fraction']:+.1f} points); {len(k['shared'])} of {n} flagged training subjects "
              f"flagged by the control too")
    if "planted" in r:
        p = r["planted"]
        print(f"planted: recall {p['recall']:.1f} % of {p['n_planted']} copies (matched {p['recall_matched']:.1f} %), "
              f"FPR {p['fpr']:.1f} % of {p['n_fresh']} non-members ({p['nonmembers']})")
    print(r["json"])
    if r.get("passed") is False:
        print(f"refused: copy fraction {r['copy_fraction']:.2f} % above --max-copy-fraction "
              f"{r['max_copy_fraction']:.2f} %", file=sys.stderr)
        return 1
    return 0
