"""Reader for the M&Ms and M&Ms-2 layouts, mapped onto cardiolab's canonical Subject.

M&Ms:   ROOT/<Training/Labeled|Training/Unlabeled|Validation|Testing>/<code>/<code>_sa.nii.gz (X, Y, Z, T)
        and <code>_sa_gt.nii.gz (same shape, labels only at the ED and ES frames); ROOT/*.csv with
        External code, VendorName, Vendor, Centre, ED, ES (0-based), Pathology, Age, Sex, Height, Weight.
M&Ms-2: ROOT/.../<code>/<code>_SA_CINE.nii.gz, <code>_SA_ED.nii.gz, <code>_SA_ED_gt.nii.gz, <code>_SA_ES.nii.gz,
        <code>_SA_ES_gt.nii.gz (+ long-axis files, ignored); a CSV with SUBJECT_CODE, DISEASE, VENDOR, ...
        It gives no frame indices: ED/ES are the cine frames equal to the SA_ED / SA_ES volumes.

Tolerant by design: subject folders are found recursively, file names and CSV columns match
case-insensitively, and the CSV is looked for at ROOT, one level below, or up to two levels above.
M&Ms labels (1 LV, 2 MYO, 3 RV) are mapped to the canonical ones (1 RV, 2 MYO, 3 LV) on reading.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from cardiolab.io.cohort import Subject
from cardiolab.io.nifti import Volume
from cardiolab.io.validate import (Problem, check_finite, check_image, check_frame_index, raise_if_problems, try_load,
                                   try_load_labels, walk_subjects)

# index = M&Ms label, value = canonical label: 0 bg, 1 LV -> 3, 2 MYO -> 2, 3 RV -> 1.
MNMS_TO_CANONICAL = np.array([0, 3, 2, 1], dtype=np.uint8)

NO_CSV = "no information CSV found (a *.csv with an 'External code' or 'SUBJECT_CODE' column at the dataset root)"
_CODE_COLUMNS = ("externalcode", "subjectcode", "code", "subjectid", "subject", "id")
# Info key -> CSV columns (normalised: lower case, letters and digits only) that may hold it.
_INFO_COLUMNS = {"Group": ("pathology", "disease", "group"), "Vendor": ("vendor", "vendorname"),
                 "Centre": ("centre", "center"), "Age": ("age",), "Sex": ("sex", "gender"),
                 "Height": ("height",), "Weight": ("weight",)}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _norm_code(code: str) -> str:
    """'001', '1' and ' 1 ' are the same M&Ms-2 subject; letter codes compare case-insensitively."""
    code = code.strip().lower()
    return (code.lstrip("0") or "0") if code.isdigit() else code


@dataclass(frozen=True)
class Table:
    """The dataset's information CSV: rows keyed by normalised subject code, columns normalised."""

    path: Path
    rows: dict[str, dict[str, str]]

    def row(self, code: str) -> dict[str, str] | None:
        return self.rows.get(_norm_code(code))


def read_table(path: str | os.PathLike) -> tuple[Table | None, list[Problem]]:
    """Read an M&Ms information CSV; (None, problems) when unreadable or without a subject-code column."""
    path = Path(path)
    try:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            text = path.read_text(encoding="latin-1")
        records = list(csv.reader(text.splitlines()))
    except (OSError, csv.Error) as e:
        return None, [Problem(path, f"unreadable CSV ({type(e).__name__}: {e})")]
    if not records:
        return None, [Problem(path, "empty CSV")]
    header = [_norm(h) for h in records[0]]
    code_col = next((header.index(c) for c in _CODE_COLUMNS if c in header), None)
    if code_col is None:
        return None, [Problem(path, f"no subject-code column (one of 'External code', 'SUBJECT_CODE') in {records[0]}")]
    rows = {}
    for rec in records[1:]:
        if len(rec) > code_col and rec[code_col].strip():
            rows[_norm_code(rec[code_col])] = {h: v.strip() for h, v in zip(header, rec) if h}
    return Table(path, rows), []


def find_table(root: str | os.PathLike) -> Table | None:
    """The first CSV with a subject-code column at ROOT, one level below, or up to two levels above."""
    root = Path(root).resolve()
    places = [root, *sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))]
    places += list(root.parents)[:2]
    for place in places:
        for path in sorted(place.glob("*.csv")) + sorted(place.glob("*.CSV")):
            table, _ = read_table(path)
            if table is not None:
                return table
    return None


