"""Mask shape statistics per structure and slice: area, eccentricity, roundness, solidity.

Used to compare the anatomy of real labels with segmentations of synthetic cines (and, later, with the
masks of a two-stage mask-conditioned generator). All lengths are in mm, areas in mm^2.

- eccentricity: sqrt(1 - l2/l1) from the eigenvalues l1 >= l2 of the second central moments
  (0 for a disc, sqrt(1 - b^2/a^2) for an ellipse with semi-axes a >= b).
- roundness: 4*pi*area / perimeter^2 (1 for a disc, capped at 1 by the isoperimetric inequality); perimeter
  from the marching-squares contour at 0.5 (contourpy, which matplotlib ships) of the mask smoothed with a
  1-pixel Gaussian: the raw pixel staircase inflates a disc's perimeter by ~6% (pixel edges: by 4/pi).
- solidity: area / convex hull area, hull over the pixel corners (scipy.spatial.ConvexHull); < 1 for the
  myocardial ring and for crescent-shaped RVs.
"""
from __future__ import annotations

from typing import Sequence

import contourpy
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from scipy.spatial import ConvexHull, QhullError

from cardiolab.core import CardiolabError
from cardiolab.io.cohort import LABELS
from cardiolab.metrics.function import compare_distributions

STRUCTURES = {name: value for name, value in LABELS.items() if name != "background"}
STATS = ("area", "eccentricity", "roundness", "solidity")
_EMPTY = {"area": 0.0, "eccentricity": float("nan"), "roundness": float("nan"), "solidity": float("nan")}
# The four corners of a unit pixel, relative to its centre.
_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


def region_stats(region: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, float]:
    """Shape statistics of one binary 2D region.

    region: (H, W) bool. spacing: (row, column) pixel size in mm.
    Returns {"area", "eccentricity", "roundness", "solidity"}; NaN shape values for an empty region.
    """
    region = np.asarray(region, dtype=bool)
    if region.ndim != 2:
        raise CardiolabError(f"shape statistics need a 2D mask, got shape {region.shape}")
    if not region.any():
        return dict(_EMPTY)
    scale = np.asarray(spacing, dtype=np.float64)[:2]
    points = np.argwhere(region) * scale                       # (N, 2) pixel centres in mm
    area = float(len(points) * scale.prod())

    # Second central moments; a pixel's own extent adds spacing^2/12 per axis (uniform square).
    cov = np.cov(points.T, bias=True) if len(points) > 1 else np.zeros((2, 2))
    cov = cov + np.diag(scale**2 / 12.0)
    small, large = np.linalg.eigvalsh(cov)
    eccentricity = float(np.sqrt(max(0.0, 1.0 - small / large)))

    perimeter = contour_length(region, scale)
    roundness = float(min(1.0, 4.0 * np.pi * area / perimeter**2)) if perimeter > 0 else float("nan")

    corners = (points[:, None, :] + _CORNERS * scale).reshape(-1, 2)
    try:
        hull_area = ConvexHull(corners).volume               # in 2D, 'volume' is the enclosed area
    except QhullError:                                         # a single row/column of pixels
        hull_area = area
    solidity = float(min(1.0, area / hull_area))
    return {"area": area, "eccentricity": eccentricity, "roundness": roundness, "solidity": solidity}


def contour_length(region: np.ndarray, spacing: Sequence[float] = (1.0, 1.0), smooth: float = 1.0) -> float:
    """Perimeter (mm) of a binary region: length of the 0.5 contours of the mask smoothed by `smooth` pixels.

    Smoothing (in pixels, whatever the spacing) removes the staircase of a digital boundary; 0 turns it off.
    """
    padded = np.pad(np.asarray(region, dtype=np.float64), 4)   # closes contours that touch the border
    if smooth > 0:
        padded = gaussian_filter(padded, smooth)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    scale = np.asarray(spacing, dtype=np.float64)[:2][::-1]    # contourpy points are (x=column, y=row)
    return float(sum(np.linalg.norm(np.diff(line * scale, axis=0), axis=1).sum() for line in lines))


def shape_stats(mask2d: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)) -> dict[str, dict[str, float]]:
    """Shape statistics of every structure of one label slice.

    mask2d: (H, W) integer labels (0 background, 1 RV, 2 MYO, 3 LV). spacing: (row, column) mm.
    Returns {"RV": {...}, "MYO": {...}, "LV": {...}}, each as `region_stats`.
    """
    mask2d = np.asarray(mask2d)
    if mask2d.ndim != 2:
        raise CardiolabError(f"shape_stats needs a 2D label slice (H, W), got shape {mask2d.shape}")
    return {name: region_stats(mask2d == value, spacing) for name, value in STRUCTURES.items()}


def cohort_shape_stats(label_series_list: Sequence[np.ndarray], spacing: Sequence[float] = (1.0, 1.0),
                       ids: Sequence[str] | None = None, frames: Sequence[int] | None = None,
                       skip_empty: bool = True) -> pd.DataFrame:
    """One row per (subject, slice, frame, structure) with the four shape statistics.

    label_series_list: each (D, H, W, T) or (D, H, W) integer labels (slices first, as `segment` returns).
    spacing: (row, column) in-plane mm. frames: which frames to use (default all).
    skip_empty: leave out structures absent from a slice (apex/base slices often lack the RV).
    Columns: id, slice, frame, structure, area, eccentricity, roundness, solidity.
    """
    ids = list(ids) if ids is not None else [str(i) for i in range(len(label_series_list))]
    if len(ids) != len(label_series_list):
        raise CardiolabError(f"cohort_shape_stats: {len(ids)} ids for {len(label_series_list)} label series")
    rows = []
    for sid, series in zip(ids, label_series_list):
        series = np.asarray(series)
        if series.ndim == 3:
            series = series[..., None]
        if series.ndim != 4:
            raise CardiolabError(f"subject {sid}: labels must be (D, H, W, T) or (D, H, W), got {series.shape}")
        for t in frames if frames is not None else range(series.shape[3]):
            for d in range(series.shape[0]):
                for name, stats in shape_stats(series[d, :, :, t], spacing).items():
                    if skip_empty and stats["area"] == 0:
                        continue
                    rows.append({"id": sid, "slice": d, "frame": int(t), "structure": name, **stats})
    return pd.DataFrame(rows, columns=["id", "slice", "frame", "structure", *STATS])


def compare_mask_shapes(real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray],
                        spacing: Sequence[float] = (1.0, 1.0), frames: Sequence[int] | None = None) -> pd.DataFrame:
    """Shape statistics of two sets of label series compared per structure (W1 and KS of each statistic).

    real, synthetic: label series, each (D, H, W, T) integer (e.g. real masks and a mask generator's masks).
    spacing: (row, column) mm. frames: the frames measured on both sides (default all).
    Returns `metrics.function.compare_distributions` rows: group (structure), metric, n_real, n_synth, means, w1,
    ks, ks_pvalue.
    """
    tables = [cohort_shape_stats(list(series), spacing, frames=frames) for series in (real, synthetic)]
    if tables[0].empty or tables[1].empty:
        side = "real" if tables[0].empty else "synthetic"
        raise CardiolabError(f"compare_mask_shapes: no labelled structure in the {side} masks")
    return compare_distributions(*tables, by="structure", metrics=list(STATS), overall=False)
