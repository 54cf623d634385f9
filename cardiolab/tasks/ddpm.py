"""Pixel DDPM baseline: MONAI's DiffusionModelUNet over one slice's (H, W, T) images, slice index as class label.

Trained on the prepared cache's images in [-1, 1] (v-prediction, cosine schedule, as the DiT), sampled
with DDIM slice by slice and stacked. Settings: profile.baselines.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from cardiolab.profiles import Profile
from cardiolab.tasks import common

KIND = "generator"
SPEC = common.Spec('ddpm', network='unet', layout='slices', source='pixels', sampler='ddim')


def shaping(profile: Profile | str | None = None) -> dict:
    return common.shaping(SPEC, profile)


def train(profile: Profile | str | None = None, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, **kw) -> Path:
    return common.train(SPEC, profile, out, resume, steps, seed, **kw)


def ensure(profile: Profile | str | None = None, run_dir: str | os.PathLike | None = None) -> Path:
    return common.ensure(SPEC, profile, run_dir)


def load(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    return common.load(SPEC.name, run_dir, ema, device)


def sample_cohort(run_dir: str | os.PathLike, n: int, steps: int, seed: int, out: str | os.PathLike | None = None,
                  **kw) -> Path:
    return common.sample_cohort(SPEC.name, run_dir, n, steps, seed, out, **kw)
