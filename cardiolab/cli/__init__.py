"""CLI verbs: each module has HELP, add_arguments(parser) and run(args) -> exit code."""
from __future__ import annotations

import argparse

from cardiolab.profiles import LAYOUTS, PROFILES, Profile, get_profile, override, with_data


def add_profile(p: argparse.ArgumentParser, default: str | None = None, sets: bool = True) -> None:
    """The shared --profile option (defaults to $CARDIOLAB_PROFILE, else tiny) and its --set overrides. `main`
    resolves them once (`resolve_profile`) before the verb runs: the verb's args.profile is then a Profile.
    sets=False: a verb that hands the profile on by name (notebooks), where an override could not follow."""
    p.add_argument("--profile", choices=list(PROFILES), default=default,
                   help="run profile: smoke (CI), tiny (CPU default), full (GPU)")
    if sets:
        p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override one profile field, e.g. --set vqgan.disc_start=4000 (repeatable); a trained "
                            "run records the profile it was trained with, and is sampled with it")


def add_data(p: argparse.ArgumentParser) -> None:
    """The shared --data / --layout options: the root's data source (`profiles.with_data`)."""
    p.add_argument("--data", default=None, metavar="DIR",
                   help="a cohort folder (ACDC or M&Ms layout) to use instead of the phantom, prepared into its own "
                        "cache data/cache/<profile>-<folder>-<id> (default $CARDIOLAB_DATA, else the phantom)")
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="layout of --data (default $CARDIOLAB_LAYOUT, else acdc)")
    add_holdout_vendor(p)


def add_holdout_vendor(p: argparse.ArgumentParser) -> None:
    """The shared --holdout-vendor option: the data source's split rule (`profiles.with_data`)."""
    p.add_argument("--holdout-vendor", default=None, metavar="A[,B]",
                   help="put every subject of these vendors (as the cohort's CSV names them, e.g. M&Ms's A..D) in "
                        "the holdout split and split the rest between public and private, to score on a vendor never "
                        "trained on (default $CARDIOLAB_HOLDOUT_VENDOR, else none)")


def resolve_profile(args) -> Profile:
    """The profile of --profile with the data source of --data / --layout / --holdout-vendor (or $CARDIOLAB_DATA)
    and any --set."""
    if isinstance(args.profile, Profile):          # resolved already (`main`)
        return args.profile
    profile = with_data(get_profile(args.profile), getattr(args, "data", None), getattr(args, "layout", None),
                        getattr(args, "holdout_vendor", None))
    return override(profile, getattr(args, "set", None) or [])
