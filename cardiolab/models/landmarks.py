"""The RV insertion point detector: a 2D MONAI UNet with one heatmap per landmark (anterior, inferior).

As in the seed paper (arXiv 2201.10410, Cardio-AI/cmr-landmark-detection), points are regressed as heatmaps on
short-axis frames, then decoded to coordinates. Targets are a Gaussian (sigma in mm) or a disc (radius sigma in
mm); decoding is argmax, soft-argmax or the centroid of the largest component, with the peak value as
confidence. With `temporal_context` k > 0 the network sees frames t-k..t+k as channels (2D+t). Training,
prediction and loading live in `cardiolab.tasks.landmarks`; the metrics in `cardiolab.metrics.landmarks`.

Points are (row, col) in the pixel index space of the (H, W) frame, NaN when missing; maps are (..., 2, H, W)
with channel 0 anterior and 1 inferior.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from monai.networks.nets import UNet
from scipy import ndimage
from torch import nn

from cardiolab.core import CardiolabError

N_LANDMARKS = 2                 # anterior, inferior
PRIOR_LOGIT = -4.0              # initial output logit: sigmoid ~0.02, the background prior (see LandmarkNet)
TARGETS = ("gaussian", "disc")
LOSSES = ("mse", "bce_dice")
DECODERS = ("argmax", "soft_argmax", "component")
SOFT_ARGMAX_TEMPERATURE = 0.05  # softmax(map / T) on [0, 1] maps: a peak of 1 outweighs ~1e8 background pixels,
                                # so the centroid is the peak's, yet stays sub-pixel and differentiable


@dataclass(frozen=True)
class LandmarkConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)  # UNet widths; len - 1 stride-2 levels, so H, W % 2**(len-1) == 0
    res_units: int = 1                             # residual units per level (MONAI UNet num_res_units)
    norm: str = "instance"                         # instance norm: insensitive to a cohort's intensity scale
    dropout: float = 0.0
    sigma_mm: float = 3.0        # Gaussian sigma / disc radius of a target, in mm: a few pixels at 1.2-1.5 mm
    target: str = "gaussian"     # "gaussian" | "disc" (the paper's blob labels)
    loss: str = "mse"            # "mse" on sigmoid maps | "bce_dice" (the paper's)
    decoder: str = "argmax"      # "argmax" | "soft_argmax" | "component" (largest blob's centroid, the paper's)
    threshold: float = 0.5       # peak value below which a landmark is reported missing
    temporal_context: int = 0    # 0: one frame (2D); k: frames t-k..t+k as 2k+1 input channels (2D+t)

    def __post_init__(self):
        problems = []
        if not self.sigma_mm > 0:
            problems.append(f"landmarks.sigma_mm must be > 0, got {self.sigma_mm}")
        for name, allowed in (("target", TARGETS), ("loss", LOSSES), ("decoder", DECODERS)):
            if getattr(self, name) not in allowed:
                problems.append(f"landmarks.{name}={getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        if not 0 <= self.threshold < 1:
            problems.append(f"landmarks.threshold must be in [0, 1), got {self.threshold}")
        if self.temporal_context < 0:
            problems.append(f"landmarks.temporal_context must be >= 0, got {self.temporal_context}")
        if len(self.channels) < 2:
            problems.append(f"landmarks.channels needs >= 2 levels, got {self.channels}")
        if problems:
            raise CardiolabError("; ".join(problems))

    @property
    def in_channels(self) -> int:
        return 2 * self.temporal_context + 1

    def to_dict(self) -> dict:
        return asdict(self)


class LandmarkNet(nn.Module):
    """Frame-wise detector: two heatmap logits for each pixel of a batch of frames (with optional neighbours)."""

    def __init__(self, config: LandmarkConfig = LandmarkConfig()):
        super().__init__()
        self.config = config
        self.net = UNet(spatial_dims=2, in_channels=config.in_channels, out_channels=N_LANDMARKS,
                        channels=tuple(config.channels), strides=(2,) * (len(config.channels) - 1),
                        num_res_units=config.res_units, norm=config.norm, dropout=config.dropout)
        # Targets cover < 1 % of a frame: start every pixel at the background prior (as RetinaNet's focal-loss
        # init), or the sigmoid maps sit near 0.5 and weighted MSE / BCE spend hundreds of steps pulling the
        # background down (tiny phantom, 500 steps: peaks stayed on the image border, median error 129 mm).
        self.prior = nn.Parameter(torch.full((1, N_LANDMARKS, 1, 1), PRIOR_LOGIT))

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (len(self.config.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 2k+1, H, W) frames in [-1, 1], centre frame in the middle -> (N, 2, H, W) logits."""
        return self.net(x) + self.prior                                 # (N, 2, H, W)

    @torch.no_grad()
    def detect(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """x: (N, 2k+1, H, W) -> points (N, 2, 2) (row, col; NaN when missing), confidence (N, 2)."""
        maps = torch.sigmoid(self(x)).float().cpu().numpy()              # (N, 2, H, W)
        return decode_heatmaps(maps, self.config.decoder, self.config.threshold)


# ---- heatmaps ----------------------------------------------------------------------------------------------
def encode_heatmaps(points: np.ndarray, shape: tuple[int, int], spacing: Sequence[float] = (1.0, 1.0),
                    sigma_mm: float = 3.0, kind: str = "gaussian") -> np.ndarray:
    """Target maps for K points on an (H, W) frame.

    points: (K, 2) (row, col) pixels, NaN rows = absent (an all-zero map); spacing: (row_mm, col_mm), so an
    anisotropic frame gets an elliptic blob that is round in mm. kind "gaussian": exp(-d^2 / 2 sigma^2), peak 1;
    "disc": 1 where d <= sigma_mm. Returns (K, H, W) float32 in [0, 1].
    """
    if not sigma_mm > 0:
        raise CardiolabError(f"landmarks.sigma_mm must be > 0, got {sigma_mm}")
    if kind not in TARGETS:
        raise CardiolabError(f"landmarks.target={kind!r}; choose one of {', '.join(TARGETS)}")
    points = np.asarray(points, float).reshape(-1, 2)
    rows, cols = np.arange(shape[0], dtype=float), np.arange(shape[1], dtype=float)
    out = np.zeros((len(points), *shape), np.float32)
    for k, (r, c) in enumerate(points):
        if np.isnan(r) or np.isnan(c):
            continue
        d2 = (((rows - r) * spacing[0]) ** 2)[:, None] + (((cols - c) * spacing[1]) ** 2)[None, :]   # (H, W) mm^2
        out[k] = np.exp(-d2 / (2 * sigma_mm ** 2)) if kind == "gaussian" else (d2 <= sigma_mm ** 2)
    return out


def decode_heatmaps(maps: np.ndarray | torch.Tensor, method: str = "argmax", threshold: float = 0.5
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Points and confidences from heatmaps in [0, 1].

    maps: (..., H, W). method: "argmax" (the peak; ties such as a disc's flat top give their centroid, a single
    peak is refined by a parabola through log values, exact for a Gaussian), "soft_argmax" (centroid of
    softmax(map / SOFT_ARGMAX_TEMPERATURE)), "component" (value-weighted centroid of the largest connected
    region >= max(threshold, peak / 2), the paper's decoding). confidence = the map's peak value; below
    `threshold` the point is missing. Returns points (..., 2) (row, col; NaN when missing) and confidence (...).
    """
    if method not in DECODERS:
        raise CardiolabError(f"landmarks.decoder={method!r}; choose one of {', '.join(DECODERS)}")
    maps = maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, float)
    lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
    flat = maps.reshape(-1, h, w)
    points = np.full((len(flat), 2), np.nan)
    confidence = flat.reshape(len(flat), -1).max(1)
    decode = {"argmax": _argmax, "soft_argmax": _soft_argmax, "component": _component}[method]
    for i, m in enumerate(flat):
        if confidence[i] >= threshold and confidence[i] > 0:
            points[i] = decode(m, threshold)
    return points.reshape(*lead, 2), confidence.reshape(lead)


def _argmax(m: np.ndarray, threshold: float) -> np.ndarray:
    peak = m.max()
    ties = np.argwhere(m >= peak - 1e-6 * max(1.0, abs(peak)))
    if len(ties) > 1:
        return ties.mean(0)
    point = ties[0].astype(float)
    for axis in (0, 1):
        i = int(point[axis])
        if 0 < i < m.shape[axis] - 1:
            idx = [int(point[0]), int(point[1])]
            v = []
            for d in (-1, 0, 1):
                idx[axis] = i + d
                v.append(m[tuple(idx)])
            v = np.log(np.maximum(v, 1e-12)) if min(v) > 0 else np.asarray(v)
            curvature = v[0] - 2 * v[1] + v[2]
            if curvature < 0:
                point[axis] += float(np.clip(0.5 * (v[0] - v[2]) / curvature, -0.5, 0.5))
    return point


def _soft_argmax(m: np.ndarray, threshold: float) -> np.ndarray:
    z = (m - m.max()) / SOFT_ARGMAX_TEMPERATURE
    p = np.exp(z)
    p /= p.sum()
    rows, cols = np.indices(m.shape)
    return np.array([(p * rows).sum(), (p * cols).sum()])


def _component(m: np.ndarray, threshold: float) -> np.ndarray:
    regions, n = ndimage.label(m >= max(threshold, 0.5 * m.max()))   # half the peak: a blob even at threshold 0
    sizes = ndimage.sum_labels(np.ones_like(m), regions, index=np.arange(1, n + 1))
    largest = regions == (int(np.argmax(sizes)) + 1)
    return np.asarray(ndimage.center_of_mass(np.where(largest, m, 0.0)))
