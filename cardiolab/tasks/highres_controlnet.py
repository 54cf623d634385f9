"""highres-controlnet: the mask-conditioned generator of the whole-heart pipeline (after MedLoRD).

A slim ControlNet (models.controlnet_slim, width ratio `r`, strided mask embedding) learns to steer the frozen
highres-ldm UNet with the six structure masks (one-hot at image resolution), with control dropout. The run keeps
the frozen UNet's weights too, so it samples on its own (with the VQ-GAN run it records).

Sampling (`sample --run RUN --mask COHORT [--conditioning-scale s]`): every mask of a volume cohort is read and
checked first (labels 0-6, mask on its image's grid, a size the networks take), then latents are denoised with
DDIM, snapped to codes and decoded (sliding window when `highres.decode_window` is set), and the synthetic
images are written beside their conditioning masks as a volume cohort, in one atomic folder.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch

from cardiolab.core import (CardiolabError, atomic_path, from_record, pick_device, seed_everything, to_record,
                            write_json)
from cardiolab.diffusion import create_scheduler, diffusion_loss, sample
from cardiolab.engine import Trainer, run_id
from cardiolab.io.cohort import SAMPLES_JSON
from cardiolab.io.volume import VolumeSubject, read_volume_cohort, write_labels, write_volume_subject
from cardiolab.models.controlnet_slim import ControlledUNet, ControlNetConfig, SlimControlNet, masks_to_channels
from cardiolab.profiles import Profile, profile_record, run_profile
from cardiolab.tasks import highres_common as hc
from cardiolab.tasks import highres_ldm, highres_vqgan

log = logging.getLogger(__name__)

NAME = "highres-controlnet"
KIND = "generator"


def shaping(profile: Profile, seed: int = 0, steps: int | None = None) -> dict:
    return hc.shaping(NAME, profile, seed, steps)


def num_parameters(profile: Profile) -> int:
    """Trainable parameters (the ControlNet; the frozen UNet is highres-ldm's)."""
    h = profile.highres
    return sum(p.numel() for p in SlimControlNet(hc.unet_config(h), hc.controlnet_config(h)).parameters())


def sample_defaults(profile: Profile) -> dict:
    """{"n": None (one sample per conditioning mask), "steps": the profile's DDIM steps}."""
    return {"n": None, "steps": profile.highres.sample_steps}


def _step(scheduler):
    def step_fn(batch: dict, step: int, tr: Trainer) -> dict:
        model = ControlledUNet(tr.raw("unet"), tr.modules["controlnet"])
        masks = masks_to_channels(batch["mask"])                       # (B, 6, X, Y, Z)
        with tr.autocast():
            loss = diffusion_loss(model, scheduler, batch["latent"], cond=masks)
        tr.backward(loss, "controlnet")
        return {"loss": loss.item()}
    return step_fn


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0) -> Path:
    """Train the ControlNet on (latent, mask) pairs of the training volumes, the UNet frozen; returns the run."""
    h = profile.highres
    out = Path(out) if out else profile.run(NAME)
    lat_path = highres_vqgan.ensure_latents(profile)
    ldm_run = highres_ldm.ensure(profile)
    lat, data = hc.latent_training_set(profile, lat_path)
    steps = steps or h.cn_steps
    seed_everything(seed)
    unet = highres_ldm.load(ldm_run).requires_grad_(False)
    unet.checkpointing = h.checkpointing
    cn = SlimControlNet(unet.cfg, hc.controlnet_config(h))
    cfg = hc.train_config(profile, steps, h.ldm_lr, seed)
    opt = torch.optim.AdamW(cn.parameters(), lr=h.ldm_lr, weight_decay=0.0)
    config = {"task": NAME, "shaping": shaping(profile, seed, steps), **profile_record(profile),
              "unet": dataclasses.asdict(unet.cfg), "controlnet": dataclasses.asdict(cn.cfg),
              "diffusion": dataclasses.asdict(highres_ldm.diffusion_config(profile)), "scale": lat["scale"],
              "vqgan_run": to_record(Path(lat_path).parent), "ldm_run": to_record(ldm_run), "ldm_run_id": run_id(ldm_run)}
    tr = Trainer(out, cfg, modules={"controlnet": cn, "unet": unet}, optimizers={"controlnet": opt}, config=config)
    tr.fit(data, _step(create_scheduler(highres_ldm.diffusion_config(profile))), resume=resume)
    return out


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    return hc.ensure_stage(NAME, train, profile, run_dir)


