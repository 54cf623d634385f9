"""Reader for the ACDC layout (also used by phantom and synthetic cohorts).

ROOT may be the folder holding the subject folders, or one holding `training/` and `testing/`.
A subject folder is any folder with a `<id>_4d.nii.gz` inside.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

from cardiolab.core import CardiolabError
from cardiolab.io.cohort import Subject


def subject_dirs(root: str | os.PathLike) -> list[Path]:
    """Subject folders under ROOT (or ROOT/training and ROOT/testing), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise CardiolabError(f"{root}: not a folder")
    bases = [root / s for s in ("training", "testing") if (root / s).is_dir()] or [root]
    dirs = sorted(d for b in bases for d in b.iterdir() if d.is_dir() and (d / f"{d.name}_4d.nii.gz").exists())
    if not dirs:
        raise CardiolabError(f"{root}: no subject folders (expected <id>/<id>_4d.nii.gz)")
    return dirs


def parse_info(path: Path) -> dict:
    """Info.cfg -> dict; numbers become floats/ints."""
    if not path.exists():
        raise CardiolabError(f"{path}: Info.cfg missing")
    info = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise CardiolabError(f"{path}:{n}: expected 'Key: value', got {line!r}")
        key, value = (s.strip() for s in line.split(":", 1))
        info[key] = _number(value)
    return info


def _number(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_subject(folder: str | os.PathLike) -> Subject:
    folder = Path(folder)
    sid = folder.name
    info = parse_info(folder / "Info.cfg")
    img = nib.load(folder / f"{sid}_4d.nii.gz")
    image = np.asarray(img.dataobj, dtype=np.float32)
    zooms = img.header.get_zooms()
    ed, es = int(info.pop("ED")) - 1, int(info.pop("ES")) - 1
    info.pop("NbFrame", None)
    labels = {}
    for frame in (ed, es):
        gt = folder / f"{sid}_frame{frame + 1:02d}_gt.nii.gz"
        if gt.exists():
            labels[frame] = np.asarray(nib.load(gt).dataobj).astype(np.uint8)
    series_path = folder / f"{sid}_4d_gt.nii.gz"
    series = np.asarray(nib.load(series_path).dataobj).astype(np.uint8) if series_path.exists() else None
    return Subject(id=sid, image=image, affine=img.affine, frame_ms=float(zooms[3]) if len(zooms) > 3 else 0.0,
                   ed=ed, es=es, labels=labels, label_series=series, info=info)


def read_acdc(root: str | os.PathLike) -> Iterator[Subject]:
    for folder in subject_dirs(root):
        yield read_subject(folder)
