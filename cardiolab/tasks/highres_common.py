"""What the four high-resolution tasks share (after MedLoRD, arXiv 2503.13211): data, configs, shaping, loading.

The pipeline, each stage a registered task trained through the engine and kept up to date by engine.ensure_run:

    volume cohort (profile.volume_dir, data.phantom3d)
      -> highres-vqgan       models.vqgan.VQGAN on (1, X, Y, Z) random crops (tasks.vqgan.fit; + JukeboxLoss)
      -> latents.pt          every volume encoded and snapped to codes (highres_vqgan.ensure_latents)
      -> highres-ldm         models.ldm3d.LatentUNet3D, v-prediction (cardiolab.diffusion)
      -> highres-controlnet  models.controlnet_slim.SlimControlNet, the UNet frozen, six masks as conditioning
    highres-segmenter        MONAI 3D UNet, labels 0-6: adherence of samples to their conditioning masks

Subjects are split by position: the last `holdout` fraction is never trained on (their masks condition the
samples of the evaluation, their images are the real side). Each stage's shaping holds the data fields, its own
profile.highres fields and the run ids of the stages below; memory switches and sampling fields never retrain
(declared `profiles.runtime`).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.networks.nets import UNet
from torch.utils.data import Dataset

from cardiolab.core import CardiolabError, fingerprint
from cardiolab.data.phantom3d import ensure_volume_cohort
from cardiolab.engine import TrainConfig, ensure_run, load_checkpoint
from cardiolab.io.volume import LABELS, VolumeSubject, read_volume_cohort
from cardiolab.models.controlnet_slim import ControlNetConfig
from cardiolab.models.ldm3d import LDM3DConfig
from cardiolab.models.vqgan import LEVELS, decode_sliding
from cardiolab.profiles import HighresConfig, Profile, VQGANConfig, shaping_fields

log = logging.getLogger(__name__)

VQ_FACTOR = 2 ** LEVELS
LATENTS = "latents.pt"
N_LABELS = len(LABELS)                 # 0-6: background + six structures
# The highres fields each stage reads (whether a field shapes weights is said on the field: `profiles.runtime`)
DATA_FIELDS = ("size", "subjects", "holdout", "modality")
STAGE_FIELDS = {
    "highres-vqgan": ("crop", "vq_channels", "codes", "code_dim", "ema_decay", "jukebox_weight", "vq_steps",
                      "vq_lr", "batch"),
    "highres-ldm": ("unet_channels", "attention_levels", "res_blocks", "train_timesteps", "ldm_steps", "ldm_lr",
                    "batch"),
    "highres-controlnet": ("r", "initial_stride", "control_dropout", "cn_steps", "ldm_lr", "batch"),
    "highres-segmenter": ("seg_channels", "seg_steps", "seg_lr", "batch"),
}
UPSTREAM = {"highres-vqgan": (), "highres-ldm": ("highres-vqgan",),
            "highres-controlnet": ("highres-vqgan", "highres-ldm"), "highres-segmenter": ()}
STEPS_FIELD = {"highres-vqgan": "vq_steps", "highres-ldm": "ldm_steps", "highres-controlnet": "cn_steps",
               "highres-segmenter": "seg_steps"}


# ---- shaping ------------------------------------------------------------------------------------------
def shaping(name: str, profile: Profile, seed: int = 0, steps: int | None = None) -> dict:
    """What shapes stage `name`'s weights: the volume data fields, its own fields, the upstream run ids, the seed."""
    own = shaping_fields(profile.highres, STAGE_FIELDS[name])
    own[STEPS_FIELD[name]] = steps or own[STEPS_FIELD[name]]
    return {"highres_data": shaping_fields(profile.highres, DATA_FIELDS), name: own,
            "upstream": {u: run_id(u, profile) for u in UPSTREAM[name]}, "seed": seed}


def run_id(name: str, profile: Profile) -> str:
    """Id of a stage's profile run: what the stages above it record."""
    return fingerprint(shaping(name, profile))


def steps_of(name: str, profile: Profile) -> int:
    return getattr(profile.highres, STEPS_FIELD[name])


def ensure_stage(name: str, train, profile: Profile,
                 run_dir: str | os.PathLike | None = None) -> Path:
    """engine.ensure_run for stage `name`: `train(profile, out=, resume=)` unless its run (default
    runs/<profile>/<name>) finished with the profile's steps and shaping; returns the run folder."""
    run = Path(run_dir or profile.run(name))
    return ensure_run(run, steps_of(name, profile), shaping(name, profile),
                      lambda resume: train(profile, out=run, resume=resume))


