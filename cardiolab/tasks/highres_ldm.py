"""highres-ldm: stage 2 of the whole-heart pipeline (after MedLoRD): the latent 3D diffusion UNet.

models.ldm3d.LatentUNet3D on the VQ-GAN's latents (highres_vqgan.ensure_latents, scaled to unit variance),
cosine schedule, v-prediction, smooth-L1 (cardiolab.diffusion). Unconditional: masks enter through
highres-controlnet, which freezes this UNet.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from cardiolab.core import seed_everything, to_record
from cardiolab.diffusion import DiffusionConfig, create_scheduler, diffusion_loss
from cardiolab.engine import Trainer
from cardiolab.models.ldm3d import LatentUNet3D, LDM3DConfig
from cardiolab.profiles import Profile, profile_record
from cardiolab.tasks import highres_common as hc
from cardiolab.tasks import highres_vqgan

NAME = "highres-ldm"
KIND = "latent-diffusion"


def shaping(profile: Profile, seed: int = 0, steps: int | None = None) -> dict:
    return hc.shaping(NAME, profile, seed, steps)


def num_parameters(profile: Profile) -> int:
    return sum(p.numel() for p in LatentUNet3D(hc.unet_config(profile.highres)).parameters())


def diffusion_config(profile: Profile) -> DiffusionConfig:
    return DiffusionConfig(train_timesteps=profile.highres.train_timesteps)


def _step(scheduler):
    def step_fn(batch: dict, step: int, tr: Trainer) -> dict:
        with tr.autocast():
            loss = diffusion_loss(tr.modules["unet"], scheduler, batch["latent"])
        tr.backward(loss, "unet")
        return {"loss": loss.item()}
    return step_fn


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0) -> Path:
    """Train the UNet on the scaled training latents; returns the run folder."""
    h = profile.highres
    out = Path(out) if out else profile.run(NAME)
    lat, data = hc.latent_training_set(profile, highres_vqgan.ensure_latents(profile))
    steps = steps or h.ldm_steps
    seed_everything(seed)
    unet = LatentUNet3D(hc.unet_config(h))
    cfg = hc.train_config(profile, steps, h.ldm_lr, seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=h.ldm_lr, weight_decay=0.0)
    config = {"task": NAME, "shaping": shaping(profile, seed, steps), **profile_record(profile),
              "unet": dataclasses.asdict(unet.cfg), "diffusion": dataclasses.asdict(diffusion_config(profile)),
              "latents": to_record(hc.latents_path(profile)), "scale": lat["scale"]}
    tr = Trainer(out, cfg, modules={"unet": unet}, optimizers={"unet": opt}, config=config)
    tr.fit(data, _step(create_scheduler(diffusion_config(profile))), resume=resume)
    return out


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    return hc.ensure_stage(NAME, train, profile, run_dir)


def unet_from_config(cfg: dict, **switches) -> LatentUNet3D:
    """A LatentUNet3D from a run's recorded config; switches (checkpointing, flash_attention) never change weights."""
    fields = {**cfg, "channels": tuple(cfg["channels"]), "attention_levels": tuple(cfg["attention_levels"])}
    return LatentUNet3D(LDM3DConfig(**{**fields, **switches}))


def load(run_dir: str | os.PathLike, device: str = "cpu") -> LatentUNet3D:
    """The trained UNet (eval mode)."""
    ckpt, config = hc.checkpoint_config(run_dir, "unet")
    unet = unet_from_config(config["unet"])
    unet.load_state_dict(ckpt["modules"]["unet"])
    return unet.to(device).eval()
