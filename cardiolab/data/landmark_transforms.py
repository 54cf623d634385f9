"""Augmentation for the RVIP detector that moves the target heatmaps with the image.

One MONAI dict-transform Compose: the spatial transforms (rotation, scaling, shift, elastic) draw one random
state per item and apply it to the image and its heatmaps alike, so a point stays on its anatomy; the intensity
transforms touch the image only. This stands in for the seed paper's albumentations pipeline (rotate,
shift-scale-rotate, grid distortion; its histogram matching is replaced by random gain, offset and gamma).

Items: {"image": (C, H, W) float32 in [-1, 1] (C = 2k+1 frames), "heatmaps": (2, H, W) float32 in [0, 1]}.
"""
from __future__ import annotations

import math

from monai.transforms import (Compose, RandAdjustContrastd, RandAffined, RandGaussianNoised, Rand2DElasticd,
                              RandScaleIntensityd, RandShiftIntensityd)

KEYS = ("image", "heatmaps")


def landmark_augmentation(rotate_deg: float | tuple[float, float] = 20.0, scale: float = 0.1, shift: float = 0.1,
                          elastic: float = 0.0, intensity: float = 0.1, prob: float = 0.8,
                          size: tuple[int, int] | None = None, seed: int = 0) -> Compose:
    """The Compose for training items (see the module docstring); deterministic given `seed`.

    rotate_deg: a symmetric range +-deg, or an explicit (low, high) range in degrees.
    scale: zoom range 1 +- scale; shift: translation range +- shift * size (needs `size`, (H, W), else none).
    elastic: displacement magnitude in pixels of a smooth deformation (0 = off; grid spacing 1/4 of the frame).
    intensity: range of the random gain and offset of the image (and +- of the gamma exponent).
    prob: probability of each random transform.
    """
    low, high = (-rotate_deg, rotate_deg) if isinstance(rotate_deg, (int, float)) else rotate_deg
    translate = (shift * size[0], shift * size[1]) if size and shift else None
    spatial = [RandAffined(keys=KEYS, prob=prob, rotate_range=((math.radians(low), math.radians(high)),),
                           scale_range=(scale, scale) if scale else None, translate_range=translate,
                           mode=("bilinear", "bilinear"), padding_mode="zeros")]
    if elastic > 0:
        spacing = (max(size[0] // 4, 2), max(size[1] // 4, 2)) if size else (16, 16)
        spatial.append(Rand2DElasticd(keys=KEYS, spacing=spacing, magnitude_range=(0.0, elastic), prob=prob,
                                      mode=("bilinear", "bilinear"), padding_mode="zeros"))
    image_only = []
    if intensity > 0:
        image_only = [RandScaleIntensityd(keys="image", factors=intensity, prob=prob),
                      RandShiftIntensityd(keys="image", offsets=intensity, prob=prob),
                      RandAdjustContrastd(keys="image", gamma=(1 - intensity, 1 + intensity), prob=prob),
                      RandGaussianNoised(keys="image", std=intensity / 4, prob=prob)]
    compose = Compose(spatial + image_only)
    compose.set_random_state(seed=seed)
    return compose