def _files(folder: Path) -> dict[str, Path]:
    """{lower-case name: path} of a folder's files, so `_SA_CINE` and `_sa_cine` both match."""
    return {p.name.lower(): p for p in folder.iterdir() if p.is_file()}


def _is_subject(folder: Path, lower: set[str]) -> bool:
    code = folder.name.lower()
    return f"{code}_sa.nii.gz" in lower or f"{code}_sa_cine.nii.gz" in lower


def _looks_like_subject(folder: Path, lower: set[str]) -> str | None:
    prefix = folder.name.lower() + "_sa"
    if any(n.startswith(prefix) and n.endswith(".nii.gz") for n in lower):
        return (f"subject folder without its cine {folder.name}_sa.nii.gz (M&Ms) "
                f"or {folder.name}_SA_CINE.nii.gz (M&Ms-2)")
    return None


def find_subjects(root: str | os.PathLike) -> tuple[list[Path], list[Problem]]:
    """(subject folders under ROOT sorted by code, layout problems)."""
    return walk_subjects(Path(root), _is_subject, _looks_like_subject,
                         "<code>/<code>_sa.nii.gz or <code>/<code>_SA_CINE.nii.gz")


def _info(row: dict[str, str] | None, dataset: str) -> dict:
    info: dict = {"Dataset": dataset}
    for key, columns in _INFO_COLUMNS.items():
        value = next((row[c] for c in columns if row and row.get(c)), None)
        if value is None:
            continue
        try:
            info[key] = float(value) if key in ("Age", "Height", "Weight") else value
        except ValueError:
            info[key] = value
    info.setdefault("Group", "UNKNOWN")
    return info


def _frame_from_row(table: Table, code: str, row: dict | None, key: str, problems: list[Problem]) -> int | None:
    """ED/ES (0-based) from the CSV row, None when the CSV has no such column."""
    value = (row or {}).get(key.lower(), "")
    if not value:
        return None
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        return int(number)
    except ValueError:
        problems.append(Problem(table.path, f"subject {code}: {key} is not an integer: {value!r}"))
        return None


def _load_mnms1(folder: Path, files: dict[str, Path], table: Table | None, row: dict | None,
                problems: list[Problem]) -> Subject | None:
    code = folder.name
    vol = try_load(files[f"{code.lower()}_sa.nii.gz"], 4, problems)
    if vol is not None:
        problems += check_image(vol)
    frames = {}
    if table is not None and row is not None:
        for key in ("ED", "ES"):
            if not row.get(key.lower()):
                problems.append(Problem(table.path, f"subject {code}: no {key} value"))
            elif (frame := _frame_from_row(table, code, row, key, problems)) is not None and vol is not None:
                p = check_frame_index(table.path, f"subject {code}: {key}", frame, vol.data.shape[3],
                                      one_based=False)
                problems += p
                frames[key] = None if p else frame
    labels = {}
    gt_path = files.get(f"{code.lower()}_sa_gt.nii.gz")
    if gt_path is not None:
        gt = try_load_labels(gt_path, 4, vol, problems, mapping=MNMS_TO_CANONICAL)
        for key, frame in frames.items():
            if gt is None or frame is None:
                continue
            if not gt[..., frame].any():
                problems.append(Problem(gt_path, f"no labels at frame {frame} ({key} from {table.path.name})"))
            labels[frame] = gt[..., frame]
    if problems or vol is None:
        return None
    return _subject(code, vol, frames["ED"], frames["ES"], labels, _info(row, "M&Ms"))


