"""`python -m cardiolab prepare`: a cohort folder -> the prepared cache (tensors + manifest.json)."""
from __future__ import annotations

import logging

from cardiolab.cli import add_holdout_vendor, add_profile, resolve_profile
from cardiolab.data import phantom
from cardiolab.data.prepare import prepare
from cardiolab.profiles import LAYOUTS

HELP = "preprocess a cohort into the training cache with seeded public / private / holdout splits"
log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--data", "--root", dest="data", default=None, metavar="DIR",
                   help="cohort folder (default $CARDIOLAB_DATA, else the profile's phantom cohort, generated if "
                        "missing)")
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="dataset layout of --data (default $CARDIOLAB_LAYOUT, else acdc)")
    add_holdout_vendor(p)
    add_profile(p)
    p.add_argument("--out", default=None,
                   help="cache folder (default: the data source's own cache, data/cache/<profile> for the phantom, "
                        "data/cache/<profile>-<folder>-<id> for another folder)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")


def run(args) -> int:
    profile = resolve_profile(args)
    if profile.data_source is None:
        root = phantom.ensure_phantom(profile)
    else:
        root = profile.data_root
    manifest = prepare(root, profile.data_layout, profile, args.out or profile.cache_dir, seed=args.seed)
    rule = f", holdout: vendor {','.join(profile.holdout_vendor)}" if profile.holdout_vendor else ""
    print(f"prepared {root} ({profile.data_layout}{rule}) -> cache {manifest.parent}")
    return 0
