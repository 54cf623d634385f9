"""Flow-matching baseline: the ldm UNet trained with a rectified-flow objective (velocity x0 - noise, MSE),
sampled with an Euler ODE solver (cardiolab.diffusion, sampler "rflow"). Settings: profile.baselines.
"""
from __future__ import annotations

from cardiolab.tasks import common

SPEC = common.Spec('flow', network='unet', layout='slices', source='latents', sampler='rflow')
NAME, KIND = SPEC.name, "generator"
_bound = common.bind(SPEC)
shaping, num_parameters, sample_defaults = _bound.shaping, _bound.num_parameters, _bound.sample_defaults
train, ensure, load, sample_cohort = _bound.train, _bound.ensure, _bound.load, _bound.sample_cohort