def train_config(profile: Profile, steps: int, lr: float, seed: int) -> TrainConfig:
    """The engine settings every trained stage but the VQ-GAN shares: the profile's batch, precision and device,
    warm-up a tenth of the steps (at most 100), four checkpoints and ten log lines (at most every 500 / 20 steps)."""
    h = profile.highres
    return TrainConfig(steps=steps, batch_size=h.batch, lr=lr, warmup=min(100, steps // 10),
                       ckpt_every=max(1, min(500, steps // 4)), log_every=max(1, min(20, steps // 10)), amp=h.amp,
                       seed=seed, device=profile.device)


# ---- configs -----------------------------------------------------------------------------------------
def vq_config(h: HighresConfig) -> VQGANConfig:
    """The VQ-GAN of the highres section; adversarial term from half-way (MedLoRD: weight 0.005)."""
    return VQGANConfig(channels=tuple(h.vq_channels), codes=h.codes, code_dim=h.code_dim, steps=h.vq_steps,
                       batch=h.batch, lr=h.vq_lr, disc_start=max(1, h.vq_steps // 2), disc_weight=0.005,
                       mse_weight=0.0, augment=False, crop=(0, 0, 0), amp=h.amp, ema_decay=h.ema_decay)


def unet_config(h: HighresConfig) -> LDM3DConfig:
    ch = tuple(h.unet_channels)
    return LDM3DConfig(in_channels=h.code_dim, channels=ch, attention_levels=tuple(h.attention_levels),
                       res_blocks=h.res_blocks, head_channels=32, norm_groups=math.gcd(32, *ch),
                       flash_attention=h.flash_attention, checkpointing=h.checkpointing)


def controlnet_config(h: HighresConfig) -> ControlNetConfig:
    """embed_channels so that initial_stride * 2^(len - 1) is the VQ-GAN factor (stride 2: (16, 32))."""
    if h.initial_stride < 1 or VQ_FACTOR % h.initial_stride:
        raise CardiolabError(f"profiles.py: highres.initial_stride must divide {VQ_FACTOR}, got {h.initial_stride}")
    embed = (16,) + (32,) * int(round(math.log2(VQ_FACTOR // h.initial_stride)))
    return ControlNetConfig(r=h.r, initial_stride=h.initial_stride, embed_channels=embed,
                            image_downsample=VQ_FACTOR, control_dropout=h.control_dropout)


def build_segmenter(channels: Sequence[int]) -> UNet:
    """MONAI 3D UNet: (B, 1, X, Y, Z) -> logits (B, 7, X, Y, Z); each axis divisible by 2^(len(channels) - 1)."""
    return UNet(spatial_dims=3, in_channels=1, out_channels=N_LABELS, channels=tuple(channels),
                strides=(2,) * (len(channels) - 1), num_res_units=1)


def check_size(h: HighresConfig, size: Sequence[int], what: str) -> None:
    """A volume must survive the VQ-GAN's /4 and the UNet's /2^(levels-1) exactly."""
    f = VQ_FACTOR * 2 ** (len(h.unet_channels) - 1)
    if len(size) != 3 or any(int(s) % f for s in size):
        raise CardiolabError(f"{what}: size {tuple(size)} must have every axis divisible by {f} "
                             f"(VQ-GAN /{VQ_FACTOR} x UNet /{f // VQ_FACTOR})")


# ---- data ----------------------------------------------------------------------------------------------
def split_ids(profile: Profile) -> tuple[list[str], list[str]]:
    """(training ids, holdout ids) of the profile's volume cohort: the last `holdout` fraction is held out."""
    h = profile.highres
    ids = [f"volume{i + 1:03d}" for i in range(h.subjects)]
    n_hold = min(len(ids) - 1, max(1, int(round(h.holdout * len(ids)))))
    return ids[:-n_hold], ids[-n_hold:]


def load_volumes(profile: Profile, split: str = "train") -> list[VolumeSubject]:
    """The profile's volume cohort (generated if missing), split 'train' | 'holdout' | 'all'."""
    root = ensure_volume_cohort(profile)
    train, hold = split_ids(profile)
    keep = {"train": train, "holdout": hold, "all": train + hold}[split]
    subjects = [s for s in read_volume_cohort(root) if s.id in keep]
    if not subjects:
        raise CardiolabError(f"{root}: no volumes of the {split} split")
    return subjects


class CropSet(Dataset):
    """Random crops of whole volumes: items {"image": (1, cx, cy, cz)}. The crop is drawn from torch's global RNG,
    which the engine re-seeds before every fetch, so crops are a function of (seed, step)."""

    def __init__(self, images: Sequence[np.ndarray], crop: Sequence[int]):
        self.images = [torch.as_tensor(np.asarray(x, np.float32)) for x in images]
        self.crop = tuple(int(c) for c in crop)
        for x in self.images:
            if any(c > s for c, s in zip(self.crop, x.shape)):
                raise CardiolabError(f"profiles.py: highres.crop {self.crop} is larger than a volume {tuple(x.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        x = self.images[i]
        start = [int(torch.randint(0, s - c + 1, ())) for s, c in zip(x.shape, self.crop)]
        sl = tuple(slice(a, a + c) for a, c in zip(start, self.crop))
        return {"image": x[sl][None]}


class VolumeSet(Dataset):
    """Whole volumes with their masks: {"image": (1, X, Y, Z) float32, "mask": (X, Y, Z) int64} plus, when
    latents are given, {"latent": (C_z, X/4, Y/4, Z/4)} (scaled)."""

    def __init__(self, subjects: Sequence[VolumeSubject], latents: torch.Tensor | None = None):
        self.subjects, self.latents = list(subjects), latents

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, i: int) -> dict:
        s = self.subjects[i]
        item = {"image": torch.as_tensor(s.image, dtype=torch.float32)[None],
                "mask": torch.as_tensor(s.mask.astype(np.int64))}
        if self.latents is not None:
            item["latent"] = self.latents[i]
        return item


# ---- latents ---------------------------------------------------------------------------------------------
@torch.no_grad()
def encode(vq, image: torch.Tensor) -> torch.Tensor:
    """image (B, 1, X, Y, Z) -> quantized latent (B, C_z, X/4, Y/4, Z/4) (codes snapped in vq.code_chunk chunks)."""
    return vq.embed(vq.snap(vq.encode(image)))


@torch.no_grad()
def decode(vq, z: torch.Tensor, window: Sequence[int] = (0, 0, 0)) -> torch.Tensor:
    """z (B, C_z, h, w, d) unscaled -> image (B, 1, 4h, 4w, 4d) in [-1, 1]; snapped to codes first.

    window: sliding-window decode with this latent window (any 0: the whole volume at once).
    """
    z_q = vq.embed(vq.snap(z))
    if all(int(w) > 0 for w in window):
        win = tuple(min(int(w), s) for w, s in zip(window, z_q.shape[2:]))
        return decode_sliding(vq, z_q, win).clamp(-1, 1)
    return vq.decode(z_q).clamp(-1, 1)


def latents_path(profile: Profile, vq_run: str | os.PathLike | None = None) -> Path:
    return Path(vq_run or profile.run("highres-vqgan")) / LATENTS


def load_latents(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise CardiolabError(f"{path}: no latents (train highres-vqgan first)")
    return torch.load(path, weights_only=True)


def latent_training_set(profile: Profile, path: str | os.PathLike) -> tuple[dict, "VolumeSet"]:
    """(the latents record at `path`, the training set of its scaled latents with their masks)."""
    lat = load_latents(path)
    return lat, VolumeSet(training_masks(profile, lat["ids"]), lat["latents"] * lat["scale"])


def training_masks(profile: Profile, ids: Sequence[str]) -> list[VolumeSubject]:
    """The training subjects in the order of `ids` (the latents' order)."""
    by_id = {s.id: s for s in load_volumes(profile, "train")}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise CardiolabError(f"latents name subjects {missing[:3]} not in the volume cohort: re-encode")
    return [by_id[i] for i in ids]


def checkpoint_config(run_dir: str | os.PathLike, key: str) -> tuple[dict, dict]:
    """(checkpoint, its config) of a run, refusing a run without config[key]."""
    ckpt = load_checkpoint(run_dir)
    if key not in ckpt["config"]:
        raise CardiolabError(f"{run_dir}: not a {key} run (config has no {key!r})")
    return ckpt, ckpt["config"]
