"""`python -m cardiolab sample`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(sample: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("sample is not implemented yet")
