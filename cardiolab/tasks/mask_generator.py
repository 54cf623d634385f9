"""Two-stage synthesis, stage 1: a diffusion model of label series (background, RV, MYO, LV at every frame).

The one-hot labels (4 classes in {-1, 1}) of all D slices are merged into channels, (D * 4, H, W, T), so one
SliceUNet denoises every slice together and the masks agree between slices. Sampled masks are the argmax.
Trained on the cache's fully labelled, non-holdout studies (the phantom labels every frame). Settings:
profile.baselines. Its cohort holds the label series; its images are only a rendering of them.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from cardiolab.profiles import Profile
from cardiolab.tasks import common

KIND = "generator"
SPEC = common.Spec("mask-generator", network="unet", layout="channels", source="labels", sampler="ddim")


def shaping(profile: Profile | str | None = None) -> dict:
    return common.shaping(SPEC, profile)


def train(profile: Profile | str | None = None, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, **kw) -> Path:
    return common.train(SPEC, profile, out, resume, steps, seed, **kw)


def ensure(profile: Profile | str | None = None, run_dir: str | os.PathLike | None = None) -> Path:
    return common.ensure(SPEC, profile, run_dir)


def load(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    return common.load(SPEC.name, run_dir, ema, device)


def sample_masks(run_dir: str | os.PathLike, n: int, steps: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """n label series (n, D, H, W, T) int64 in 0..3 from the run."""
    model, conf = load(run_dir, device=device)
    z, _ = common.sample_latents(model, conf, n, steps, seed, device=device)
    return common.decode(conf, z)


def sample_cohort(run_dir: str | os.PathLike, n: int, steps: int, seed: int, out: str | os.PathLike | None = None,
                  **kw) -> Path:
    return common.sample_cohort(SPEC.name, run_dir, n, steps, seed, out, **kw)
