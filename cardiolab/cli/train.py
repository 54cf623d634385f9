"""`python -m cardiolab train`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(train: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("train is not implemented yet")
