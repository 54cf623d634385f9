"""`python -m cardiolab phantom`: write a 4D cine phantom cohort in the ACDC layout, or (--kind volume) a
whole-heart 3D cohort in the volume layout (cardiolab.data.phantom3d).

    python -m cardiolab phantom --profile smoke                 # data/phantom/smoke with the profile's sizes
    python -m cardiolab phantom --kind volume --profile smoke   # data/phantom/smoke-volume, profile.highres sizes
    python -m cardiolab phantom --out /tmp/ph --subjects 20 --seed 1 --size 96 --frames 16
    python -m cardiolab phantom --release acdc --out /tmp/ACDC --profile smoke   # as ACDC ships, quirks included
"""
from __future__ import annotations

import time
from pathlib import Path

from cardiolab.cli import add_profile, resolve_profile
from cardiolab.core import CardiolabError
from cardiolab.data import phantom

HELP = "generate the 4D cine phantom (ACDC layout, with labels) or 3D volumes (--kind volume)"


def add_arguments(p) -> None:
    add_profile(p)
    p.add_argument("--kind", choices=["cine", "volume"], default="cine",
                   help="cine: 4D short-axis cines (ACDC layout); volume: whole-heart 3D (volume layout)")
    p.add_argument("--out", type=Path, help="cohort folder (default: the profile's data/phantom/<profile>)")
    p.add_argument("--subjects", type=int, help="number of subjects (default: profile.data.phantom_subjects)")
    p.add_argument("--seed", type=int, default=0, help="subject i depends only on (seed, i)")
    p.add_argument("--size", type=int, help="in-plane pixels (default: profile.data.phantom_size); "
                   "--kind volume: X = Y = size, Z = size / 2 (default: profile.highres.size)")
    p.add_argument("--slices", type=int, help="short-axis slices base -> apex (default: profile.data.phantom_slices)")
    p.add_argument("--frames", type=int, help="frames over one beat (default: profile.data.phantom_frames)")
    p.add_argument("--spacing", type=float, help="in-plane mm (default: profile.data.phantom_spacing)")
    p.add_argument("--snr", type=snr_range, help="LO,HI blood-pool SNR range per subject, e.g. 6,10 for a noisier "
                   "second site (default: the phantom's 14,28)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (same output for any number; default: every core, at most 4, from 16 subjects)")
    p.add_argument("--release", choices=["acdc", "mnms"],
                   help="write the cine phantom as that dataset ships (needs --out): ACDC's training/ and testing/ "
                        "or M&Ms' vendors, centres and CSV, labels at ED and ES only, 5-10 mm slices, varying "
                        "slice counts, uint16 or 8-bit intensities (cardiolab.data.releases)")


def snr_range(text: str) -> tuple[float, float]:
    """'LO,HI' -> (LO, HI); argparse reports a ValueError as a one-line usage error (exit 2)."""
    lo, sep, hi = text.partition(",")
    if not sep:
        raise ValueError(text)
    return float(lo), float(hi)


def run(args) -> int:
    profile = resolve_profile(args)
    if args.kind == "volume":
        return _volume(args, profile)
    d = profile.data
    if args.release:
        return _release(args, d)
    overrides = (args.out, args.subjects, args.size, args.slices, args.frames, args.spacing, args.snr)
    if all(v is None for v in overrides):   # the profile's own cohort: reuse it when already up to date
        from cardiolab.reporting.reproduce import record_stage  # lazy: CLI start-up
        t0 = time.perf_counter()
        root = phantom.ensure_phantom(profile, seed=args.seed, workers=args.workers)
        record_stage(profile, "phantom", time.perf_counter() - t0)   # the first stage of make reproduce
        print(f"phantom cohort ready in {root}")
        return 0

    def pick(value, default):
        return default if value is None else value

    out = pick(args.out, profile.phantom_dir)
    paths = phantom.generate_cohort(out, pick(args.subjects, d.phantom_subjects), seed=args.seed,
                            size=pick(args.size, d.phantom_size), spacing=pick(args.spacing, d.phantom_spacing),
                            slices=pick(args.slices, d.phantom_slices), frames=pick(args.frames, d.phantom_frames),
                            workers=args.workers, snr=args.snr)
    print(f"wrote {len(paths)} subjects to {out}")
    return 0


def _volume(args, profile) -> int:
    """Whole-heart 3D volumes: the profile's own cohort (reused when up to date) or --out / --subjects / --size."""
    from cardiolab.data.phantom3d import ensure_volume_cohort, generate_volume_cohort  # lazy: CLI start-up

    if any(v is not None for v in (args.slices, args.frames, args.spacing)):
        raise CardiolabError("phantom --kind volume: --slices, --frames and --spacing are cine options "
                             "(volume sizes come from profile.highres.size or --size)")
    if args.out is None and args.subjects is None and args.size is None:
        root = ensure_volume_cohort(profile, seed=args.seed)
        print(f"volume cohort ready in {root}")
        return 0
    h = profile.highres
    size = h.size if args.size is None else (args.size, args.size, max(8, args.size // 2))
    out = args.out or profile.volume_dir
    paths = generate_volume_cohort(out, args.subjects or h.subjects, seed=args.seed, size=size, modality=h.modality)
    print(f"wrote {len(paths)} volumes to {out}")
    return 0


def _release(args, d) -> int:
    """The cine phantom written as ACDC or M&Ms ship (`cardiolab.data.releases`) into --out."""
    from cardiolab.data.releases import write_acdc_release, write_mnms_release  # lazy: CLI start-up

    if args.out is None or args.snr is not None:
        raise CardiolabError("phantom --release: give --out (a new folder); --snr is drawn per vendor / subject")
    write = write_acdc_release if args.release == "acdc" else write_mnms_release
    n = args.subjects or d.phantom_subjects
    out = write(args.out, n, seed=args.seed, size=args.size or d.phantom_size,
                spacing=args.spacing or d.phantom_spacing, slices=args.slices or d.phantom_slices,
                frames=args.frames or d.phantom_frames)
    print(f"wrote {n} subjects to {out} ({args.release} layout)")
    return 0
