"""LiRA's reference models: K DiTs trained the audited run's way on shadow phantoms that hold no candidate.

Carlini et al. 2022 ("Membership inference attacks from first principles", IEEE S&P) compare a subject's loss under
the target with its loss under reference models trained with (IN) and without (OUT) it. We use the offline
variant, OUT models only, because:
- the online variant trains every reference on a random half of the candidates, so each subject is IN for ~K/2
  models; at the K = 4 a CPU affords, two IN and two OUT losses per subject cannot fit two Gaussians. Carlini et
  al. pool the variance over examples when references are few, and find the offline attack somewhat weaker than
  the online one but still strong at low FPR;
- an OUT model needs data from the same distribution and nothing else: fresh phantoms are free, whereas IN models
  would train on the private members themselves, outside the DP mechanism being audited.

Reference k: `mia.reference_subjects` phantoms of seed SHADOW_SEED + k (the profile's cohorts use seeds 0, 1 and 7),
prepared and encoded with the target's VQ-GAN and the latent scale of its init (its own without one; one encoding
for a whole grid), then trained for `mia.reference_steps` steps with the target's recipe: a `dit` target -> `dit`
from scratch; a `dit-dp` target -> the same init, data recipe and trained parameters, without noise or clipping
(dp.epsilon = inf). LiRA ranks subjects by their loss relative to their own reference mean, so the level a noisy DP
fine-tune reaches (a shift shared by all subjects) changes no rank; the non-private recipe is the one whose
per-subject difficulty the references should capture. They live in
runs/<profile>/lira/<task>-<init>-n<subjects>-s<steps>/ref<k> and follow the one staleness rule
(`engine.ensure_run`), so every run of a grid with one init shares them. reference_steps caps their cost: for a
fine-tune it is half the 300-step DP run of the leakage benchmark (tiny's own DP runs take 100); a `dit` trained
from scratch for 1500 steps gets weaker references at 150 (set mia.reference_steps to the target's steps for the
faithful attack, at ten times the cost). Shadows are phantoms: on a real data source they come from another
distribution than the candidates, and LiRA calibrates less well there.
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path

from cardiolab.core import from_record
from cardiolab.engine import ensure_run
from cardiolab.privacy.cohorts import encode_latents, phantom_cohort
from cardiolab.profiles import Profile
from cardiolab.tasks import dit, dp as dp_task, vqgan

SHADOW_SEED = 100


def shadow_cohort(profile: Profile, k: int) -> tuple[dict, Path]:
    """Reference k's shadow phantoms and their cache (`cohorts.phantom_cohort`), and the folder of their latents
    (runs/<profile>/lira/shadow<k>-n<subjects>)."""
    n = profile.mia.reference_subjects
    out = profile.run("lira") / f"shadow{k}-n{n}"
    return phantom_cohort(profile, f"shadow{k}-n{n}", n, SHADOW_SEED + k, (out,)), out


def shadow_latents(profile: Profile, k: int, vqgan_run: Path, scale_from: Path) -> Path:
    """The latents of reference k's shadow phantoms (made if missing or stale)."""
    cohort, out = shadow_cohort(profile, k)
    return encode_latents(cohort, vqgan_run, scale_from, out)


def ensure_references(run: Path, conf: dict, task: str, profile: Profile, k: int) -> list[Path]:
    """The k reference runs of target `run` (config `conf`, registry name `task`: dit or dit-dp), trained if
    missing or stale. Returns their folders."""
    vq = from_record(conf["vqgan_run"])
    init = from_record(conf["init_run"]) if conf.get("init_run") else None
    steps, n = profile.mia.reference_steps, profile.mia.reference_subjects
    home = profile.run("lira") / f"{task}-{init.name if init else 'scratch'}-n{n}-s{steps}"
    if task == "dit-dp":       # the target's recipe (its trained parameters too), without noise or clipping
        recorded = conf.get("shaping", {}).get("dp", {})
        profile = dataclasses.replace(profile, dp=dataclasses.replace(
            profile.dp, epsilon=math.inf, params=recorded.get("params", profile.dp.params)))
    refs = []
    for i in range(k):
        latents, out = shadow_latents(profile, i, vq, init or run), home / f"ref{i}"
        if task == "dit-dp":
            shaping = dp_task.shaping(profile, latents, init or "none", seed=i)
            train = partial(dp_task.train, profile, out, steps=steps, seed=i, latents=latents, init=init or "none")
        else:
            path = latents / vqgan.LATENTS
            shaping = dit.shaping(profile, i, vqgan.load_latents(path).get("vqgan_id"), path, steps)
            train = partial(dit.train, profile, out, steps=steps, seed=i, latents=path)
        refs.append(ensure_run(out, steps, shaping, train))
    return refs
