"""`python -m cardiolab check`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(check: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("check is not implemented yet")
