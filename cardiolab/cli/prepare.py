"""`python -m cardiolab prepare`: a cohort folder -> the prepared cache (tensors + manifest.json)."""
from __future__ import annotations

import logging

from cardiolab.cli import add_profile

HELP = "preprocess a cohort (phantom, ACDC, M&Ms) into the training cache with seeded splits"
log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--root", default=None,
                   help="cohort folder (default: the profile's phantom cohort, generated if missing)")
    p.add_argument("--layout", choices=("acdc", "mnms"), default="acdc", help="dataset layout (default acdc)")
    add_profile(p)
    p.add_argument("--out", default=None, help="cache folder (default: data/cache/<profile>)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")


def run(args) -> int:
    from cardiolab.data.prepare import prepare
    from cardiolab.profiles import get_profile

    profile = get_profile(args.profile)
    root = args.root
    if root is None:
        from cardiolab.data.phantom import ensure_phantom
        root = ensure_phantom(profile)
    manifest = prepare(root, args.layout, profile, args.out, seed=args.seed)
    log.info("wrote %s", manifest)
    return 0
