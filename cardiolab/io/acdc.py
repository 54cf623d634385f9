"""Reader for the ACDC layout (also used by phantom and synthetic cohorts).

ROOT may be the folder holding the subject folders, or any folder above them (ACDC's `training/` and
`testing/`, or `database/training/...`): subject folders are found recursively. A subject folder is a
folder `<id>` with `<id>_4d.nii.gz` inside; see cardiolab.io.cohort for the files beside it.
Every file is checked while it is read (cardiolab.io.validate); a broken one raises a CardiolabError
naming it, so training never starts on broken data.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from cardiolab.io.cohort import Subject
from cardiolab.io.validate import (Problem, check_finite, check_frame_index, check_grid, check_image, raise_if_problems,
                                   try_load, try_load_labels, walk_subjects)

REQUIRED_INFO = ("ED", "ES", "NbFrame")   # integers; ED/ES 1-based on disk
NUMERIC_INFO = ("Height", "Weight")       # numbers when present (an empty value means unknown)


def _is_subject(folder: Path, lower: set[str]) -> bool:
    return f"{folder.name.lower()}_4d.nii.gz" in lower


def _looks_like_subject(folder: Path, lower: set[str]) -> str | None:
    prefix = folder.name.lower() + "_"
    if "info.cfg" in lower or any(n.startswith(prefix) and n.endswith(".nii.gz") for n in lower):
        return f"subject folder without its cine {folder.name}_4d.nii.gz"
    return None


def find_subjects(root: str | os.PathLike) -> tuple[list[Path], list[Problem]]:
    """(subject folders under ROOT sorted by id, layout problems such as half subjects or no subjects)."""
    return walk_subjects(Path(root), _is_subject, _looks_like_subject, "<id>/<id>_4d.nii.gz")


def subject_dirs(root: str | os.PathLike) -> list[Path]:
    """Subject folders under ROOT, sorted by id; CardiolabError when there are none or some are broken."""
    dirs, problems = find_subjects(root)
    raise_if_problems(problems)
    return dirs


def _number(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_info(path: str | os.PathLike) -> tuple[dict | None, list[Problem]]:
    """Info.cfg -> (dict with numbers cast and ED/ES/NbFrame as ints, []) or (None, problems)."""
    path = Path(path)
    if not path.is_file():
        return None, [Problem(path, "Info.cfg missing")]
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM from Windows editors
    except (OSError, UnicodeDecodeError) as e:
        return None, [Problem(path, f"unreadable ({type(e).__name__}: {e})")]
    info, problems = {}, []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            problems.append(Problem(path, f"line {n}: expected 'Key: value', got {line[:60]!r}"))
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        info[key] = _number(value)
    for key in REQUIRED_INFO:
        value = info.get(key)
        if key not in info:
            problems.append(Problem(path, f"missing key {key}"))
        elif isinstance(value, float) and value.is_integer():
            info[key] = int(value)
        elif not isinstance(value, int):
            problems.append(Problem(path, f"{key} is not an integer: {value!r}"))
    for key in NUMERIC_INFO:
        if info.get(key) == "":
            del info[key]
        elif key in info and not isinstance(info[key], (int, float)):
            problems.append(Problem(path, f"{key} is not a number: {info[key]!r}"))
    return (None if problems else info), problems


def parse_info(path: str | os.PathLike) -> dict:
    """Info.cfg -> dict (numbers cast); CardiolabError naming the file when missing or garbled."""
    info, problems = read_info(path)
    raise_if_problems(problems)
    return info


def load_subject(folder: str | os.PathLike, deep: bool = False) -> tuple[Subject | None, list[Problem]]:
    """Read and check one subject folder: (Subject, []) or (None, every problem found).

    deep: also read the per-frame images `<id>_frameXX.nii.gz`, which the Subject does not need.
    """
    folder = Path(folder)
    sid, problems = folder.name, []
    info_path = folder / "Info.cfg"
    info, p = read_info(info_path)
    problems += p
    vol = try_load(folder / f"{sid}_4d.nii.gz", 4, problems)
    if vol is not None:
        problems += check_image(vol)
    ed = es = None
    if info is not None:
        n_frames = info["NbFrame"]
        if vol is not None and n_frames != vol.data.shape[3]:
            found = vol.data.shape[3]
            problems.append(Problem(info_path, f"NbFrame={n_frames} but {vol.path.name} has {found} frames"))
        p = (check_frame_index(info_path, "ED", info["ED"], n_frames, one_based=True)
             + check_frame_index(info_path, "ES", info["ES"], n_frames, one_based=True))
        problems += p
        if not p:
            ed, es = info["ED"] - 1, info["ES"] - 1

    labels, stray = {}, False
    for path, frame in _frame_files(folder, sid, "_gt"):
        if ed is not None and frame not in (ed, es):
            stray = True
            problems.append(Problem(path, f"labels for frame {frame + 1}, but Info.cfg has ED={ed + 1}, ES={es + 1}"))
        elif (lab := try_load_labels(path, 3, vol, problems)) is not None:
            labels[frame] = lab

    if deep:  # the per-frame images duplicate the cine; read them only to report broken files
        for path, _ in _frame_files(folder, sid, ""):
            if (frame_vol := try_load(path, 3, problems)) is not None:
                problems += check_finite(frame_vol) + (check_grid(frame_vol, vol) if vol is not None else [])

    series_path = folder / f"{sid}_4d_gt.nii.gz"
    series = try_load_labels(series_path, 4, vol, problems) if series_path.exists() else None
    if labels and series is None and ed is not None and not stray:  # ED without ES (or the reverse): dropped later
        for frame in sorted({ed, es} - set(labels)):
            problems.append(Problem(folder / f"{sid}_frame{frame + 1:02d}_gt.nii.gz",
                                    f"missing: frame {frame + 1} is {'ED' if frame == ed else 'ES'} in Info.cfg and "
                                    "the other phase is labelled"))

    if problems:
        return None, problems
    extra = {k: v for k, v in info.items() if k not in REQUIRED_INFO}
    frame_ms = vol.zooms[3] if len(vol.zooms) > 3 else 0.0
    return Subject(id=sid, image=vol.data, affine=vol.affine, frame_ms=float(frame_ms), ed=ed, es=es,
                   labels=labels, label_series=series, info=extra), []


def _frame_files(folder: Path, sid: str, suffix: str) -> list[tuple[Path, int]]:
    """[(path, 0-based frame)] of `<id>_frameXX<suffix>.nii.gz` files."""
    pattern = re.compile(rf"{re.escape(sid)}_frame(\d+){suffix}\.nii\.gz", re.IGNORECASE)
    return [(p, int(m.group(1)) - 1) for p in sorted(folder.iterdir()) if (m := pattern.fullmatch(p.name))]


def read_subject(folder: str | os.PathLike) -> Subject:
    """One subject folder -> Subject; CardiolabError listing the problems (each naming its file)."""
    subject, problems = load_subject(folder)
    raise_if_problems(problems)
    return subject


def validate_subject(folder: str | os.PathLike) -> list[Problem]:
    """Every problem of one subject folder, reading all its files."""
    folder = Path(folder)
    if not folder.is_dir():
        return [Problem(folder, "not a folder")]
    if not _is_subject(folder, {n.name.lower() for n in folder.iterdir()}):
        return [Problem(folder, f"no {folder.name}_4d.nii.gz")]
    return load_subject(folder, deep=True)[1]


def scan(root: str | os.PathLike) -> tuple[int, list[Problem]]:
    """(number of subject folders, every problem) of an ACDC-layout dataset."""
    dirs, problems = find_subjects(root)
    for folder in tqdm(dirs, desc="check", unit="subject", leave=False, disable=None):
        problems += validate_subject(folder)
    return len(dirs), problems


def read(root: str | os.PathLike) -> Iterator[Subject]:
    """Yield every subject under ROOT, sorted by id (CardiolabError on the first broken one)."""
    for folder in subject_dirs(root):
        yield read_subject(folder)



read_acdc = read   # the name the rest of cardiolab and its users know
