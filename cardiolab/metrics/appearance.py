"""How a prepared cohort looks: where the RV lies relative to the LV, and the intensity of each label.

Both read prepared tensors in the display convention of every cardiolab figure (`image[z, row, col, t]`
shown with matplotlib `imshow`, row 0 at the top), so phantom and real cohorts can be compared directly
(measured on real ACDC: after `prepare`, it puts the RV at a median 110 deg, 10-90 % range 51-137 deg).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cardiolab.metrics.segmentation import STRUCTURES

LABEL_NAMES = ("background", *STRUCTURES)      # label value k -> name (0 background, 1 RV, 2 MYO, 3 LV)
RV, LV = 1, 3


def rv_lv_angles(labels: np.ndarray) -> np.ndarray:
    """Angle (deg) of the RV centroid seen from the LV centroid in every 2D label map holding both.

    labels: (..., H, W) integer maps (e.g. (D, H, W) or (N, D, H, W, T) moved to (..., H, W)); 0 deg = towards
    +column (right on screen), 90 deg = towards +row (down), in (-180, 180].
    """
    maps = np.asarray(labels).reshape(-1, *np.shape(labels)[-2:])
    angles = []
    for lab in maps:
        rv, lv = np.argwhere(lab == RV), np.argwhere(lab == LV)
        if len(rv) and len(lv):
            (r1, c1), (r3, c3) = rv.mean(0), lv.mean(0)
            angles.append(np.degrees(np.arctan2(r1 - r3, c1 - c3)))
    return np.asarray(angles, dtype=float)


def angle_summary(angles: np.ndarray) -> dict:
    """{"median", "p10", "p90", "n"} of angles in degrees (NaN when there are none)."""
    angles = np.asarray(angles, dtype=float)
    if angles.size == 0:
        return {"median": float("nan"), "p10": float("nan"), "p90": float("nan"), "n": 0}
    p10, med, p90 = np.percentile(angles, [10, 50, 90])
    return {"median": float(med), "p10": float(p10), "p90": float(p90), "n": int(angles.size)}


def label_intensities(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                      masks: Sequence[np.ndarray] | None = None) -> dict:
    """Mean and std of the intensity per label over all labelled frames: {name: {"mean", "std", "voxels"}}.

    images, labels: per subject (D, H, W, T) arrays (prepared: intensities in [-1, 1]); masks: per subject
    (T,) bool labelled frames (default: all).
    """
    values = {k: [] for k in range(len(LABEL_NAMES))}
    for i, (img, lab) in enumerate(zip(images, labels)):
        img, lab = np.asarray(img, dtype=float), np.asarray(lab)
        if masks is not None:
            frames = np.asarray(masks[i], dtype=bool)
            img, lab = img[..., frames], lab[..., frames]
        for k in values:
            values[k].append(img[lab == k])
    out = {}
    for k, name in enumerate(LABEL_NAMES):
        v = np.concatenate(values[k]) if values[k] else np.zeros(0)
        out[name] = {"mean": float(v.mean()) if v.size else float("nan"),
                     "std": float(v.std()) if v.size else float("nan"), "voxels": int(v.size)}
    return out


def cohort_appearance(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                      masks: Sequence[np.ndarray] | None = None) -> dict:
    """RV-to-LV angle summary and label-wise intensities of a prepared cohort (per subject (D, H, W, T) arrays)."""
    angles = []
    for i, lab in enumerate(labels):
        lab = np.asarray(lab)
        if masks is not None:
            lab = lab[..., np.asarray(masks[i], dtype=bool)]
        angles.append(rv_lv_angles(np.moveaxis(lab, -1, 0)))      # (T, D, H, W): one angle per 2D map
    return {"rv_lv_angle": angle_summary(np.concatenate(angles) if angles else np.zeros(0)),
            "intensity": label_intensities(images, labels, masks)}
