"""`python -m cardiolab prepare`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(prepare: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("prepare is not implemented yet")
