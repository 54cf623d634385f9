"""`python -m cardiolab function`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(function: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("function is not implemented yet")