def _load_mnms2(folder: Path, files: dict[str, Path], table: Table | None, row: dict | None,
                problems: list[Problem]) -> Subject | None:
    code = folder.name
    cine = try_load(files[f"{code.lower()}_sa_cine.nii.gz"], 4, problems)
    if cine is not None:
        problems += check_image(cine)
    frames, labels = {}, {}
    for key in ("ED", "ES"):
        image_path = files.get(f"{code.lower()}_sa_{key.lower()}.nii.gz")
        gt_path = files.get(f"{code.lower()}_sa_{key.lower()}_gt.nii.gz")
        frame = _frame_from_row(table, code, row, key, problems) if table is not None else None
        if frame is None and image_path is None:
            problems.append(Problem(folder, f"no {code}_SA_{key}.nii.gz to locate the {key} frame"))
        elif frame is None and cine is not None and (image := try_load(image_path, 3, problems)) is not None:
            frame = _matching_frame(image, cine, problems)
        if frame is not None and cine is not None:
            p = check_frame_index(table.path if table else folder, f"subject {code}: {key}", frame,
                                  cine.data.shape[3], one_based=False)
            problems += p
            frame = None if p else frame
        frames[key] = frame
        if gt_path is not None:
            gt = try_load_labels(gt_path, 3, cine, problems, mapping=MNMS_TO_CANONICAL)
            if gt is not None and frame is not None:
                labels[frame] = gt
    if problems or cine is None:
        return None
    return _subject(code, cine, frames["ED"], frames["ES"], labels, _info(row, "M&Ms-2"))


def _matching_frame(image: Volume, cine: Volume, problems: list[Problem]) -> int | None:
    """The cine frame an ED/ES volume was cut from (smallest mean absolute difference)."""
    if image.spatial_shape != cine.spatial_shape:
        problems.append(Problem(image.path, f"shape {image.spatial_shape} does not match "
                                            f"{cine.path.name} {cine.spatial_shape}"))
        return None
    diff = np.abs(cine.data - image.data[..., None]).mean(axis=(0, 1, 2))  # (T,)
    return int(np.argmin(diff))


def _subject(code: str, vol: Volume, ed: int, es: int, labels: dict, info: dict) -> Subject:
    frame_ms = vol.zooms[3] if len(vol.zooms) > 3 else 0.0
    return Subject(id=code, image=vol.data, affine=vol.affine, frame_ms=float(frame_ms), ed=ed, es=es,
                   labels=labels, info=info)


def load_subject(folder: str | os.PathLike, table: Table | None) -> tuple[Subject | None, list[Problem]]:
    """Read and check one M&Ms / M&Ms-2 subject folder: (Subject, []) or (None, every problem found)."""
    folder = Path(folder)
    files, problems = _files(folder), []
    row = table.row(folder.name) if table is not None else None
    if table is None:
        problems.append(Problem(folder, NO_CSV))
    elif row is None:
        problems.append(Problem(table.path, f"no row for subject {folder.name}"))
    if f"{folder.name.lower()}_sa.nii.gz" in files:
        subject = _load_mnms1(folder, files, table, row, problems)
    else:
        subject = _load_mnms2(folder, files, table, row, problems)
    return (None, problems) if problems else (subject, [])


def read_subject(folder: str | os.PathLike, table: Table | None = None) -> Subject:
    """One subject folder -> Subject (CSV looked for above it unless given); CardiolabError on problems."""
    subject, problems = load_subject(folder, table or find_table(Path(folder).parent))
    raise_if_problems(problems)
    return subject


def validate_subject(folder: str | os.PathLike) -> list[Problem]:
    folder = Path(folder)
    if not folder.is_dir():
        return [Problem(folder, "not a folder")]
    if not _is_subject(folder, set(_files(folder))):
        return [Problem(folder, f"no {folder.name}_sa.nii.gz or {folder.name}_SA_CINE.nii.gz")]
    return load_subject(folder, find_table(folder.parent))[1]


def scan(root: str | os.PathLike) -> tuple[int, list[Problem]]:
    """(number of subject folders, every problem) of an M&Ms / M&Ms-2 dataset."""
    dirs, problems = find_subjects(root)
    if not dirs:
        return 0, problems
    table = find_table(root)
    if table is None:
        problems.append(Problem(Path(root), NO_CSV))
    for folder in tqdm(dirs, desc="check", unit="subject", leave=False, disable=None):
        problems += [p for p in load_subject(folder, table)[1] if p.message != NO_CSV]  # reported once above
    return len(dirs), problems


def read(root: str | os.PathLike) -> Iterator[Subject]:
    """Yield every subject under ROOT in canonical form (CardiolabError on the first broken one)."""
    dirs, problems = find_subjects(root)
    table = find_table(root) if dirs else None
    if dirs and table is None:
        problems.append(Problem(Path(root), NO_CSV))
    raise_if_problems(problems)
    for folder in dirs:
        subject, problems = load_subject(folder, table)
        raise_if_problems(problems)
        yield subject


read_mnms = read
