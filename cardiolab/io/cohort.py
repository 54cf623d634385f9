"""The cohort format every stage shares: the `Subject` record and the one cohort writer (ACDC layout).

On disk a cohort is a folder of subject folders in the ACDC layout:

    ROOT/<id>/<id>_4d.nii.gz                 cine, (x, y, slice, time), zooms (sx, sy, sz, frame_ms)
    ROOT/<id>/<id>_frameXX.nii.gz            the ED and ES frames (XX is 1-based)
    ROOT/<id>/<id>_frameXX_gt.nii.gz         their labels: 0 background, 1 RV, 2 MYO, 3 LV
    ROOT/<id>/<id>_4d_gt.nii.gz              full label series (phantom / synthetic only; real ACDC lacks it)
    ROOT/<id>/Info.cfg                       ED, ES, Group, Height, NbFrame, Weight (+ optional extras)

Phantoms, real datasets and every generator's samples all pass through `Subject`, so `check`,
`evaluate` and the audits read any of them the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cardiolab.core import CardiolabError, atomic_path, read_json
from cardiolab.io.nifti import save_nifti

# cardiolab's one label convention (the ACDC one). Other layouts are mapped onto it when read.
LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}

# Model tensors live in [-1, 1]; a written cohort stores (x + 1) * INTENSITY_SCALE: positive magnitudes in
# [0, 2000], like a scanner's. `prepare` rescales by percentiles, so the constant cancels when read back.
INTENSITY_SCALE = 1000.0

# Info.cfg keys every subject has, in ACDC's order; anything else in `info` is written after them.
INFO_KEYS = ("ED", "ES", "Group", "Height", "NbFrame", "Weight")

# A sampled cohort's record, written by a generator's `sample`: generator, task, run, run_id, n, seed, steps
# (DP runs add "privacy").
SAMPLES_JSON = "samples.json"


def samples_record(cohort: str | os.PathLike) -> dict:
    """The samples.json of a sampled cohort folder; {} when it has none (real data, or not sampled yet)."""
    path = Path(cohort) / SAMPLES_JSON
    return read_json(path) if path.is_file() else {}


@dataclass
class Subject:
    """One short-axis cine study in canonical form.

    image:  (X, Y, Z, T) float32, as stored in NIfTI: x, y, slice (base -> apex), frame.
    affine: (4, 4) voxel -> world (mm) for the spatial axes.
    frame_ms: time between frames in milliseconds (the NIfTI 4th zoom).
    ed, es: 0-based frame indices of end-diastole and end-systole.
    labels: {frame: (X, Y, Z) uint8} in the canonical convention; real ACDC has ED and ES only.
    label_series: (X, Y, Z, T) uint8 or None: every frame labelled (phantom, two-stage synthesis).
    info: the rest of Info.cfg and attributes (Group, Height, Weight, Age, Sex, ...).
    """

    id: str
    image: np.ndarray
    affine: np.ndarray
    frame_ms: float
    ed: int
    es: int
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    label_series: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(sx, sy, sz) in mm, from the affine's column norms."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def voxel_ml(self) -> float:
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0

    @property
    def n_frames(self) -> int:
        return int(self.image.shape[3])

    def labels_at(self, frame: int) -> np.ndarray | None:
        """Labels of one frame, from `labels` or else `label_series`."""
        if frame in self.labels:
            return self.labels[frame]
        if self.label_series is not None:
            return self.label_series[..., frame]
        return None


def make_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """Diagonal affine for (sx, sy, sz) mm voxels, as ACDC stores them."""
    return np.diag([*map(float, spacing), 1.0])


def format_info(subject: Subject) -> str:
    """Info.cfg text: ACDC's keys first (ED/ES 1-based), then any extra attributes."""
    info = dict(subject.info)
    info.update(ED=subject.ed + 1, ES=subject.es + 1, NbFrame=subject.n_frames)
    info.setdefault("Group", "UNKNOWN")
    lines = [f"{k}: {info.pop(k, '')}" for k in INFO_KEYS]
    lines += [f"{k}: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def write_subject(root: str | os.PathLike, subject: Subject, extra_files: dict[str, str] | None = None) -> Path:
    """Write one subject folder in the ACDC layout, atomically (a crash leaves no half-written folder).

    extra_files: {file name: text} written beside the NIfTI files (e.g. phantom_truth.json).
    Returns the subject folder.
    """
    if subject.image.ndim != 4:
        raise CardiolabError(f"subject {subject.id}: image must be (X, Y, Z, T), got shape {subject.image.shape}")
    folder = Path(root) / subject.id
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        sid = subject.id
        # integer magnitudes (a scanner's uint16, 8-bit) are written as they are; anything else as float32
        image = subject.image if subject.image.dtype.kind in "ui" else subject.image.astype(np.float32)
        save_nifti(tmp / f"{sid}_4d.nii.gz", image, subject.affine, subject.frame_ms)
        for frame in sorted({subject.ed, subject.es}):
            name = f"{sid}_frame{frame + 1:02d}"
            save_nifti(tmp / f"{name}.nii.gz", image[..., frame], subject.affine)
            lab = subject.labels_at(frame)
            if lab is not None:
                save_nifti(tmp / f"{name}_gt.nii.gz", lab.astype(np.uint8), subject.affine)
        if subject.label_series is not None:
            save_nifti(tmp / f"{sid}_4d_gt.nii.gz", subject.label_series.astype(np.uint8), subject.affine,
                       subject.frame_ms)
        (tmp / "Info.cfg").write_text(format_info(subject))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return folder


def to_stored(x: np.ndarray) -> np.ndarray:
    """Model intensities in [-1, 1] -> the stored convention (see INTENSITY_SCALE)."""
    return ((np.asarray(x, dtype=np.float32) + 1.0) * INTENSITY_SCALE).astype(np.float32)


def from_stored(v: np.ndarray) -> np.ndarray:
    """The inverse of `to_stored`."""
    return np.asarray(v, dtype=np.float32) / INTENSITY_SCALE - 1.0


def write_cines(out: str | os.PathLike, images, geometry: dict | list[dict], ids: list[str] | None = None,
                info: list[dict] | None = None, labels=None, extra: Callable[[Path], None] | None = None) -> Path:
    """The one writer from model tensors to an ACDC-layout cohort, atomically (the folder appears whole or not).

    images: (N, D, H, W, T) in [-1, 1], in the cache's axes (D slices, H = NIfTI x, W = y); stored as
        `to_stored(x)`. labels: (N, D, H, W, T) integer label series or None (then image-only subjects).
    geometry: {"spacing": (sx, sy, sz) mm, "frame_ms", "es"} for all subjects, or one dict per subject;
        ED is frame 0 (prepare aligns it), ES is clamped to the last frame.
    ids: default synth0001, ...; info: Info.cfg attributes per subject (default Group UNKNOWN).
    extra: called with the temporary folder before it is renamed, to add files (samples.json, GIFs).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 5:
        raise CardiolabError(f"{out}: write_cines expects images (N, D, H, W, T), got shape {images.shape}")
    n = images.shape[0]
    if bad := int((~np.isfinite(images)).reshape(n, -1).any(1).sum()):
        raise CardiolabError(f"{out}: {bad} of {n} images hold NaN or inf; nothing written", exit_code=1)
    ids = list(ids) if ids is not None else [f"synth{i + 1:04d}" for i in range(n)]
    geoms = geometry if isinstance(geometry, list) else [geometry] * n
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for i, sid in enumerate(ids):
            vol = np.ascontiguousarray(images[i].transpose(1, 2, 0, 3))            # (D, H, W, T) -> (X, Y, Z, T)
            series = None if labels is None else np.ascontiguousarray(np.asarray(labels[i]).transpose(1, 2, 0, 3))
            g = geoms[i]
            write_subject(tmp, Subject(id=sid, image=to_stored(vol), affine=make_affine(g["spacing"]),
                                       frame_ms=float(g["frame_ms"]), ed=0, es=min(int(g["es"]), vol.shape[3] - 1),
                                       label_series=None if series is None else series.astype(np.uint8),
                                       info=dict(info[i]) if info else {"Group": "UNKNOWN"}))
        if extra is not None:
            extra(tmp)
    return Path(out)
