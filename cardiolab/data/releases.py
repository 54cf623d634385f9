"""The phantom written the way real datasets ship, quirks included: a stand-in for ACDC or M&Ms where no real
data is at hand (tests, `make reproduce DATA=...` without a download).

ACDC (`write_acdc_release`): ROOT/training/patientNNN and ROOT/testing/patientNNN (the test subjects numbered on
after the training ones), each with Info.cfg (ED, ES, Group, Height, NbFrame, Weight only), the 4D cine and the ED
and ES frames, labelled at those two frames only (no 4D label series, no phantom truth).
M&Ms (`write_mnms_release`): ROOT/Training/Labeled/<code>/<code>_sa.nii.gz + _sa_gt.nii.gz (M&Ms labels 1 LV,
2 MYO, 3 RV, at ED and ES only) and ROOT/Testing/<code>/..., and the dataset CSV (External code, VendorName,
Vendor, Centre, ED, ES 0-based, Age, Pathology, Sex, Height, Weight); each subject is scanned by one of four
vendors at one of their centres, with a vendor's own noise level and intensity range.

Per subject, as real scans differ: in-plane spacing 0.75-1.25 x the asked one, slice thickness redrawn in
5-10 mm (the cine resampled through-plane, labels nearest), so slice counts vary; the frame count varies by up to
two; some cines start a few frames before ED; intensities raw scanner magnitudes (uint16, up to 2000-4000) or
8-bit (uint8, 0-255). The spacing is in each file's header only. Depends only on (seed, index), as the phantom.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from cardiolab.core import CardiolabError, atomic_path
from cardiolab.data.phantom import make_subject
from cardiolab.io.cohort import Subject, write_subject
from cardiolab.io.nifti import save_nifti

ACDC_INFO = ("Group", "Height", "Weight")      # Info.cfg's attributes in a real ACDC download (+ ED, ES, NbFrame)
THICKNESS_MM = (5.0, 10.0)                     # slice thickness range of ACDC / M&Ms short-axis stacks
# M&Ms vendors: (code, name, centres, blood-pool SNR range); the noise level differs by scanner.
VENDORS = (("A", "Siemens", (1, 5), (16, 28)), ("B", "Philips", (2, 3), (10, 18)), ("C", "GE", (4,), (8, 14)),
           ("D", "Canon", (6,), (12, 20)))
MNMS_CSV = "211230_M&Ms_Dataset_information.csv"
CANONICAL_TO_MNMS = np.array([0, 3, 2, 1], dtype=np.uint8)   # canonical 1 RV, 3 LV -> M&Ms 3 RV, 1 LV


def release_subject(index: int, seed: int = 0, size: int = 64, spacing: float = 3.0, slices: int = 6,
                    frames: int = 12, snr: float | None = None) -> Subject:
    """Phantom subject `index` as a real scan stores it: redrawn spacing, thickness, frame count and start,
    labels at ED and ES only, image as uint16 or uint8 magnitudes (`Subject.image` keeps that dtype)."""
    rng = np.random.default_rng([seed, index, 0xAC])
    pixel = round(float(spacing * rng.uniform(0.75, 1.25)), 3)
    n_frames = max(4, int(frames + rng.integers(-2, 3)))
    subject, _ = make_subject(index, seed, size=size, spacing=pixel, slices=slices, frames=n_frames, snr=snr)
    image, labels, affine = _reslice(subject, round(float(rng.uniform(*THICKNESS_MM)), 1))
    start = int(rng.integers(0, 3)) if rng.random() < 0.3 else 0      # the cine starts `start` frames before ED
    image, labels = np.roll(image, start, axis=3), np.roll(labels, start, axis=3)
    ed, es = start, (subject.es + start) % n_frames
    return Subject(id=subject.id, image=_magnitudes(image, rng), affine=affine, frame_ms=subject.frame_ms, ed=ed,
                   es=es, labels={f: labels[..., f] for f in (ed, es)},
                   info={k: subject.info[k] for k in subject.info if k in ("Group", "Height", "Weight", "Age", "Sex")})


def _reslice(subject: Subject, thickness: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample the stack through-plane to `thickness` mm (linear image, nearest labels), first slice kept:
    (image (X, Y, Z', T), labels (X, Y, Z', T), affine)."""
    old = subject.spacing[2]
    depth = subject.image.shape[2]
    z = np.arange(int(np.floor((depth - 1) * old / thickness)) + 1) * thickness / old   # new slices, old units
    lo = np.minimum(np.floor(z).astype(int), depth - 1)
    hi, w = np.minimum(lo + 1, depth - 1), (z - np.floor(z))[None, None, :, None]
    image = (1 - w) * subject.image[:, :, lo] + w * subject.image[:, :, hi]
    labels = subject.label_series[:, :, np.minimum(np.rint(z).astype(int), depth - 1)]
    affine = subject.affine.copy()
    affine[:3, 2] *= thickness / old
    return image.astype(np.float32), labels, affine


