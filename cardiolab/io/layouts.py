"""The one registry of dataset layouts: reading, validation and detection all dispatch here.

A layout is a module with `find_subjects(root)`, `scan(root) -> (n, problems)`, `validate_subject(folder)` and
`read(root) -> Iterator[Subject]`. A third layout is one module and one line in LAYOUTS.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Iterator

from cardiolab.core import CardiolabError
from cardiolab.io import acdc, mnms, volume
from cardiolab.io.cohort import Subject
from cardiolab.io.validate import Problem, check_distinct

# Detection order matters: an ACDC folder is recognised first (phantom and synthetic cohorts use it too).
# acdc and mnms are 4D short-axis cines (read as Subject); volume is whole-heart 3D (read as VolumeSubject).
LAYOUTS: dict[str, ModuleType] = {"acdc": acdc, "mnms": mnms, "volume": volume}


def get_layout(name: str) -> ModuleType:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise CardiolabError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUTS)}") from None


def detect_layout(root: str | os.PathLike) -> str:
    """The first layout with subject folders under ROOT ('acdc' when none has any)."""
    if not Path(root).is_dir():
        raise CardiolabError(f"{root}: not a folder")
    return next((name for name, mod in LAYOUTS.items() if mod.find_subjects(root)[0]), "acdc")


def read_cohort(root: str | os.PathLike, layout: str = "acdc") -> Iterator[Subject]:
    """Yield every subject of a dataset folder, validated (bad files raise CardiolabError naming them)."""
    yield from get_layout(layout).read(root)


def scan_cohort(root: str | os.PathLike, layout: str = "acdc") -> tuple[int, list[Problem]]:
    """(number of subject folders found, every problem) for a dataset folder: each file's, then subjects whose
    images are voxel-identical to another's (read once more, only when every file is sound)."""
    n, problems = get_layout(layout).scan(Path(root))
    if n > 1 and not problems:
        problems = check_distinct({Path(root) / s.id: s.image for s in read_cohort(root, layout)})
    return n, problems


def validate_cohort(root: str | os.PathLike, layout: str = "acdc") -> list[Problem]:
    """Every problem of a dataset folder: the layout (no subjects, stray folders, CSV) and each subject."""
    return scan_cohort(root, layout)[1]


def validate_subject_dir(folder: str | os.PathLike, layout: str = "acdc") -> list[Problem]:
    """Every problem of one subject folder (all files read in full)."""
    return get_layout(layout).validate_subject(Path(folder))
