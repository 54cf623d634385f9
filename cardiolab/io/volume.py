"""The "volume" layout: whole-heart 3D images with six labelled structures (CT or MR, no time axis).

On disk:

    ROOT/labels.json                 {"0": "background", "1": "aorta", ..., "6": "RV"}
    ROOT/<id>/<id>_image.nii.gz      (X, Y, Z) float32, zooms (sx, sy, sz) mm
    ROOT/<id>/<id>_mask.nii.gz       (X, Y, Z) uint8 labels 0-6, same shape and affine as the image

The cine layouts (acdc, mnms) hold 4D short-axis studies with labels 0-3; this one has its own label set
(after MedLoRD's six conditioning masks), so it is its own layout with its own checks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from cardiolab.core import CardiolabError, atomic_path, read_json, write_json
from cardiolab.io.nifti import Volume, save_nifti
from cardiolab.io.validate import Problem, check_finite, check_image, check_grid, raise_if_problems, try_load, walk_subjects

# Label values and names; the order of MedLoRD's conditioning masks.
LABELS = {0: "background", 1: "aorta", 2: "LA", 3: "RA", 4: "myocardium", 5: "LV", 6: "RV"}
VALID_LABELS = tuple(LABELS)
LABELS_FILE = "labels.json"
IMAGE_SUFFIX = "_image.nii.gz"
MASK_SUFFIX = "_mask.nii.gz"


@dataclass
class VolumeSubject:
    """One whole-heart volume.

    image:  (X, Y, Z) float32, intensities in [-1, 1] for phantoms and samples (real CT: whatever is stored).
    mask:   (X, Y, Z) uint8, values in VALID_LABELS.
    affine: (4, 4) voxel -> world (mm).
    """

    id: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(sx, sy, sz) in mm, from the affine's column norms."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def write_labels(root: str | os.PathLike) -> Path:
    """ROOT/labels.json naming the label values 0-6."""
    return write_json(Path(root) / LABELS_FILE, {str(k): v for k, v in LABELS.items()})


def write_volume_subject(root: str | os.PathLike, subject: VolumeSubject) -> Path:
    """Write ROOT/<id>/<id>_image.nii.gz and <id>_mask.nii.gz atomically (and ROOT/labels.json if missing).

    Returns the subject folder. A mask outside 0-6, or of another shape than the image, is refused.
    """
    sid = subject.id
    if subject.image.ndim != 3:
        raise CardiolabError(f"volume subject {sid}: image must be (X, Y, Z), got shape {subject.image.shape}")
    if subject.mask.shape != subject.image.shape:
        raise CardiolabError(f"volume subject {sid}: mask shape {subject.mask.shape} differs from image "
                             f"{subject.image.shape}")
    bad = sorted(set(np.unique(subject.mask).tolist()) - set(VALID_LABELS))
    if bad:
        raise CardiolabError(f"volume subject {sid}: mask values {bad} outside 0-6")
    root = Path(root)
    folder = root / sid
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_nifti(tmp / f"{sid}{IMAGE_SUFFIX}", subject.image.astype(np.float32), subject.affine)
        save_nifti(tmp / f"{sid}{MASK_SUFFIX}", subject.mask.astype(np.uint8), subject.affine)
    if not (root / LABELS_FILE).exists():
        write_labels(root)
    return folder


def _is_subject(folder: Path, lower: set[str]) -> bool:
    return f"{folder.name.lower()}{IMAGE_SUFFIX}" in lower


def _looks_like_subject(folder: Path, lower: set[str]) -> str | None:
    if f"{folder.name.lower()}{MASK_SUFFIX}" in lower:
        return f"subject folder without its image {folder.name}{IMAGE_SUFFIX} (file not found)"
    return None


def find_subjects(root: str | os.PathLike) -> tuple[list[Path], list[Problem]]:
    """(subject folders under ROOT sorted by id, layout problems such as a mask without its image)."""
    return walk_subjects(Path(root), _is_subject, _looks_like_subject, f"<id>/<id>{IMAGE_SUFFIX}")


def check_mask_labels(vol: Volume) -> list[Problem]:
    """A mask must hold whole numbers in 0-6."""
    data = vol.data
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            return [Problem(vol.path, "NaN/Inf in a mask")]
        if not np.array_equal(data, np.round(data)):
            return [Problem(vol.path, "mask has non-integer values")]
    bad = sorted(int(v) for v in np.unique(data) if v not in VALID_LABELS)
    if bad:
        return [Problem(vol.path, f"label values {bad} outside 0-6 ({LABELS_FILE})")]
    return []


def load_subject(folder: str | os.PathLike) -> tuple[VolumeSubject | None, list[Problem]]:
    """(the subject, or None when anything is wrong; every problem found, each naming its file)."""
    folder = Path(folder)
    sid, problems = folder.name, []
    image = try_load(folder / f"{sid}{IMAGE_SUFFIX}", 3, problems)
    if image is not None:
        problems += check_image(image)
    mask = try_load(folder / f"{sid}{MASK_SUFFIX}", 3, problems, dtype=None)
    if mask is not None:
        grid = check_grid(mask, image) if image is not None else []
        problems += grid or check_mask_labels(mask)
    if problems:
        return None, problems
    return VolumeSubject(id=sid, image=image.data, mask=mask.data.astype(np.uint8), affine=image.affine), []


def read_volume_subject(folder: str | os.PathLike) -> VolumeSubject:
    """One subject folder -> VolumeSubject; CardiolabError listing its problems."""
    subject, problems = load_subject(folder)
    raise_if_problems(problems)
    return subject


def validate_subject(folder: str | os.PathLike) -> list[Problem]:
    """Every problem of one subject folder (all files read in full)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [Problem(folder, "not a folder")]
    return load_subject(folder)[1]


def check_labels_file(root: Path) -> list[Problem]:
    """ROOT/labels.json must exist and name exactly the labels 0-6 (names are free, values are not)."""
    path = root / LABELS_FILE
    if not path.is_file():
        return [Problem(path, "file not found (names the mask labels 0-6)")]
    try:
        names = read_json(path)
    except (CardiolabError, UnicodeDecodeError) as e:
        return [Problem(path, f"unreadable ({str(e).replace(f'{path}: ', '')})")]
    keys = sorted(names, key=str) if isinstance(names, dict) else None
    if keys != sorted(str(k) for k in VALID_LABELS):
        return [Problem(path, f"must map the labels 0-6 to names, got keys {keys}")]
    return []


def scan(root: str | os.PathLike) -> tuple[int, list[Problem]]:
    """(number of subject folders, every problem) of a volume-layout folder: labels.json and each subject."""
    root = Path(root)
    dirs, problems = find_subjects(root)
    if root.is_dir():
        problems = check_labels_file(root) + problems
    for folder in dirs:
        problems += validate_subject(folder)
    return len(dirs), problems


def scan_volume_cohort(root: str | os.PathLike) -> list[Problem]:
    """Every problem of a volume-layout folder, one per file."""
    return scan(root)[1]


def read_volume_cohort(root: str | os.PathLike) -> Iterator[VolumeSubject]:
    """Yield every subject under ROOT sorted by id (CardiolabError naming the first broken files)."""
    root = Path(root)
    dirs, problems = find_subjects(root)
    if root.is_dir():
        problems = check_labels_file(root) + problems
    raise_if_problems(problems)
    for folder in dirs:
        yield read_volume_subject(folder)


read = read_volume_cohort   # the layout registry's reader (cardiolab.io.layouts)
