"""`python -m cardiolab phantom`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(phantom: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("phantom is not implemented yet")
