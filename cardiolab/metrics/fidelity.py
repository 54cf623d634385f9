"""Paired fidelity of reconstructions: PSNR, SSIM and MS-SSIM (MONAI metrics) on cines mapped to [0, 1].

Cines are cardiolab tensors (N, D, H, W, T) in [-1, 1] (a single cine (D, H, W, T) is also accepted).
PSNR is computed per cine over all voxels; SSIM and MS-SSIM per 2D frame (each slice at each frame,
(H, W)) and averaged per cine, which is how 2D cine reconstructions are usually reported.

MS-SSIM at cardiolab's small sizes: the standard 5 scales with an 11-pixel window need H >= 176, so
`ms_ssim_settings` picks the most scales (<= 5) with the largest window (11, 9 or 7, else 5 or 3) that fit
both MONAI's size check and the coarsest scale, and renormalises the first `scales` of the standard
weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) to sum to 1 (as pytorch-msssim does). 32 px -> 3 scales,
window 7; 64 px -> 4 scales, window 7; 256 px -> 5 scales, window 11. The settings are returned with the
numbers so a table says which MS-SSIM it shows.
"""
from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric, SSIMMetric

from cardiolab.core import CardiolabError

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clipped (generators can overshoot)."""
    return ((x + 1) / 2).clamp(0, 1)


def as_cines(x, name: str = "cines") -> torch.Tensor:
    """ndarray / tensor / list of (D, H, W, T) -> float32 tensor (N, D, H, W, T); (N, 1, D, H, W, T) is squeezed."""
    if isinstance(x, (list, tuple)):
        x = torch.stack([torch.as_tensor(np.asarray(v)) for v in x])
    x = torch.as_tensor(x).float()
    if x.ndim == 6 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5:
        raise CardiolabError(f"{name}: expected cines (N, D, H, W, T), got shape {tuple(x.shape)}")
    return x


def _pair(real, recon) -> tuple[torch.Tensor, torch.Tensor]:
    real, recon = as_cines(real, "real"), as_cines(recon, "reconstruction")
    if real.shape != recon.shape:
        raise CardiolabError(f"reconstruction shape {tuple(recon.shape)} differs from real {tuple(real.shape)}")
    return to_unit(real), to_unit(recon)


def _frames(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "n d h w t -> (n d t) 1 h w")


def psnr(real, recon) -> torch.Tensor:
    """PSNR in dB per cine, (N,), on [0, 1] (max value 1)."""
    real, recon = _pair(real, recon)
    return PSNRMetric(max_val=1.0, reduction="none")(recon, real).view(-1)


def ssim(real, recon) -> torch.Tensor:
    """Mean 2D SSIM per cine, (N,); 11-pixel gaussian window, smaller when frames are smaller."""
    real, recon = _pair(real, recon)
    n, _, h, w, _ = real.shape
    win = min(11, min(h, w) - (1 - min(h, w) % 2))  # largest odd window <= 11 that fits
    s = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=win, reduction="none")(_frames(recon), _frames(real))
    return s.view(n, -1).mean(1)


def ms_ssim_settings(size: int) -> tuple[int, int]:
    """(scales, window) for MS-SSIM on frames of side `size`; see the module docstring."""
    for scales in range(5, 1, -1):
        for k in (11, 9, 7, 5, 3):
            monai_ok = size // max(1, scales - 1) ** 2 > k - 1   # MONAI's own size check
            coarse_ok = size // 2 ** (scales - 1) >= k           # the window fits the coarsest scale
            if monai_ok and coarse_ok and (k >= 7 or scales == 2):
                return scales, k
    raise CardiolabError(f"frames of {size} px are too small for MS-SSIM (need >= 6 px)")


def ms_ssim(real, recon) -> torch.Tensor:
    """Mean 2D MS-SSIM per cine, (N,), with `ms_ssim_settings(min(H, W))`."""
    real, recon = _pair(real, recon)
    n, _, h, w, _ = real.shape
    scales, k = ms_ssim_settings(min(h, w))
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=k, weights=tuple(weights),
                                  reduction="none")
    return metric(_frames(recon), _frames(real)).view(n, -1).mean(1)


def reconstruction_metrics(real, recon, ids: list[str] | None = None) -> dict:
    """The one paired-fidelity summary (VQ-GAN task, benchmark, evaluate and report all use it):
    {"PSNR", "PSNR_std", "SSIM", "SSIM_std", "MS-SSIM", "MS-SSIM_std", "n", "ms_ssim"}, plus
    "subjects": [{"id", "PSNR", "SSIM", "MS-SSIM"}] when `ids` are given.

    real, recon: (N, D, H, W, T) in [-1, 1].
    """
    out: dict = {"n": int(as_cines(real).shape[0])}
    per = {}
    for name, fn in (("PSNR", psnr), ("SSIM", ssim), ("MS-SSIM", ms_ssim)):
        v = per[name] = fn(real, recon).double()
        out[name] = float(v.mean())
        out[f"{name}_std"] = float(v.std()) if len(v) > 1 else 0.0
    if ids is not None:
        out["subjects"] = [{"id": sid, **{k: float(v[i]) for k, v in per.items()}} for i, sid in enumerate(ids)]
    scales, k = ms_ssim_settings(min(as_cines(real).shape[2:4]))
    out["ms_ssim"] = {"scales": scales, "window": k}
    return out
