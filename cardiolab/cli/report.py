"""`python -m cardiolab report`: not implemented yet."""
from __future__ import annotations

from cardiolab.core import CardiolabError

HELP = "(report: not implemented yet)"


def add_arguments(p) -> None:
    pass


def run(args) -> int:
    raise CardiolabError("report is not implemented yet")
