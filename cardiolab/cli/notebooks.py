"""`python -m cardiolab notebooks`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(notebooks: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("notebooks is not implemented yet")
