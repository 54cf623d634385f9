"""highres-segmenter: a MONAI 3D UNet segmenting whole-heart volumes into labels 0-6 (cardiolab.io.volume).

It measures adherence: how well a sample drawn from a mask reproduces that mask (Dice per structure,
cardiolab.metrics.volumes). Trained on the whole training volumes with Dice + CE and a random intensity
gain/offset, so it tolerates a generator's intensity drift.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from cardiolab.core import seed_everything
from cardiolab.engine import Trainer
from cardiolab.profiles import Profile, profile_record
from cardiolab.tasks import highres_common as hc

NAME = "highres-segmenter"
KIND = "segmenter"
INTENSITY_JITTER = 0.1
LOSS = DiceCELoss(to_onehot_y=True, softmax=True)


def shaping(profile: Profile, seed: int = 0, steps: int | None = None) -> dict:
    return hc.shaping(NAME, profile, seed, steps)


def num_parameters(profile: Profile) -> int:
    return sum(p.numel() for p in hc.build_segmenter(profile.highres.seg_channels).parameters())


def _step(batch: dict, step: int, tr: Trainer) -> dict:
    x, y = batch["image"], batch["mask"]                       # (B, 1, X, Y, Z), (B, X, Y, Z)
    gain = 1 + _jitter(x)
    offset = _jitter(x)
    with tr.autocast():
        logits = tr.modules["model"](x * gain + offset)
    loss = LOSS(logits.float(), y[:, None])
    tr.backward(loss, "model")
    return {"loss": loss.item()}


def _jitter(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1, 1) uniform in +-INTENSITY_JITTER (torch's global RNG, re-seeded by the engine per step)."""
    return INTENSITY_JITTER * (2 * torch.rand(x.shape[0], 1, 1, 1, 1, device=x.device) - 1)


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0) -> Path:
    h = profile.highres
    out = Path(out) if out else profile.run(NAME)
    data = hc.VolumeSet(hc.load_volumes(profile, "train"))
    steps = steps or h.seg_steps
    seed_everything(seed)
    model = hc.build_segmenter(h.seg_channels)
    cfg = hc.train_config(profile, steps, h.seg_lr, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=h.seg_lr, weight_decay=1e-4)
    config = {"task": NAME, "shaping": shaping(profile, seed, steps), **profile_record(profile),
              "seg_channels": list(h.seg_channels)}
    Trainer(out, cfg, modules={"model": model}, optimizers={"model": opt}, config=config).fit(data, _step,
                                                                                              resume=resume)
    return out


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    return hc.ensure_stage(NAME, train, profile, run_dir)


def load(run_dir: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    ckpt, config = hc.checkpoint_config(run_dir, "seg_channels")
    model = hc.build_segmenter(config["seg_channels"])
    model.load_state_dict(ckpt["modules"]["model"])
    return model.to(device).eval()


@torch.no_grad()
def segment(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """image (X, Y, Z) in [-1, 1] -> labels (X, Y, Z) uint8 0-6."""
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(image, np.float32))[None, None].to(device)
    return model(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
