"""The copy detector of the privacy audits: a contrastive cine embedding in which a copy sits next to its source.

Dar et al. 2024 (arXiv 2402.01054, code Cardio-AI/memorization-ldm) embed scans with a SimCLR encoder and call a
synthetic scan a copy when its nearest training scan is closer than a threshold calibrated on held-out scans
(`cardiolab.privacy.copies`). Here the encoder is `models/evaluator.CineEncoder` with `in_slices` = the profile's
slices, so one embedding covers the whole cine (all slices, all frames). It trains with NT-Xent (MONAI
`ContrastiveLoss`) on the training subjects (public + private: what the generators see), each view passed through
the changes a generator might make to a memorized scan (`CopyAugment`: left-right flip, rotation <= 10 degrees,
shift, zoom, elastic warp, intensity scale, offset and gamma, blur, noise and a roll of the frames), then brought
to a canonical phase and place (`data.cines.align_cines`, as the audit does before embedding). Unlike the FD
evaluator (which must stay sensitive to noise and blur), this embedding should be invariant to exactly those.
`train(without=(F,))` leaves family F out (`CopyAugment.without`): the leave-one-family-out test of the audit
(`privacy.audit.audit_families`) plants copies made with F alone and counts how many such a detector still finds.

The audit compares cines in the projection head's output (`embed`), not in the features below it: NT-Xent acts
on the projections, so they are what the training made invariant to the copy-type changes (SimCLR keeps the
features for transfer because they still carry the augmentations; a copy detector wants them gone). On the tiny
planted cohort (plant seed 0, 600 steps, phantom; the detector before the background fill below) the features
reached recall 84.4 % / FPR 0 %, the projections 96.9 % / 3.1 % with the same calibration. `embed` also averages
each cine with its left-right mirror, so a mirrored copy embeds exactly as its source.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from monai.losses import ContrastiveLoss

from cardiolab.core import CardiolabError, seed_everything, to_record
from cardiolab.data.cines import align_cines
from cardiolab.data.datasets import CineDataset, load_manifest
from cardiolab.data.prepare import ensure_prepared
from cardiolab.engine import Trainer, TrainConfig, ensure_run
from cardiolab.models.evaluator import CineEncoder, EvaluatorConfig
from cardiolab.profiles import Profile, data_shaping, profile_record
from cardiolab.tasks.evaluator import load_encoder

log = logging.getLogger(__name__)

NAME = "copy-detector"
KIND = "detector"
TEMPERATURE = 0.2               # sharper than the evaluator's 0.5: instances must separate, not just cluster
LR = 3e-4                       # as the evaluator (1e-3 collapsed NT-Xent there)
TRAIN_SPLITS = ("public", "private")
# fp32: under CPU bf16 autocast the encoder's strided 3D convolutions gave NaN gradients after a step or two
# (tiny cache, stem stride 2 in time), and one NaN step ruins every weight. Precision shapes no weights' identity.
AMP = "off"


@dataclasses.dataclass(frozen=True)
class CopyAugment:
    """Ranges of the copy-type changes drawn per view (each applied with probability `p`)."""
    p: float = 0.5
    flip: bool = True                    # the embedding averages each cine with its mirror anyway
    max_rotation_deg: float = 10.0       # the "small rotation"
    max_shift: float = 0.08              # in-plane, as a fraction of the half field of view (~2.5 px at 64 px);
                                         # 0.12 (planted copies shift up to 3 px) did worse at tiny, with border
                                         # padding (recall 90.6 %) and with the background fill (75-81 %)
    elastic: float = 0.02                # displacement amplitude of a 4 x 4 control grid (normalized units)
    scale_range: tuple[float, float] = (0.8, 1.2)   # intensity scale around the background (-1)
    max_offset: float = 0.05
    noise_std: float = 0.05              # Gaussian noise, in units of the [-1, 1] range
    max_roll: int = 3                    # frames
    zoom_range: tuple[float, float] = (0.92, 1.08)     # in-plane scale (planted zoom copies reach 0.9-1.1)
    gamma_range: tuple[float, float] = (0.85, 1.18)    # on [0, 1] intensities (planted: 0.8-1.25)
    max_blur: float = 0.8                # Gaussian sigma, px (planted: 0.5-1.0)

    def without(self, *families: str) -> "CopyAugment":
        """These ranges with the named families (AUGMENT_FAMILIES) switched off."""
        unknown = [f for f in families if f not in AUGMENT_FAMILIES]
        if unknown:
            raise CardiolabError(f"copy detector: unknown augmentation families {unknown}; choose from "
                                 f"{', '.join(AUGMENT_FAMILIES)}")
        off = {}
        for f in families:
            off.update(AUGMENT_FAMILIES[f])
        return dataclasses.replace(self, **off)


# each family's fields at their identity value: what `CopyAugment.without` switches off (the planted families of
# `privacy.plant.FAMILIES`; the VQ-GAN round trip is no augmentation, and the elastic warp no planted family)
AUGMENT_FAMILIES = {"flip": {"flip": False}, "rotation": {"max_rotation_deg": 0.0}, "shift": {"max_shift": 0.0},
                    "zoom": {"zoom_range": (1.0, 1.0)}, "roll": {"max_roll": 0},
                    "gain": {"scale_range": (1.0, 1.0), "max_offset": 0.0}, "gamma": {"gamma_range": (1.0, 1.0)},
                    "blur": {"max_blur": 0.0}, "noise": {"noise_std": 0.0}, "elastic": {"elastic": 0.0}}


def encoder_config(profile: Profile) -> EvaluatorConfig:
    # stem stride 2 in time too: frame order is one of the invariances here, and it halves the cost. Not for short
    # cines (smoke: 8 frames), whose last stride-2 conv would see a single frame.
    t_stride = 2 if profile.data.frames >= 16 else 1
    return EvaluatorConfig(in_slices=profile.data.slices, feature_dim=profile.copydetector.dim,
                           proj_dim=profile.copydetector.dim, stem_stride=(2, 2, t_stride))


ALIGN = 2                       # version of the canonical alignment the detector trains on (data.cines.align_cines)


def shaping(profile: Profile, seed: int = 0, cache: str | os.PathLike | None = None,
            steps: int | None = None, without: tuple[str, ...] = ()) -> dict:
    """What shapes the detector's weights: its network, batch, steps, augmentations (less `without`), the
    alignment, the prepared data, the seed."""
    return {"encoder": dataclasses.asdict(encoder_config(profile)), "batch": profile.copydetector.batch,
            "steps": steps or profile.copydetector.steps, "augment": dataclasses.asdict(CopyAugment().without(*without)),
            "align": ALIGN, "canonical_blur": CANONICAL_BLUR, "temperature": TEMPERATURE,
            **data_shaping(profile, cache), "seed": seed}


def num_parameters(profile: Profile) -> int:
    return sum(p.numel() for p in CineEncoder(encoder_config(profile)).parameters())


def augment(x: torch.Tensor, cfg: CopyAugment = CopyAugment(), generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """A random copy-type view of cines x (B, D, H, W, T) in [-1, 1]: one warp (flip, rotation, zoom, shift,
    elastic) shared by all slices and frames of a cine, then gamma, gain and offset, blur, noise and a frame roll;
    clipped to [-1, 1]."""
    B, D, H, W, T = x.shape
    g = generator

    def on() -> torch.Tensor:
        return (torch.rand(B, generator=g) < cfg.p).float()

    def uniform(lo, hi, *shape) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    angle = on() * uniform(-1, 1, B) * math.radians(cfg.max_rotation_deg)
    flip = 1.0 - 2.0 * on() * float(cfg.flip)                                     # -1: left-right mirror
    shift = on()[:, None] * uniform(-cfg.max_shift, cfg.max_shift, B, 2)
    zoom = 1 + on() * uniform(cfg.zoom_range[0] - 1, cfg.zoom_range[1] - 1, B)    # > 1: the anatomy grows
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)      # (B, 2, 3)
    grid = F.affine_grid(theta, (B, 1, H, W), align_corners=False)              # (B, H, W, 2)
    warp = on()[:, None, None, None] * uniform(-cfg.elastic, cfg.elastic, B, 2, 4, 4)
    grid = grid + F.interpolate(warp, (H, W), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    planes = rearrange(x.float(), "b d h w t -> b (d t) h w")
    # what leaves the field of view is filled with background (-1), as a crop re-centred on the heart is: a cohort
    # read back at profile geometry (`audit copies`) moves its crop window by a pixel or two, and with border
    # replication in training a 1-px move of that -1 margin sent shifted planted copies to distance 0.09-0.17
    planes = F.grid_sample(planes + 1.0, grid, padding_mode="zeros", align_corners=False) - 1.0
    out = rearrange(planes, "b (d t) h w -> b d h w t", d=D)
    log_gamma = on() * uniform(math.log(cfg.gamma_range[0]), math.log(cfg.gamma_range[1]), B)
    out = ((out + 1) / 2).clamp(0, 1) ** log_gamma.exp().view(B, 1, 1, 1, 1) * 2 - 1
    out = _blur(out, on() * uniform(0.0, cfg.max_blur, B))
    scale = 1 + on() * uniform(cfg.scale_range[0] - 1, cfg.scale_range[1] - 1, B)
    offset = on() * uniform(-cfg.max_offset, cfg.max_offset, B)
    out = (out + 1) * scale.view(B, 1, 1, 1, 1) - 1 + offset.view(B, 1, 1, 1, 1)
    out = out + (on() * cfg.noise_std).view(B, 1, 1, 1, 1) * torch.randn(out.shape, generator=g)
    rolls = (on() * torch.randint(-cfg.max_roll, cfg.max_roll + 1, (B,), generator=g)).long().tolist()
    out = torch.stack([v.roll(r, dims=-1) for v, r in zip(out, rolls)])
    return out.clamp(-1.0, 1.0)


CANONICAL_BLUR = 1.0    # px: the detector sees every cine through this Gaussian, in training and in the audit, so a
                        # copy blurred by up to ~1 px more differs little from its source (without it: a 0.99 px
                        # blur alone moved a copy to 0.18, tau 0.05; tiny, design seed)


def canonical(x: torch.Tensor) -> torch.Tensor:
    """Cines (B, D, H, W, T) through the detector's fixed in-plane Gaussian of CANONICAL_BLUR px."""
    return _blur(x, torch.full((x.shape[0],), CANONICAL_BLUR, dtype=x.dtype))


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x (B, D, H, W, T) blurred in-plane by a Gaussian of `sigma` (B,) px each (0: unchanged), separable 5 taps."""
    if not bool((sigma > 0).any()):
        return x
    B, D, H, W, T = x.shape
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-r[None] ** 2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    k = torch.where((sigma > 0)[:, None], k, (r == 0).to(x.dtype)[None].expand(B, -1))
    k = k / k.sum(1, keepdim=True)                                                 # (B, 5)
    planes = rearrange(x, "b d h w t -> 1 (b d t) h w")
    kh = k.repeat_interleave(D * T, 0)                                             # (B D T, 5)
    planes = F.conv2d(F.pad(planes, (0, 0, 2, 2), mode="replicate"), kh[:, None, :, None], groups=B * D * T)
    planes = F.conv2d(F.pad(planes, (2, 2, 0, 0), mode="replicate"), kh[:, None, None, :], groups=B * D * T)
    return rearrange(planes, "1 (b d t) h w -> b d h w t", b=B, d=D)


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
          without: tuple[str, ...] = ()) -> Path:
    """NT-Xent training of the copy detector on the training subjects (public + private) of the prepared cache.

    cache_dir: default the profile's (built if missing); steps: default profile.copydetector.steps; without:
    augmentation families left out (`CopyAugment.without`, for the leave-one-family-out audit).
    Returns the run folder (default runs/<profile>/copy-detector).
    """
    out = Path(out or profile.run(NAME))
    cache = Path(cache_dir) if cache_dir is not None else ensure_prepared(profile)
    steps = steps or profile.copydetector.steps
    splits = load_manifest(cache)["splits"]
    data = CineDataset(cache, split=[s for name in TRAIN_SPLITS for s in splits[name]], mode="volume")
    if len(data) < 2:
        raise CardiolabError(f"{cache}: the copy detector needs at least 2 training subjects, found {len(data)}")
    seed_everything(seed)
    cfg, cfg_aug = encoder_config(profile), CopyAugment().without(*without)
    model = CineEncoder(cfg)
    train_cfg = TrainConfig(steps=steps, batch_size=min(profile.copydetector.batch, len(data)), lr=LR,
                            warmup=max(1, steps // 20), ckpt_every=200, seed=seed, device=profile.device,
                            amp=AMP)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=1e-4)
    loss_fn = ContrastiveLoss(temperature=TEMPERATURE)

    def step_fn(batch, step, tr):
        cines = batch["image"][:, 0]                                            # (B, D, H, W, T)
        views = torch.cat([canonical(align_cines(augment(cines.cpu(), cfg_aug)))
                           for _ in range(2)]).to(cines.device)                # two views of each cine
        with tr.autocast():
            net = tr.modules["model"]
            z1, z2 = tr.raw("model").proj(net(views)).float().chunk(2)
            loss = loss_fn(z1, z2)
        tr.backward(loss, "model")
        return {"loss": loss.item()}

    config = {"task": NAME, "shaping": shaping(profile, seed, cache, steps, tuple(without)),
              "encoder": dataclasses.asdict(cfg),
              **profile_record(profile), "cache": to_record(cache), "n_train": len(data), "temperature": TEMPERATURE}
    Trainer(out, train_cfg, modules={"model": model}, optimizers={"model": opt}, config=config).fit(
        data, step_fn, resume=resume)
    return out


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    """The trained detector's run folder (runs/<profile>/copy-detector), trained unless finished with this shaping."""
    out = Path(run_dir or profile.run(NAME))
    return ensure_run(out, profile.copydetector.steps, shaping(profile),
                      lambda resume: train(profile, out, resume=resume))


@torch.no_grad()
def embed(model: CineEncoder, cines: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The audit's embedding: cines (N, D, H, W, T) in [-1, 1] -> (N, P) float64, the unit projections of each
    cine and of its left-right mirror, averaged (exactly mirror-invariant)."""
    if cines.ndim != 5 or cines.shape[1] != model.cfg.in_slices:
        raise CardiolabError(f"copy detector: expected cines (N, {model.cfg.in_slices}, H, W, T), "
                             f"got shape {tuple(cines.shape)}")
    model = model.eval()
    device = next(model.parameters()).device
    cines, views = canonical(cines), []
    for x in (cines, cines.flip(3)):                                           # W: left-right
        z = torch.cat([model.project(x[i:i + batch_size].float().to(device)).float().cpu()
                       for i in range(0, len(x), batch_size)])                # (N, P)
        views.append(F.normalize(z, dim=1))
    return torch.stack(views).mean(0).double()


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> CineEncoder:
    """The frozen detector from a run folder (or checkpoint path), in eval mode."""
    return load_encoder(run_dir, "encoder", device)

