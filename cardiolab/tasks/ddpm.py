"""Pixel DDPM baseline: MONAI's DiffusionModelUNet over one slice's (H, W, T) images, slice index as class label.

Trained on the prepared cache's images in [-1, 1] (v-prediction, cosine schedule, as the DiT), sampled
with DDIM slice by slice and stacked. Settings: profile.baselines.
"""
from __future__ import annotations

from cardiolab.tasks import common

SPEC = common.Spec('ddpm', network='unet', layout='slices', source='pixels', sampler='ddim')
NAME, KIND = SPEC.name, "generator"
_bound = common.bind(SPEC)
shaping, num_parameters, sample_defaults = _bound.shaping, _bound.num_parameters, _bound.sample_defaults
train, ensure, load, sample_cohort = _bound.train, _bound.ensure, _bound.load, _bound.sample_cohort
