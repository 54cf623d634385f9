"""Inter-slice consistency and temporal coherence of cines, with optional segmentations.

Every function takes one cine `image` (D, H, W, T) (slices base -> apex, frames from ED) and optionally its
`labels` (D, H, W, T) in the canonical convention (3 = LV). Scores are meant to be compared between a
synthetic cohort and real data (`cohort_consistency` on both), not read in absolute terms.

Inter-slice:
* slice_ncc: normalised cross-correlation of adjacent slices, best over a few zooms of the apical one about
  the image centre (that removes the expected base-to-apex shrinkage), mean over pairs and frames. High
  = continuous anatomy; slice_ncc_min is the worst pair, where a misplaced slice shows.
* lv_area_roughness (labels): mean |second difference over slices| of the LV area, over the mean LV area.
Temporal (on the cine smoothed in-plane with a 1-pixel gaussian, so pixel noise does not dominate):
* temporal_tv: mean |x[t+1] - x[t]|; temporal_tv2: mean |x[t+1] - 2 x[t] + x[t-1]|; temporal_roughness =
  tv2 / tv: about 2 for frame-wise noise, small for smooth motion.
* periodicity: mean |x[T-1] - x[0]| over temporal_tv: about 1 when the cine closes the beat.
* volume_curve_corr (labels + a reference curve): Pearson correlation of the LV volume curve (over its max)
  with the real cohort's mean curve.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from scipy.ndimage import gaussian_filter

from cardiolab.core import CardiolabError

LV = 3
ZOOMS = (1.0, 1.1, 1.2, 1.3)    # apical slices are up to ~30% smaller than their basal neighbour
SMOOTH = 1.0                    # in-plane gaussian sigma (px) before temporal differences: pixel noise
                                # would otherwise dominate them


def _cine(x, name: str = "image") -> torch.Tensor:
    x = x.float() if torch.is_tensor(x) else torch.from_numpy(np.array(x, dtype=np.float32))
    if x.ndim != 4:
        raise CardiolabError(f"{name}: expected a cine (D, H, W, T), got shape {tuple(x.shape)}")
    return x


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of image pairs (K, H, W) -> (K,)."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)


def _zoom(x: torch.Tensor, s: float) -> torch.Tensor:
    """Magnify images (K, H, W) by s about the centre (bilinear, border padding)."""
    theta = torch.tensor([[1 / s, 0, 0], [0, 1 / s, 0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, (len(x), 1, *x.shape[1:]), align_corners=False)
    return F.grid_sample(x[:, None], grid, padding_mode="border", align_corners=False)[:, 0]


def adjacent_slice_ncc(image) -> np.ndarray:
    """(D - 1,) best-zoom NCC of each adjacent slice pair, mean over frames; image (D, H, W, T)."""
    x = _cine(image)
    if x.shape[0] < 2:
        return np.zeros(0)
    base = rearrange(x[:-1], "d h w t -> (d t) h w")
    apex = rearrange(x[1:], "d h w t -> (d t) h w")
    best = torch.stack([_ncc(base, _zoom(apex, s)) for s in ZOOMS]).amax(0)    # ((D-1) T,)
    return rearrange(best, "(d t) -> d t", d=x.shape[0] - 1).mean(1).numpy()


def lv_areas(labels) -> np.ndarray:
    """(D, T) LV pixel counts of labels (D, H, W, T)."""
    return (_cine(labels, "labels") == LV).sum((1, 2)).numpy().astype(float)


def area_roughness(areas: np.ndarray) -> float:
    """Mean |second difference over slices| of areas (D, T), over the mean area; nan if D < 3 or no LV."""
    if areas.shape[0] < 3 or areas.mean() == 0:
        return float("nan")
    return float(np.abs(np.diff(areas, n=2, axis=0)).mean() / areas.mean())


def inter_slice_consistency(image, labels=None) -> dict:
    """{"slice_ncc", "slice_ncc_min"} (+ "lv_area_roughness" with labels) for one cine (D, H, W, T)."""
    ncc = adjacent_slice_ncc(image)
    out = {"slice_ncc": float(ncc.mean()) if len(ncc) else float("nan"),
           "slice_ncc_min": float(ncc.min()) if len(ncc) else float("nan")}
    if labels is not None:
        out["lv_area_roughness"] = area_roughness(lv_areas(labels))
    return out


def volume_curve(labels) -> np.ndarray:
    """(T,) LV volume over frames, divided by its maximum (zeros if no LV)."""
    v = lv_areas(labels).sum(0)
    return v / v.max() if v.max() > 0 else v


def temporal_coherence(image, labels=None, reference_curve: np.ndarray | None = None) -> dict:
    """{"temporal_tv", "temporal_tv2", "temporal_roughness", "periodicity"} (+ "volume_curve_corr" with
    labels and a reference (T,) curve) for one cine (D, H, W, T)."""
    x = torch.from_numpy(gaussian_filter(_cine(image).numpy(), sigma=(0, SMOOTH, SMOOTH, 0)))
    if x.shape[-1] < 3:
        raise CardiolabError(f"temporal coherence needs >= 3 frames, got {x.shape[-1]}")
    tv = float(x.diff(dim=-1).abs().mean())
    tv2 = float(x.diff(n=2, dim=-1).abs().mean())
    out = {"temporal_tv": tv, "temporal_tv2": tv2, "temporal_roughness": tv2 / (tv + 1e-8),
           "periodicity": float((x[..., -1] - x[..., 0]).abs().mean()) / (tv + 1e-8)}
    if labels is not None and reference_curve is not None:
        curve = volume_curve(labels)
        if len(curve) != len(reference_curve):
            raise CardiolabError(f"volume curve has {len(curve)} frames, the reference {len(reference_curve)}")
        out["volume_curve_corr"] = float(np.corrcoef(curve, reference_curve)[0, 1]) if curve.std() > 0 else float("nan")
    return out


def mean_volume_curve(labels) -> np.ndarray:
    """(T,) mean normalised LV volume curve of a cohort's labels, a list / array of (D, H, W, T)."""
    return np.mean([volume_curve(lab) for lab in labels], axis=0)


def cohort_consistency(images, labels=None, reference_curve: np.ndarray | None = None) -> dict:
    """Mean and std over a cohort of every inter-slice and temporal score: {"slice_ncc": m, "slice_ncc_std": s, ...}.

    images: (N, D, H, W, T) or a list of (D, H, W, T); labels likewise or None. Without a reference curve,
    the cohort's own mean curve is used (so pass the real one when scoring a synthetic cohort).
    """
    if labels is not None and reference_curve is None:
        reference_curve = mean_volume_curve(labels)
    rows = []
    for i, img in enumerate(images):
        lab = None if labels is None else labels[i]
        rows.append({**inter_slice_consistency(img, lab), **temporal_coherence(img, lab, reference_curve)})
    out = {"n": len(rows)}
    for key in rows[0]:
        v = np.array([r[key] for r in rows], dtype=float)
        out[key], out[f"{key}_std"] = float(np.nanmean(v)), float(np.nanstd(v))
    return out
