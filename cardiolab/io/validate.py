"""Dataset validation: every problem a cohort folder can have, as one line naming the file.

The readers (`read_acdc`, `read_mnms`) run the same checks while loading and raise a CardiolabError
with the first problems, so training never starts on broken data; `python -m cardiolab check` lists
them all. The checks on arrays live here; which files a layout has lives in acdc.py / mnms.py, and the
registry that dispatches between layouts in layouts.py.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cardiolab.core import CardiolabError
from cardiolab.io.nifti import NiftiError, Volume, load_nifti

VALID_LABELS = (0, 1, 2, 3)
# Affines of a cine and its label files are written by the same tool; allow float32 header rounding.
AFFINE_ATOL_MM = 1e-2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file (or folder); str() is 'PATH: message'."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def raise_if_problems(problems: list[Problem], limit: int = 5) -> None:
    """Raise a CardiolabError listing the first `limit` problems (no-op when there are none)."""
    if not problems:
        return
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more (run `python -m cardiolab check` to list them)")
    raise CardiolabError("\n".join(lines))


def try_load(path: Path, ndim: int, problems: list[Problem], dtype=np.float32) -> Volume | None:
    """load_nifti that records a Problem instead of raising."""
    try:
        return load_nifti(path, ndim=ndim, dtype=dtype)
    except NiftiError as e:
        problems.append(Problem(e.path, e.reason))
        return None


def check_finite(vol: Volume) -> list[Problem]:
    """NaN/Inf voxels poison every loss downstream; report how many."""
    if np.issubdtype(vol.data.dtype, np.floating):
        bad = int(np.size(vol.data) - np.count_nonzero(np.isfinite(vol.data)))
        if bad:
            return [Problem(vol.path, f"{bad} NaN/Inf voxels")]
    return []


def check_image(vol: Volume) -> list[Problem]:
    """A cine must be finite and not constant (a generator that collapsed writes one value everywhere)."""
    problems = check_finite(vol)
    if not problems and np.size(vol.data) and np.ptp(vol.data) == 0:
        problems.append(Problem(vol.path, f"constant image (every voxel is {vol.data.flat[0]:g})"))
    return problems


def check_distinct(images: dict[Path, np.ndarray]) -> list[Problem]:
    """Subjects of one cohort whose images are voxel-identical (a collapsed generator, or a copy)."""
    first: dict[str, Path] = {}
    problems = []
    for path, image in images.items():
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
        if digest in first:
            problems.append(Problem(path, f"voxel-identical to {first[digest]}"))
        else:
            first[digest] = path
    return problems


def check_grid(vol: Volume, ref: Volume) -> list[Problem]:
    """Label and image files must share the spatial shape and affine."""
    if vol.spatial_shape != ref.spatial_shape:
        return [Problem(vol.path, f"shape {vol.spatial_shape} does not match {ref.path.name} {ref.spatial_shape}")]
    if not np.allclose(vol.affine, ref.affine, atol=AFFINE_ATOL_MM, rtol=1e-4):
        return [Problem(vol.path, f"affine does not match {ref.path.name}")]
    return []


def check_labels(vol: Volume, mapping: np.ndarray | None = None) -> tuple[np.ndarray | None, list[Problem]]:
    """Label map -> canonical uint8 (0 bg, 1 RV, 2 MYO, 3 LV), or None with the problems found.

    mapping: (4,) lookup table from the file's convention to the canonical one (None: already canonical).
    """
    data = vol.data
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            return None, [Problem(vol.path, "NaN/Inf in a label map")]
        if not np.array_equal(data, np.round(data)):
            return None, [Problem(vol.path, "label map has non-integer values")]
    values = np.unique(data)
    bad = sorted(int(v) for v in values if v not in VALID_LABELS)
    if bad:
        return None, [Problem(vol.path, f"label values {bad} outside {{0, 1, 2, 3}}")]
    labels = data.astype(np.uint8)
    if mapping is not None:
        labels = mapping[labels]
    return labels, []


def try_load_labels(path: Path, ndim: int, ref: Volume | None, problems: list[Problem],
                    mapping: np.ndarray | None = None) -> np.ndarray | None:
    """Read a label file and check it against its image `ref` (shape, affine, frame count).

    Returns canonical uint8 labels of the file's shape, or None after recording the problems.
    """
    lab = try_load(path, ndim, problems, dtype=None)
    if lab is None:
        return None
    p = check_grid(lab, ref) if ref is not None else []
    if not p and ndim == 4 and ref is not None and lab.data.shape[3] != ref.data.shape[3]:
        p = [Problem(path, f"{lab.data.shape[3]} frames but {ref.path.name} has {ref.data.shape[3]}")]
    if p:
        problems += p
        return None
    labels, p = check_labels(lab, mapping)
    problems += p
    return labels


def check_frame_index(path: Path, name: str, value: int, n_frames: int, one_based: bool) -> list[Problem]:
    lo, hi = (1, n_frames) if one_based else (0, n_frames - 1)
    if not lo <= value <= hi:
        return [Problem(path, f"{name}={value} outside {lo}..{hi} ({n_frames} frames)")]
    return []


def walk_subjects(root: Path, is_subject: Callable[[Path, set[str]], bool],
                  looks_like_subject: Callable[[Path, set[str]], str | None],
                  expected: str) -> tuple[list[Path], list[Problem]]:
    """Subject folders anywhere under ROOT (sorted by id), and problems: stray half-subjects, duplicate ids.

    is_subject(folder, lower-case file names) says a folder is a complete subject (not descended into);
    looks_like_subject returns a message when a folder has a subject's files but not its main image.
    expected: what a subject folder holds, for the 'no subject folders' message.
    Hidden folders (atomic-write temporaries) are skipped.
    """
    if not root.is_dir():
        return [], [Problem(root, "not a folder")]
    dirs, problems, seen = [], [], {}
    for here, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        folder, lower = Path(here), {n.lower() for n in names}
        if is_subject(folder, lower):
            subdirs[:] = []
            if folder.name in seen:
                problems.append(Problem(folder, f"duplicate subject id {folder.name} (also {seen[folder.name]})"))
                continue
            seen[folder.name] = folder
            dirs.append(folder)
        elif message := looks_like_subject(folder, lower):
            problems.append(Problem(folder, message))
    if not dirs and not problems:
        problems.append(Problem(root, f"no subject folders found (expected {expected})"))
    return sorted(dirs, key=lambda d: (d.name, str(d))), problems
