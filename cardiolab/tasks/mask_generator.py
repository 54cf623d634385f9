"""Two-stage synthesis, stage 1: a diffusion model of label series (background, RV, MYO, LV at every frame).

The one-hot labels (4 classes in {-1, 1}) of all D slices are merged into channels, (D * 4, H, W, T), so one
SliceUNet denoises every slice together and the masks agree between slices. Sampled masks are the argmax.
Trained on the cache's fully labelled, non-holdout studies (the phantom labels every frame). Settings:
profile.baselines. Its cohort holds the label series; its images are only a rendering of them.
"""
from __future__ import annotations

import os

import torch

from cardiolab.tasks import common

SPEC = common.Spec("mask-generator", network="unet", layout="channels", source="labels", sampler="ddim")
NAME, KIND = SPEC.name, "generator"
_bound = common.bind(SPEC)
shaping, num_parameters, sample_defaults = _bound.shaping, _bound.num_parameters, _bound.sample_defaults
train, ensure, load, sample_cohort = _bound.train, _bound.ensure, _bound.load, _bound.sample_cohort


def sample_masks(run_dir: str | os.PathLike, n: int, steps: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """n label series (n, D, H, W, T) int64 in 0..3 from the run."""
    model, conf = load(run_dir, device=device)
    z, _ = common.sample_latents(model, conf, n, steps, seed, device=device)
    return common.decode(conf, z)
