"""CLI verbs: each module has HELP, add_arguments(parser) and run(args) -> exit code."""
from __future__ import annotations

import argparse

from cardiolab.profiles import PROFILES


def add_profile(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """The shared --profile option (defaults to $CARDIOLAB_PROFILE, else tiny)."""
    p.add_argument("--profile", choices=list(PROFILES), default=default,
                   help="run profile: smoke (CI), tiny (CPU default), full (GPU)")