def _magnitudes(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer magnitudes as scanners write them: uint16 with a top of 2000-4000, or 8-bit 0-255 (as some ACDC
    subjects come)."""
    top = np.percentile(image, 99.9) or 1.0
    if rng.random() < 0.5:
        return np.clip(np.rint(image / top * 255), 0, 255).astype(np.uint8)
    return np.clip(np.rint(image / top * rng.uniform(2000, 4000)), 0, 65535).astype(np.uint16)


def _check(n: int, testing: float) -> int:
    """The number of test subjects; at least one training subject is left."""
    if n < 2:
        raise CardiolabError(f"release: --subjects must be >= 2, got {n}")
    if not 0 <= testing < 1:
        raise CardiolabError(f"release: the testing share must be in [0, 1), got {testing}")
    return min(n - 1, int(round(n * testing)))


def write_acdc_release(out: str | os.PathLike, n: int, seed: int = 0, testing: float = 0.2, **geometry) -> Path:
    """`n` phantom subjects in ACDC's own layout under `out` (training/, testing/; see the module doc), written
    atomically; geometry: size, spacing, slices, frames as `release_subject`. Returns `out`."""
    n_test = _check(n, testing)
    with atomic_path(Path(out)) as tmp:
        for i in range(n):
            subject = release_subject(i, seed, **geometry)
            subject.info = {k: v for k, v in subject.info.items() if k in ACDC_INFO}
            write_subject(tmp / ("testing" if i >= n - n_test else "training"), subject)
    return Path(out)


def write_mnms_release(out: str | os.PathLike, n: int, seed: int = 0, testing: float = 0.2, **geometry) -> Path:
    """`n` phantom subjects in the M&Ms layout under `out` (Training/Labeled, Testing, the CSV; see the module
    doc), written atomically; each subject's vendor sets its SNR. Returns `out`."""
    n_test = _check(n, testing)
    rows = []
    with atomic_path(Path(out)) as tmp:
        for i in range(n):
            rng = np.random.default_rng([seed, i, 0x3E])
            vendor, name, centres, snr = VENDORS[i % len(VENDORS)]
            subject = release_subject(i, seed, snr=float(rng.uniform(*snr)), **geometry)
            code = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), 6))
            folder = tmp / ("Testing" if i >= n - n_test else "Training/Labeled") / code
            folder.mkdir(parents=True)
            gt = np.zeros(subject.image.shape, np.uint8)
            for frame, lab in subject.labels.items():
                gt[..., frame] = CANONICAL_TO_MNMS[lab]
            save_nifti(folder / f"{code}_sa.nii.gz", subject.image, subject.affine, subject.frame_ms)
            save_nifti(folder / f"{code}_sa_gt.nii.gz", gt, subject.affine, subject.frame_ms)
            info = subject.info
            rows.append([i, code, name, vendor, int(rng.choice(centres)), subject.ed, subject.es, info["Age"],
                         info["Group"], info["Sex"], info["Height"], info["Weight"]])
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(
            [["", "External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Age", "Pathology", "Sex",
              "Height", "Weight"]] + rows)
        (tmp / MNMS_CSV).write_text(text.getvalue())
    return Path(out)
