"""CLI verbs: each module has HELP, add_arguments(parser) and run(args) -> exit code."""
from __future__ import annotations

import argparse

from cardiolab.profiles import LAYOUTS, PROFILES, Profile, get_profile, override, with_data


def add_profile(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """The shared --profile option (defaults to $CARDIOLAB_PROFILE, else tiny)."""
    p.add_argument("--profile", choices=list(PROFILES), default=default,
                   help="run profile: smoke (CI), tiny (CPU default), full (GPU)")


def add_data(p: argparse.ArgumentParser) -> None:
    """The shared --data / --layout options: the root's data source (`profiles.with_data`)."""
    p.add_argument("--data", default=None, metavar="DIR",
                   help="a cohort folder (ACDC or M&Ms layout) to use instead of the phantom, prepared into its own "
                        "cache data/cache/<profile>-<folder>-<id> (default $CARDIOLAB_DATA, else the phantom)")
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="layout of --data (default $CARDIOLAB_LAYOUT, else acdc)")


def resolve_profile(args) -> Profile:
    """The profile of --profile with the data source of --data / --layout (or $CARDIOLAB_DATA) and any --set."""
    profile = with_data(get_profile(args.profile), getattr(args, "data", None), getattr(args, "layout", None))
    return override(profile, getattr(args, "set", None) or [])
