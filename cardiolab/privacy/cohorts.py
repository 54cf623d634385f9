"""Phantom cohorts beside the profile's own (the private cohort of the DP experiments, LiRA's shadow cohorts):
generated, prepared and encoded once, each rebuilt by the one staleness rule (`core.up_to_date`) when its size,
seed, geometry, VQ-GAN or scale source changes."""
from __future__ import annotations

import shutil
from pathlib import Path

from cardiolab.core import COHORT_FILE, is_cache, read_stamp, to_record, up_to_date
from cardiolab.data import phantom, prepare
from cardiolab.profiles import Profile
from cardiolab.tasks import vqgan


def phantom_cohort(profile: Profile, suffix: str, subjects: int, seed: int, derived: tuple[Path, ...] = ()) -> dict:
    """A phantom cohort beside the profile's and its cache, (re)made when missing or stale: {"root":
    data/phantom/<profile>-<suffix>, "cache": data/cache/<profile>-<suffix>}. derived: folders built from it (its
    latents), removed with it when it is remade. Needs no trained model."""
    d = profile.data
    root = profile.phantom_dir.with_name(f"{profile.phantom_dir.name}-{suffix}")
    cache = profile.cache_dir.with_name(f"{profile.cache_dir.name}-{suffix}")
    made = phantom.cohort_params(subjects, seed, d.phantom_size, d.phantom_spacing, d.phantom_slices, d.phantom_frames)
    if not up_to_date(root, read_stamp(root / COHORT_FILE), made):
        for stale in (root, cache, *derived):
            shutil.rmtree(stale, ignore_errors=True)
        phantom.generate_cohort(root, subjects, seed=seed, size=d.phantom_size, spacing=d.phantom_spacing,
                        slices=d.phantom_slices, frames=d.phantom_frames)
    if not is_cache(cache):
        prepare.prepare(root, "acdc", profile, cache)
    return {"root": root, "cache": cache}


def encode_latents(cohort: dict, vqgan_run: Path, scale_from: Path, out: Path,
                   splits: tuple[str, ...] | None = None) -> Path:
    """out/latents.pt of a cohort's cache (`phantom_cohort`'s, or a real source's private split), encoded with
    vqgan_run and the latent scale of the run scale_from (no statistic of these subjects); re-encoded when the cache,
    the VQ-GAN or the scale source changed. splits: as `vqgan.encode_cohort`. Returns out."""
    lat = out / vqgan.LATENTS
    want = {"scale_from": to_record(scale_from), "cache_dir": to_record(cohort["cache"]),
            **vqgan.latents_stamp(vqgan_run)}
    if not up_to_date(lat, read_stamp(lat), want):
        vqgan.encode_cohort(vqgan_run, cohort["cache"], out, scale_from=scale_from, splits=splits)
    return out
