"""highres-vqgan: stage 1 of the whole-heart pipeline (after MedLoRD): the VQ-GAN on (1, X, Y, Z) random crops.

The network and the losses are the cine VQ-GAN's (models.vqgan, tasks.vqgan.fit: L1 + commitment + LSGAN after
half the steps, EMA codebook with restarts), with MedLoRD's codebook decay and its spectral term (MONAI
JukeboxLoss, `highres.jukebox_weight`). `ensure_latents` encodes every training volume after it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from einops import rearrange

from cardiolab.core import SCORES, atomic_path, read_stamp, up_to_date, write_json
from cardiolab.metrics import fidelity
from cardiolab.models.vqgan import VQGAN, VQConfig
from cardiolab.profiles import Profile, profile_record
from cardiolab.tasks import highres_common as hc
from cardiolab.tasks import vqgan as vqgan_task

log = logging.getLogger(__name__)

NAME = "highres-vqgan"
KIND = "autoencoder"


def shaping(profile: Profile, seed: int = 0, steps: int | None = None) -> dict:
    return hc.shaping(NAME, profile, seed, steps)


def num_parameters(profile: Profile) -> int:
    return sum(p.numel() for p in VQGAN(VQConfig.pick(hc.vq_config(profile.highres))).parameters())


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0) -> Path:
    """Train on random crops of the training volumes; returns the run folder."""
    h = profile.highres
    out = Path(out) if out else profile.run(NAME)
    hc.check_size(h, h.size, "profiles.py: highres.size")
    subjects = hc.load_volumes(profile, "train")
    data = hc.CropSet([s.image for s in subjects], h.crop)
    config = {"task": NAME, "shaping": shaping(profile, seed, steps), **profile_record(profile),
              "train_ids": [s.id for s in subjects], "volume_dir": str(profile.volume_dir)}
    run = vqgan_task.fit(data, hc.vq_config(h), tuple(h.crop), out, steps=steps or h.vq_steps, seed=seed,
                         resume=resume, device=profile.device, num_workers=profile.num_workers, config=config,
                         spectral_weight=h.jukebox_weight, checkpointing=h.checkpointing, code_chunk=h.code_chunk)
    scores = reconstruction_metrics(load(run), profile)
    write_json(run / SCORES, {"reconstruction": scores})
    log.info("highres-vqgan: holdout PSNR %.2f dB, SSIM %.3f, MS-SSIM %.3f (%d volumes)", scores["PSNR"],
             scores["SSIM"], scores["MS-SSIM"], scores["n"])
    return run


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    return hc.ensure_stage(NAME, train, profile, run_dir)


def load(run_dir: str | os.PathLike, device: str = "cpu") -> VQGAN:
    """The trained VQ-GAN (eval mode)."""
    return vqgan_task.load(run_dir, device=device)


@torch.no_grad()
def reconstruction_metrics(vq: VQGAN, profile: Profile, split: str = "holdout") -> dict:
    """`metrics.fidelity.reconstruction_metrics` of the `split` volumes and their VQ-GAN reconstructions
    (encode, snap, decode), each volume (X, Y, Z) read as Z axial slices of one frame; with "split"."""
    subjects = hc.load_volumes(profile, split)
    device = next(vq.parameters()).device
    real, recon = [], []
    for s in subjects:
        x = torch.as_tensor(s.image, dtype=torch.float32)[None, None]
        y = hc.decode(vq, vq.encode(x.to(device)), profile.highres.decode_window).cpu()   # decode snaps
        real.append(rearrange(x[0, 0], "x y z -> z x y 1"))
        recon.append(rearrange(y[0, 0], "x y z -> z x y 1"))
    ids = [s.id for s in subjects]
    return {"split": split, **fidelity.reconstruction_metrics(torch.stack(real), torch.stack(recon), ids=ids)}


def ensure_latents(profile: Profile, vq_run: str | os.PathLike | None = None) -> Path:
    """Every training volume encoded by the profile's VQ-GAN, in <vq run>/latents.pt (re-encoded when the
    VQ-GAN's shaping changed: the one staleness rule): {"ids", "latents" (N, C_z, h, w, d) unscaled, "scale",
    "vqgan_id"}."""
    run = ensure(profile, run_dir=vq_run)
    path = hc.latents_path(profile, run)
    stamp = vqgan_task.latents_stamp(run)
    if up_to_date(path, read_stamp(path), stamp):     # a corrupt file reads as no stamp: re-encoded
        return path
    vq = load(run, device=profile.device if profile.device != "auto" else "cpu")
    vq.code_chunk = profile.highres.code_chunk
    subjects = hc.load_volumes(profile, "train")
    device = next(vq.parameters()).device
    z = torch.cat([hc.encode(vq, torch.as_tensor(s.image, dtype=torch.float32)[None, None].to(device)).cpu()
                   for s in subjects])
    scale = float(1.0 / z.std().clamp_min(1e-6))
    with atomic_path(path) as tmp:
        torch.save({"ids": [s.id for s in subjects], "latents": z, "scale": scale, **stamp}, tmp)
    log.info("highres: encoded %d volumes -> %s (latent %s)", len(subjects), path, tuple(z.shape[1:]))
    return path
