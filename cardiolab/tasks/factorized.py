"""Factorized 2D+t baseline: CardioDiT's DiT over ONE slice latent (C_z, 1, h, w, t) at a time.

The slice index is one more attribute field (models.dit4d.factorized_config); slices are denoised and
sampled independently and stacked, so only the label ties them together. profile.dit sizes, steps, batch
(whole studies per step: the same latent voxels per step as the DiT), schedule and DDIM sampler.
"""
from __future__ import annotations

from cardiolab.tasks import common

SPEC = common.Spec('factorized', network='dit', layout='slices', source='latents', sampler='ddim')
NAME, KIND = SPEC.name, "generator"
_bound = common.bind(SPEC)
shaping, num_parameters, sample_defaults = _bound.shaping, _bound.num_parameters, _bound.sample_defaults
train, ensure, load, sample_cohort = _bound.train, _bound.ensure, _bound.load, _bound.sample_cohort
