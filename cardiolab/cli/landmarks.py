"""`python -m cardiolab landmarks`: RV insertion points of every subject, slice and frame of a cohort -> JSON."""
from __future__ import annotations

import logging
from pathlib import Path

from cardiolab.cli import add_data, add_profile, resolve_profile

HELP = "RV insertion points of every slice and frame of a cohort -> JSON (--truth scores them)"
log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--run", type=Path, default=None, help="landmarks run folder (default runs/<profile>/landmarks)")
    p.add_argument("--root", type=Path, required=True, help="cohort folder (ACDC layout: real, phantom or synthetic)")
    p.add_argument("--json", type=Path, required=True, help="output JSON (written only when everything succeeded)")
    p.add_argument("--truth", type=Path, default=None,
                   help="RVIP masks (NIfTI, 1 anterior / 2 inferior, <id>_frameNN_rvip.nii.gz): adds scores")
    p.add_argument("--decoder", choices=("argmax", "soft_argmax", "component"), default=None,
                   help="override the profile's decoder (decoding only)")
    p.add_argument("--threshold", type=float, default=None, help="override the confidence threshold")
    add_profile(p)
    add_data(p)


def run(args) -> int:
    from cardiolab.evaluation.rvip import write_landmarks  # lazy: CLI start-up
    from cardiolab.tasks.landmarks import NAME
    profile = resolve_profile(args)
    run_dir = args.run if args.run is not None else profile.run(NAME)
    out = write_landmarks(run_dir, args.root, args.json, profile, truth_dir=args.truth, decoder=args.decoder,
                          threshold=args.threshold)
    n = sum(len(s["points"]) for s in out["subjects"])
    found = sum(r[k]["voxel"] is not None for s in out["subjects"] for r in s["points"] for k in ("anterior", "inferior"))
    log.info("landmarks: %d subjects, %d slice-frames, %d of %d points found -> %s", len(out["subjects"]), n, found,
             2 * n, args.json)
    if "scores" in out:
        s = out["scores"]["summary"]
        log.info("vs %s: median %.2f mm, TPR@5mm %.2f", args.truth, s["slices"]["points"]["median"],
                 s["detection"]["5.0"]["both"]["tpr"])
    return 0