def load(run_dir: str | os.PathLike, device: str = "cpu", conditioning_scale: float = 1.0) -> ControlledUNet:
    """The frozen UNet steered by the trained ControlNet (eval mode)."""
    ckpt, config = hc.checkpoint_config(run_dir, "controlnet")
    unet = highres_ldm.unet_from_config(config["unet"])
    unet.load_state_dict(ckpt["modules"]["unet"])
    c = config["controlnet"]
    cn = SlimControlNet(unet.cfg, ControlNetConfig(**{**c, "embed_channels": tuple(c["embed_channels"])}))
    cn.load_state_dict(ckpt["modules"]["controlnet"])
    return ControlledUNet(unet, cn, conditioning_scale).to(device).eval()


# ---- sampling ------------------------------------------------------------------------------------------
def read_masks(root: str | os.PathLike, size_check) -> list[VolumeSubject]:
    """Every subject of a volume cohort, validated (labels 0-6, mask on its image's grid) before anything runs."""
    if not Path(root).is_dir():
        raise CardiolabError(f"--mask {root}: not a folder (a volume-layout cohort)")
    subjects = list(read_volume_cohort(root))
    for s in subjects:
        size_check(s.mask.shape, f"--mask {Path(root) / s.id}")
    return subjects


def sample_cohort(run_dir: str | os.PathLike, n: int | None = None, steps: int | None = None, seed: int = 0,
                  out: str | os.PathLike | None = None, mask: str | os.PathLike | None = None,
                  conditioning_scale: float | None = None, eta: float = 0.0, device: str = "auto",
                  profile: Profile | None = None, **_ignored) -> Path:
    """Sample one volume per conditioning mask (cycled to n) into a volume cohort `out`; returns `out`.

    mask: a volume-layout cohort whose masks condition the samples (default: the profile's holdout volumes).
    conditioning_scale: ControlNet residual scale (default highres.conditioning_scale; 0: unconditional).
    """
    profile = profile or _run_profile(run_dir)          # None: the profile the run was trained with
    h = profile.highres
    scale = h.conditioning_scale if conditioning_scale is None else float(conditioning_scale)
    if not scale >= 0:
        raise CardiolabError(f"--conditioning-scale must be >= 0, got {conditioning_scale}")
    if n is not None and n < 1:
        raise CardiolabError(f"--n must be >= 1, got {n}")
    ckpt_config = hc.checkpoint_config(run_dir, "controlnet")[1]
    trained = dataclasses.replace(h, unet_channels=tuple(ckpt_config["unet"]["channels"]),
                                  attention_levels=tuple(ckpt_config["unet"]["attention_levels"]))
    if mask is not None:     # every mask checked before anything is sampled or written
        masks = read_masks(mask, lambda shape, what: hc.check_size(trained, shape, what))
    else:
        masks = hc.load_volumes(profile, "holdout")
    n = n or len(masks)
    steps = steps or h.sample_steps
    out = Path(out) if out is not None else profile.samples(NAME)
    dev = pick_device(device)
    model = load(run_dir, device=dev, conditioning_scale=scale)
    vq = highres_vqgan.load(from_record(ckpt_config["vqgan_run"]), device=dev)
    vq.code_chunk = h.code_chunk
    scheduler = create_scheduler(highres_ldm.diffusion_config(profile), sampler="ddim")
    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)
    subjects, provenance = [], []
    for i in range(n):
        m = masks[i % len(masks)]
        cond = masks_to_channels(torch.as_tensor(m.mask.astype(np.int64))[None])       # (1, 6, X, Y, Z)
        lat = (1, vq.cfg.code_dim, *(s // hc.VQ_FACTOR for s in m.mask.shape))
        z = sample(model, scheduler, lat, steps=steps, cond=cond, eta=eta, generator=g, device=dev)
        x = hc.decode(vq, (z / ckpt_config["scale"]).to(dev), h.decode_window)[0, 0].cpu().numpy()
        sid = f"synth{i + 1:04d}"
        subjects.append(VolumeSubject(id=sid, image=x.astype(np.float32), mask=m.mask, affine=m.affine))
        provenance.append({"id": sid, "mask_from": m.id})
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for s in subjects:
            write_volume_subject(tmp, s)
        write_labels(tmp)
        write_json(tmp / SAMPLES_JSON, {"generator": NAME, "run": to_record(run_dir), "run_id": run_id(run_dir),
                                          "steps": steps, "seed": seed, "conditioning_scale": scale,
                                          "mask_cohort": to_record(mask) if mask else "holdout", "subjects": provenance})
    log.info("highres-controlnet: %d volumes -> %s", n, out)
    return out


def _run_profile(run_dir: str | os.PathLike) -> Profile:
    return run_profile(hc.checkpoint_config(run_dir, "controlnet")[1])
