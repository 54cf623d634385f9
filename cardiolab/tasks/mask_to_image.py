"""Two-stage synthesis, stage 2: images from label series (mask -> image), a SliceUNet per slice.

Each slice's one-hot mask is concatenated to the noisy input (average-pooled to the latent's size for
latent families). `profile.baselines.family` picks the stage-2 model: ddpm (pixels), ldm (VQ-GAN latents)
or flow (latents, rectified flow). Sampling conditions on the label series of a cohort (`mask=DIR`,
e.g. a real holdout set) or, without it, on masks drawn by the mask-generator run (stage 1); the masks
are written as the cohort's labels, so evaluation and utility use the labels the images were made from.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from einops import rearrange

from cardiolab.core import CardiolabError, to_record
from cardiolab.io.layouts import read_cohort
from cardiolab.profiles import Profile, run_profile
from cardiolab.tasks import common, mask_generator

KIND = "generator"
NAME = "mask-to-image"
FAMILIES = {"ddpm": ("pixels", "ddim"), "ldm": ("latents", "ddim"), "flow": ("latents", "rflow")}


def spec(profile: Profile) -> common.Spec:
    """The Spec of the profile's family."""
    family = profile.baselines.family
    if family not in FAMILIES:
        raise CardiolabError(f"baselines.family {family!r}: choose one of {', '.join(FAMILIES)}")
    source, sampler = FAMILIES[family]
    return common.Spec(NAME, network="unet", layout="slices", source=source, sampler=sampler, masks=True)


def shaping(profile: Profile, seed: int = 0, steps: int | None = None) -> dict:
    return common.shaping(spec(profile), profile, seed, steps)


def num_parameters(profile: Profile) -> int:
    return common.num_parameters(spec(profile), profile)


def sample_defaults(profile: Profile) -> dict:
    return common.sample_defaults(spec(profile), profile)


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, **kw) -> Path:
    return common.train(spec(profile), profile, out, resume, steps, seed, **kw)


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    return common.ensure(spec(profile), profile, run_dir)


def load(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    return common.load(NAME, run_dir, ema, device)


def read_masks(root: str | os.PathLike, n: int, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """The label series of the first n subjects of a cohort as (n, D, H, W, T) int64; shape = (D, H, W, T).

    Every subject must have a full label series (`<id>_4d_gt.nii.gz`) of the run's geometry.
    """
    masks = []
    for subject in read_cohort(root):
        if len(masks) == n:
            break
        if subject.label_series is None:
            raise CardiolabError(f"{Path(root) / subject.id}: no label series ({subject.id}_4d_gt.nii.gz) to condition on")
        series = rearrange(torch.from_numpy(subject.label_series.astype("int64")), "h w d t -> d h w t")
        if tuple(series.shape) != tuple(shape):
            raise CardiolabError(f"{Path(root) / subject.id}: label series (D, H, W, T) = {tuple(series.shape)}, "
                                 f"the run needs {tuple(shape)} (prepare the cohort at the profile's geometry)")
        if int(series.max()) >= common.N_CLASSES or int(series.min()) < 0:
            raise CardiolabError(f"{Path(root) / subject.id}: labels outside 0..{common.N_CLASSES - 1}")
        masks.append(series)
    if len(masks) < n:
        raise CardiolabError(f"{root}: {len(masks)} subjects with label series, need --n {n}")
    return torch.stack(masks)


def sample_cohort(run_dir: str | os.PathLike, n: int, steps: int, seed: int, out: str | os.PathLike | None = None,
                  mask: str | os.PathLike | None = None, mask_run: str | os.PathLike | None = None,
                  mask_steps: int | None = None, cond: str = "random", batch: int | None = None,
                  device: str = "auto", profile: Profile | None = None) -> Path:
    """Images for n masks: from the cohort `mask`, else sampled by the mask-generator run `mask_run`
    (default: the profile's, trained if needed) with `mask_steps` (default `steps`) and the same seed."""
    _, conf = load(run_dir)
    if mask is not None:
        masks, origin = read_masks(mask, n, tuple(conf["mask_shape"])), {"masks": to_record(mask)}
    else:
        mask_run = Path(mask_run) if mask_run else mask_generator.ensure(profile or run_profile(conf))
        masks = mask_generator.sample_masks(mask_run, n, mask_steps or steps, seed)
        origin = {"masks": to_record(mask_run), "mask_steps": mask_steps or steps}
    return common.sample_cohort(NAME, run_dir, n, steps, seed, out, masks=masks,
                                meta={**origin, "family": conf["source"] + "/" + conf["sampler"]}, cond=cond,
                                batch=batch, device=device, profile=profile)
