"""Latent diffusion baseline: the ddpm UNet over the VQ-GAN's slice latents (C_z, h, w, t), slice index as label.

Same latents, scale and decoder as CardioDiT; only the denoiser differs. Settings: profile.baselines.
"""
from __future__ import annotations

from cardiolab.tasks import common

SPEC = common.Spec('ldm', network='unet', layout='slices', source='latents', sampler='ddim')
NAME, KIND = SPEC.name, "generator"
_bound = common.bind(SPEC)
shaping, num_parameters, sample_defaults = _bound.shaping, _bound.num_parameters, _bound.sample_defaults
train, ensure, load, sample_cohort = _bound.train, _bound.ensure, _bound.load, _bound.sample_cohort
