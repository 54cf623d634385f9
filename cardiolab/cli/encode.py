"""`python -m cardiolab encode`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(encode: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("encode is not implemented yet")
