"""Channel-merged 3D+t baseline: CardioDiT's DiT over (D * C_z, 1, h, w, t), slices merged into channels.

Tokens cover (h, w, t) patches of every slice at once, so slices are coupled only inside the patch
embedding (models.dit4d.channel_merged_config keeps the DiT's parameter count). profile.dit settings.
"""
from __future__ import annotations

from cardiolab.tasks import common

SPEC = common.Spec('channel-merged', network='dit', layout='channels', source='latents', sampler='ddim')
NAME, KIND = SPEC.name, "generator"
_bound = common.bind(SPEC)
shaping, num_parameters, sample_defaults = _bound.shaping, _bound.num_parameters, _bound.sample_defaults
train, ensure, load, sample_cohort = _bound.train, _bound.ensure, _bound.load, _bound.sample_cohort
