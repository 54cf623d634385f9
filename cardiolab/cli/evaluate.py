"""`python -m cardiolab evaluate`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(evaluate: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("evaluate is not implemented yet")
