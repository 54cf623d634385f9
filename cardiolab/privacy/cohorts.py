"""Phantom cohorts beside the profile's own (the private cohort of the DP experiments, LiRA's shadow cohorts):
generated, prepared and encoded once, each remade when its size, seed, VQ-GAN or scale source changes."""
from __future__ import annotations

import shutil
from pathlib import Path

from cardiolab.core import read_json
from cardiolab.profiles import Profile


def phantom_cohort(profile: Profile, suffix: str, subjects: int, seed: int) -> dict:
    """A phantom cohort beside the profile's and its cache, (re)made when missing or of another size or seed:
    {"root": data/phantom/<profile>-<suffix>, "cache": data/cache/<profile>-<suffix>}. Needs no trained model."""
    from cardiolab.data.phantom import generate_cohort
    from cardiolab.data.prepare import prepare

    d = profile.data
    root = profile.phantom_dir.with_name(f"{profile.phantom_dir.name}-{suffix}")
    cache = profile.cache_dir.with_name(f"{profile.cache_dir.name}-{suffix}")
    made = read_json(root / "cohort.json") if (root / "cohort.json").exists() else {}
    if (made.get("n_subjects"), made.get("seed")) != (subjects, seed):
        for stale in (root, cache):
            shutil.rmtree(stale, ignore_errors=True)
        generate_cohort(root, subjects, seed=seed, size=d.phantom_size, spacing=d.phantom_spacing,
                        slices=d.phantom_slices, frames=d.phantom_frames)
    if not (cache / "manifest.json").exists():
        prepare(root, "acdc", profile, cache)
    return {"root": root, "cache": cache}


def encode_phantoms(cohort: dict, vqgan_run: Path, scale_from: Path, out: Path) -> Path:
    """out/latents.pt of `phantom_cohort`'s cache, encoded with vqgan_run and the latent scale of the run scale_from
    (no statistic of these subjects); re-encoded when the cohort, VQ-GAN or scale source changed. Returns out."""
    from cardiolab.tasks import vqgan

    lat = out / vqgan.LATENTS
    rec = vqgan.load_latents(lat) if lat.exists() else {}
    if (rec.get("scale_from"), rec.get("vqgan_run")) != (str(scale_from.resolve()), str(vqgan_run.resolve())) \
            or Path(rec.get("cache_dir", "")).resolve() != Path(cohort["cache"]).resolve() \
            or lat.stat().st_mtime < (Path(cohort["cache"]) / "manifest.json").stat().st_mtime:
        vqgan.encode_cohort(vqgan_run, cohort["cache"], out, scale_from=scale_from)
    return out
