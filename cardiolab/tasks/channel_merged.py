"""Channel-merged 3D+t baseline: CardioDiT's DiT over (D * C_z, 1, h, w, t), slices merged into channels.

Tokens cover (h, w, t) patches of every slice at once, so slices are coupled only inside the patch
embedding (models.dit4d.channel_merged_config keeps the DiT's parameter count). profile.dit settings.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from cardiolab.profiles import Profile
from cardiolab.tasks import common

KIND = "generator"
SPEC = common.Spec('channel-merged', network='dit', layout='channels', source='latents', sampler='ddim')


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
