"""`python -m cardiolab bench`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(bench: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("bench is not implemented yet")
