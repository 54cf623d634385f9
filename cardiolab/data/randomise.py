"""SynthSeg-style domain randomisation of prepared 2D / 2D+t samples for the segmenter (issue 12, item 2).

A segmenter trained on one phantom learns the phantom's exact look; SynthSeg (Billot et al., Medical Image
Analysis 2023) trains on images whose contrast is redrawn from the labels at every step, so the network can
only rely on shape. `domain_randomisation()` returns a MONAI dict-transform Compose for {"image", "labels"}:

1. random intensity per label (RV, MYO, LV) and per background tissue class; the background has no labels,
   so its classes are quantile bins of its own intensity (fat, muscle, lung, ... fall into different bins);
   each class gets a random mean in [0, 1] and a random gain on its own texture;
2. coil bias field, gamma, Gaussian blur, Gaussian or Rician noise (MONAI Rand* transforms);
3. one elastic warp with rotation and scaling, applied to image and labels together (bilinear / nearest);
4. prepare's percentile scaling back to [-1, 1], so the network sees the value range of the cache.

Sample layout (channel first, as the segmenter's FrameSet and CineDataset(mode="slice") give it):
image (C, H, W) float32 in [-1, 1], C = 1 (a frame) or T (frames of a 2D+t sample, warped together);
labels (H, W) or (C, H, W) integer. Shapes and dtypes come back as they went in.

Randomness: every transform is a MONAI Randomizable seeded through `Compose.set_random_state`, from `seed`
or, when seed is None, from numpy's global RNG, which `cardiolab.core.seed_everything` seeds: a seeded run
draws the same augmentations. (DataLoader workers would each copy the same state: re-seed per worker.)
"""
from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (Compose, MapTransform, Rand2DElasticd, RandAdjustContrastd, RandBiasFieldd,
                              RandGaussianNoised, RandGaussianSmoothd, RandomizableTransform, RandRicianNoised,
                              ScaleIntensityRangePercentilesd)

from cardiolab.core import CardiolabError

KEYS = ("image", "labels")
N_LABELS = 4                      # background, RV, MYO, LV (cardiolab.io.cohort.LABELS)
BACKGROUND_CLASSES = 4            # quantile bins of the background intensity standing in for its tissues
PCT_LOW, PCT_HIGH = 0.5, 99.5     # as prepare.PCT_LOW / PCT_HIGH


class RandLabelIntensityd(RandomizableTransform, MapTransform):
    """Redraw the image's contrast from its labels: each label and each background class c gets
    x' = mu_c + gain_c * (x - mean_c) + sigma_c * noise, with mu_c ~ U(0, 1), gain_c ~ U(gain_range),
    sigma_c ~ U(0, max_sigma); the result lies roughly in [0, 1] (later steps rescale it).

    image (C, H, W); labels broadcastable to it ((H, W) or (C, H, W)). Background classes: quantile bins of
    the background's intensity (a stand-in for k-means on the tissues no label names).
    """

    def __init__(self, keys=KEYS, background_classes: int = BACKGROUND_CLASSES, gain_range=(0.3, 1.5),
                 max_sigma: float = 0.05, prob: float = 1.0):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.background_classes = background_classes
        self.gain_range, self.max_sigma = gain_range, max_sigma

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        image_key, label_key = self.keys
        x = torch.as_tensor(d[image_key]).float()
        lab = torch.as_tensor(d[label_key]).long().expand_as(x)
        cls = lab.clone()
        bg = lab == 0
        if bg.any() and self.background_classes > 1:
            qs = torch.linspace(0, 1, self.background_classes + 1)[1:-1]
            edges = torch.quantile(x[bg], qs.to(x.dtype))
            cls[bg] = N_LABELS + torch.bucketize(x[bg], edges)             # background classes N_LABELS...
        n = N_LABELS + self.background_classes
        mu = self.R.uniform(0, 1, n)
        gain = self.R.uniform(*self.gain_range, n)
        sigma = self.R.uniform(0, self.max_sigma, n)
        noise = torch.from_numpy(self.R.standard_normal(tuple(x.shape)).astype(np.float32))
        out = torch.zeros_like(x)
        for c in range(n):
            m = cls == c
            if m.any():
                out[m] = float(mu[c]) + float(gain[c]) * (x[m] - x[m].mean()) + float(sigma[c]) * noise[m]
        d[image_key] = out.clamp(0, 2)              # non-negative for the multiplicative / Rician steps
        return d


class _ChannelLabels(MapTransform):
    """labels (H, W) -> (1, H, W) integer-valued float so MONAI's spatial transforms warp them (nearest);
    `_Restore` undoes it."""

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        lab = torch.as_tensor(d["labels"])
        d["_labels_shape"], d["_labels_dtype"] = tuple(lab.shape), lab.dtype
        d["labels"] = (lab[None] if lab.ndim == torch.as_tensor(d["image"]).ndim - 1 else lab).float()
        return d


class _Restore(MapTransform):
    """Plain tensors out: image float32, labels in their input shape and dtype."""

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        image = d["image"].as_tensor() if hasattr(d["image"], "as_tensor") else torch.as_tensor(d["image"])
        labels = d["labels"].as_tensor() if hasattr(d["labels"], "as_tensor") else torch.as_tensor(d["labels"])
        d["image"] = image.float().contiguous()
        d["labels"] = labels.round().to(d.pop("_labels_dtype")).reshape(d.pop("_labels_shape")).contiguous()
        return d


def domain_randomisation(seed: int | None = None, *, background_classes: int = BACKGROUND_CLASSES,
                         intensity: bool = True, artefacts: bool = True, spatial: bool = True,
                         rotate_deg: float = 20.0) -> Compose:
    """The SynthSeg-style augmentation (module docstring) for {"image": (C, H, W), "labels": (H, W)}.

    seed: random state of every transform; None draws it from numpy's global RNG (seeded by the engine).
    intensity / artefacts / spatial: switch the label-driven contrast, the scanner artefacts (bias field,
    gamma, blur, noise) and the elastic + rotation warp on or off (for ablations and tests).
    """
    if background_classes < 1:
        raise CardiolabError(f"domain_randomisation: background_classes must be >= 1, got {background_classes}")
    steps = [_ChannelLabels(KEYS)]
    if intensity:
        steps.append(RandLabelIntensityd(KEYS, background_classes))
    if artefacts:
        steps += [
            RandBiasFieldd("image", degree=3, coeff_range=(0.0, 0.3), prob=0.8),
            RandAdjustContrastd("image", gamma=(0.6, 1.6), prob=0.8),
            RandGaussianSmoothd("image", sigma_x=(0.0, 1.2), sigma_y=(0.0, 1.2), prob=0.5),
            RandGaussianNoised("image", std=0.05, prob=0.4),
            RandRicianNoised("image", std=0.05, prob=0.4, relative=True, channel_wise=True),
        ]
    if spatial:
        steps.append(Rand2DElasticd(KEYS, spacing=(12, 12), magnitude_range=(0.0, 1.5), prob=0.9,
                                    rotate_range=np.deg2rad(rotate_deg), scale_range=(0.1, 0.1),
                                    mode=("bilinear", "nearest"), padding_mode=("border", "zeros")))
    steps += [ScaleIntensityRangePercentilesd("image", PCT_LOW, PCT_HIGH, -1.0, 1.0, clip=True), _Restore(KEYS)]
    compose = Compose(steps)
    compose.set_random_state(seed=int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed))
    return compose
