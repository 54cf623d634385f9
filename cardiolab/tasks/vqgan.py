"""Training and using the spatiotemporal VQ-GAN (stage 1 of CardioDiT, arXiv 2603.25194).

Losses per step (generator, then discriminator), all on one batch of 2D+t slices x (B, 1, H, W, T):
  L_G = |x - x_hat|_1 + w_mse |x - x_hat|^2 + commitment + w_adv(step) * LSGAN_G(D(x_hat))
  L_D = 0.5 * (LSGAN(D(x), real) + LSGAN(D(x_hat), fake))                 (from step disc_start on)
w_adv ramps linearly from 0 at disc_start to disc_weight at 2 * disc_start, so the autoencoder learns to reconstruct
before the adversary sharpens it. The codebook itself moves by EMA (no gradient); idle codes are restarted.
With `vqgan.crop` the batch is a random (H, W, T) window of each slice (MedLoRD trains its VQ-GAN on crops):
a 32x32 crop of a 64x64x16 slice costs ~0.3x the step (benchmarks/README.md); `vqgan.augment` flips and rolls
it. Every layer is convolutional, so the model trained on crops encodes and decodes whole slices.
No perceptual term: LPIPS-style losses need downloaded weights, and a feature net of cardiolab's own would be the
one that FD-cardiolab measures with, so training against it would flatter the evaluation.

Latents for the DiT: every slice of a subject is encoded and the slices are stacked into one 4D latent
(C_z, D, h, w, t); `latents.pt` keeps them unscaled with `scale` = 1 / std over the training subjects.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from monai.losses import JukeboxLoss, PatchAdversarialLoss
from tqdm import tqdm

from cardiolab.core import (RUN_CONFIG, CardiolabError, atomic_path, fingerprint, from_record, read_json, read_stamp,
                            seed_everything, to_record, up_to_date)
from cardiolab.data.cines import load_cines
from cardiolab.data.datasets import CineDataset, generator_splits, load_manifest
from cardiolab.data.prepare import ensure_prepared
from cardiolab.engine import Trainer, TrainConfig, ensure_run, load_checkpoint, recorded_shaping
from cardiolab.metrics import fidelity
from cardiolab.models.vqgan import VQGAN, VQConfig, build_discriminator, latent_shape, perplexity  # noqa: F401 (re-export)
from cardiolab.profiles import Profile, VQGANConfig, data_shaping, profile_record, shaping_fields

log = logging.getLogger(__name__)

NAME = "vqgan"
KIND = "autoencoder"
LATENTS = "latents.pt"
LATENT_PATHS = ("vqgan_run", "cache_dir", "scale_from")   # latents.pt entries that name files: `core.to_record`
_adversarial = PatchAdversarialLoss(criterion="least_squares")


# ---- losses and the engine step ----------------------------------------------------------------
def adversarial_weight(cfg: VQGANConfig, step: int) -> float:
    """0 before disc_start, then a linear ramp over disc_start steps up to disc_weight."""
    if step < cfg.disc_start:
        return 0.0
    return cfg.disc_weight * min(1.0, (step - cfg.disc_start + 1) / max(1, cfg.disc_start))


def random_crop(x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """x (B, 1, H, W, T) -> (B, 1, *size): one random window per sample (global RNG: the engine seeds each step).

    Each start is drawn as if the window could overhang the slice by half its size, then clamped into it: windows
    at the edges get the overhanging draws. Uniform starts would show a pixel on the border to 1 window in 33 (a
    32 crop of 64) against 32 in 33 at the centre, and the model would not learn the periphery (tiny, phantom v3:
    border-ring MSE 2.6x that of full-slice training); clamped, the border is seen 1 time in 4, the centre 3 in 4.
    """
    if tuple(x.shape[2:]) == tuple(size):
        return x
    starts = [torch.randint(-(c // 2), n - c + c // 2 + 1, (x.shape[0],)).clamp(0, n - c).tolist()
              for n, c in zip(x.shape[2:], size)]
    return torch.stack([x[i, :, h:h + size[0], w:w + size[1], t:t + size[2]]
                        for i, (h, w, t) in enumerate(zip(*starts))])


def random_flip_roll(x: torch.Tensor) -> torch.Tensor:
    """x (B, 1, H, W, T): each sample flipped in H and in W with probability 1/2 and rolled by a random number of
    frames in T (a cine covers one periodic beat, so a rolled one is as valid). Global RNG: the engine seeds it."""
    flips = torch.rand(x.shape[0], 2) < 0.5
    shifts = torch.randint(0, x.shape[-1], (x.shape[0],)).tolist()
    out = []
    for xi, (fh, fw), s in zip(x, flips.tolist(), shifts):
        dims = [d for d, f in ((1, fh), (2, fw)) if f]
        xi = xi.flip(dims) if dims else xi
        out.append(xi.roll(s, dims=3))
    return torch.stack(out)


def make_step_fn(cfg: VQGANConfig, size: tuple[int, int, int] | None = None, spectral_weight: float = 0.0):
    """The engine step: one generator update, one discriminator update (after disc_start), dead-code restarts.

    size: the (H, W, T) trained on (`crop_size`); batches are cropped to it at random, None keeps them whole.
    spectral_weight: weight of MONAI's JukeboxLoss (L1 between amplitude spectra; MedLoRD: 1.0, no weights
    needed), added to L_G; 0 (the cine default) leaves it out.
    """
    spectral = JukeboxLoss(spatial_dims=3) if spectral_weight > 0 else None

    def step_fn(batch: dict, step: int, tr: Trainer) -> dict:
        x = batch["image"]                                         # (B, 1, H, W, T)
        if size is not None:
            x = random_crop(x, size)                               # (B, 1, *size)
        if cfg.augment:
            x = random_flip_roll(x)
        model, disc = tr.modules["model"], tr.modules["disc"]
        w_adv = adversarial_weight(cfg, step)
        with tr.autocast():
            x_hat, commit, codes, z_e = model(x)
            recon = F.l1_loss(x_hat.float(), x)
            mse = F.mse_loss(x_hat.float(), x)
            loss = recon + cfg.mse_weight * mse + commit
            spec = spectral(x_hat.float(), x) if spectral is not None else torch.zeros((), device=x.device)
            loss = loss + spectral_weight * spec
            g_adv = torch.zeros((), device=x.device)
            if w_adv > 0:
                # The raw discriminator: its gradients here are discarded by the next zero_grad anyway.
                g_adv = _adversarial(tr.raw("disc")(x_hat)[-1].float(), target_is_real=True, for_discriminator=False)
                loss = loss + w_adv * g_adv
        tr.backward(loss, "model")
        d_loss = torch.zeros(())
        if step >= cfg.disc_start:
            with tr.autocast():
                real = _adversarial(disc(x)[-1].float(), target_is_real=True, for_discriminator=True)
                fake = _adversarial(disc(x_hat.detach())[-1].float(), target_is_real=False, for_discriminator=True)
                d_loss = 0.5 * (real + fake)
            tr.backward(d_loss, "disc")
        vq = tr.raw("model")
        restarted = vq.restart_dead_codes(z_e)                     # global RNG: the engine seeds it per step
        return {"loss": loss.item(), "l1": recon.item(), "mse": mse.item(), "commit": commit.item(), "spectral": spec.item(),
                "g_adv": g_adv.item(), "d_loss": d_loss.item(), "w_adv": w_adv,
                "perplexity": perplexity(codes, cfg.codes).item(), "dead_fraction": vq.dead_fraction(),
                "restarted": restarted}

    return step_fn


# ---- build, train, ensure, load ----------------------------------------------------------------
def slice_size(profile: Profile) -> tuple[int, int, int]:
    """(H, W, T) of one prepared slice."""
    return (profile.data.image_size, profile.data.image_size, profile.data.frames)


def crop_size(profile: Profile) -> tuple[int, int, int]:
    """(H, W, T) the VQ-GAN trains on: `vqgan.crop`, an axis given as 0 (or larger than the slice) kept whole."""
    return tuple(min(c, n) if c else n for c, n in zip(profile.vqgan.crop, slice_size(profile)))


def shaping(profile: Profile, seed: int = 0, cache: str | os.PathLike | None = None,
            steps: int | None = None) -> dict:
    """What shapes the VQ-GAN's weights: its section's shaping fields, the prepared data and the seed."""
    cfg = shaping_fields(profile.vqgan)
    cfg["steps"] = steps or cfg["steps"]
    return {"vqgan": cfg, **data_shaping(profile, cache), "seed": seed}


def run_id(profile: Profile) -> str:
    """Id of the profile's VQ-GAN run: what a latent set and a DiT record as the VQ-GAN they were built on."""
    return fingerprint(shaping(profile))


def num_parameters(profile: Profile) -> int:
    """Parameters of the autoencoder (the discriminator, used only in training, not counted)."""
    return sum(p.numel() for p in VQGAN(VQConfig.pick(profile.vqgan)).parameters())


def build(cfg: VQGANConfig, size: tuple[int, int, int], code_chunk: int = 0,
          checkpointing: bool = False) -> tuple[VQGAN, torch.nn.Module]:
    net = VQConfig.pick(cfg)
    return VQGAN(net, code_chunk=code_chunk, checkpointing=checkpointing), build_discriminator(net, size)


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0) -> Path:
    """Train the VQ-GAN on every slice of the cache's generator splits (`datasets.generator_splits`: not the
    holdout, nor a real source's private split); returns the run folder."""
    out = Path(out) if out else profile.run(NAME)
    cfg, size = profile.vqgan, crop_size(profile)
    cache = ensure_prepared(profile)
    manifest = load_manifest(cache)
    train_ids = [s["id"] for s in manifest["subjects"] if s["split"] in generator_splits(manifest)]
    data = CineDataset(cache, split=train_ids, mode="slice")
    config = {"task": NAME, "shaping": shaping(profile, seed, cache, steps), **profile_record(profile),
              "cache_dir": to_record(cache), "train_ids": train_ids}
    return fit(data, cfg, size, out, steps=steps, seed=seed, resume=resume, device=profile.device,
               num_workers=profile.num_workers, config=config)


def fit(data, cfg: VQGANConfig, size: tuple[int, int, int], out: str | os.PathLike, steps: int | None = None,
        seed: int = 0, resume: bool = False, device: str = "auto", num_workers: int = 0,
        config: dict | None = None, spectral_weight: float = 0.0, checkpointing: bool = False,
        code_chunk: int = 0) -> Path:
    """Train on `data` (items {"image": (1, H, W, T)}, or (1, X, Y, Z) volume crops) through the engine; returns
    the run folder `out`. spectral_weight: see make_step_fn; checkpointing, code_chunk: memory switches."""
    steps = steps or cfg.steps
    seed_everything(seed)
    model, disc = build(cfg, size, code_chunk=code_chunk, checkpointing=checkpointing)
    # Adam betas (0.5, 0.9): the usual GAN choice (taming-transformers, MONAI generative tutorials).
    opt_g = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    tcfg = TrainConfig(steps=steps, batch_size=cfg.batch, lr=cfg.lr, warmup=min(100, steps // 10),
                       ema_decay=None, ckpt_every=max(1, min(200, steps // 4)), log_every=max(1, min(10, steps // 10)),
                       amp=cfg.amp, seed=seed, device=device, num_workers=num_workers)
    # No EMA copy: an average of EMA-updated codebooks is not a codebook.
    tr = Trainer(out, tcfg, modules={"model": model, "disc": disc}, optimizers={"model": opt_g, "disc": opt_d},
                 config={**(config or {}), "vqgan": dataclasses.asdict(cfg), "size": list(size), "seed": seed,
                         "dead_after": model.dead_after})
    tr.fit(data, make_step_fn(cfg, size, spectral_weight), resume=resume)
    return Path(out)


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    """The VQ-GAN run folder (default runs/<profile>/vqgan); trains (resuming a partial run) unless finished."""
    run = Path(run_dir) if run_dir else profile.run(NAME)
    return ensure_run(run, profile.vqgan.steps, shaping(profile), lambda resume: train(profile, run, resume=resume))


def load(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> VQGAN:
    """The trained VQGAN from run_dir (EMA weights when the run kept them), in eval mode."""
    ckpt = load_checkpoint(run_dir, map_location=device)
    conf = ckpt["config"]
    if "vqgan" not in conf:
        raise CardiolabError(f"{Path(run_dir) / RUN_CONFIG}: not a VQ-GAN run (no 'vqgan' section)")
    model = VQGAN(VQConfig.pick(conf["vqgan"]), dead_after=int(conf.get("dead_after", 100)))
    weights = ckpt["ema"].get("model") if ema and ckpt.get("ema") else None
    model.load_state_dict(weights or ckpt["modules"]["model"])
    return model.to(device).eval()


# ---- latents ------------------------------------------------------------------------------------
@torch.no_grad()
def encode_volume(model: VQGAN, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """image (1, D, H, W, T) -> (latent (C_z, D, h, w, t) quantized embeddings, codes (D, h, w, t))."""
    x = rearrange(image, "c d h w t -> d c h w t")                    # slices as the batch
    codes = model.snap(model.encode(x.to(_device(model))))           # (D, h, w, t)
    z = rearrange(model.embed(codes), "d c h w t -> c d h w t")
    return z.cpu(), codes.cpu()


@torch.no_grad()
def decode_latents(model: VQGAN, z: torch.Tensor, chunk: int = 32, snap: bool = True) -> torch.Tensor:
    """z (B, C_z, D, h, w, t) UNSCALED -> images (B, 1, D, H, W, T) in [-1, 1].

    z is first snapped to the nearest codebook entries, so DiT samples decode like real codes (snap=False: z
    already holds codebook entries, as `encode_volume` returns them).
    """
    if z.ndim != 6 or z.shape[1] != model.cfg.code_dim:
        raise CardiolabError(f"decode_latents: expected (B, {model.cfg.code_dim}, D, h, w, t), got {tuple(z.shape)}")
    if bad := int((~torch.isfinite(z)).flatten(1).any(1).sum()):   # snapping would turn them into one valid code
        raise CardiolabError(f"decode_latents: {bad} of {z.shape[0]} latents hold NaN or inf (the generator "
                             "diverged or its weights are not finite); nothing decoded", exit_code=1)
    B = z.shape[0]
    flat = rearrange(z, "b c d h w t -> (b d) c h w t").to(_device(model))
    out = torch.cat([model.decode(model.embed(model.snap(part)) if snap else part) for part in flat.split(chunk)])
    return rearrange(out.clamp(-1, 1), "(b d) c h w t -> b c d h w t", b=B).cpu()


def encode_cohort(run_dir: str | os.PathLike, cache_dir: str | os.PathLike, out: str | os.PathLike,
                  scale_from: str | os.PathLike | None = None, splits: tuple[str, ...] | None = None) -> Path:
    """Encode the subjects of the prepared cache; writes out/latents.pt (weights_only-safe) and returns its path.

    scale_from: a latent-model run (its config.json 'scale') or latents.pt whose `scale` to record instead of
    1 / std over this cache's training subjects. For a private cache (DP fine-tuning), pass the public run so
    that no statistic of the private subjects reaches the file.
    splits: the training splits to encode beside the holdout (default `datasets.generator_splits`): whatever
    reads the latents trains on their non-holdout subjects, so a real source's private split stays out of the
    public latents, and DP's latents hold it alone (`splits=("private",)`).
    """
    public_scale = None if scale_from is None else recorded_scale(scale_from)
    model = load(run_dir)
    manifest = load_manifest(cache_dir)
    keep = (*(splits or generator_splits(manifest)), "holdout")
    data = CineDataset(cache_dir, split=[s["id"] for s in manifest["subjects"] if s["split"] in keep],
                       mode="volume")
    latents, codes, ids, conds = [], [], [], []
    for i in tqdm(range(len(data)), desc="encode", mininterval=2.0):
        item = data[i]
        z, c = encode_volume(model, item["image"])
        latents.append(z)
        codes.append(c)
        ids.append(data.ids[int(item["index"])])
        conds.append(item["cond"])
    splits = {s["id"]: s["split"] for s in manifest["subjects"]}
    latents_t = torch.stack(latents).float()                             # (N, C_z, D, h, w, t)
    train = torch.tensor([splits[i] != "holdout" for i in ids])
    std = latents_t[train].std() if train.any() else latents_t.std()
    scale = float(1.0 / max(float(std), 1e-8)) if public_scale is None else public_scale
    record = {"latents": latents_t, "codes": torch.stack(codes).long(), "ids": ids, "splits": splits,
              "cond": torch.stack(conds).long(), "scale": scale,
              "scale_from": None if scale_from is None else str(Path(scale_from).resolve()),
              "shape": list(latents_t.shape[1:]), "vqgan_run": str(Path(run_dir).resolve()),
              **latents_stamp(run_dir),
              "cache_dir": str(Path(cache_dir).resolve())}   # ids (patient001...) mean something only with it
    path = save_latents(record, Path(out) / LATENTS)
    log.info("wrote %s: %d subjects, latent %s, scale %.4f", path, len(ids), record["shape"], record["scale"])
    return path


def recorded_scale(source: str | os.PathLike) -> float:
    """The latent `scale` of a run folder (config.json, e.g. a DiT run) or of latents.pt (or its folder)."""
    source = Path(source)
    if (source / RUN_CONFIG).exists():
        conf = read_json(source / RUN_CONFIG)
        if "scale" not in conf:
            raise CardiolabError(f"{source / RUN_CONFIG}: records no latent 'scale' (not a latent-model run)")
        return float(conf["scale"])
    if source.suffix == ".pt" or (source / LATENTS).exists():
        return float(load_latents(source)["scale"])
    raise CardiolabError(f"--scale-from {source}: neither a run folder with {RUN_CONFIG} nor a latents.pt")


def ensure_latents(profile: Profile, run_dir: str | os.PathLike | None = None,
                   out: str | os.PathLike | None = None) -> Path:
    """Path of latents.pt (default runs/<profile>/latents/); trains the VQ-GAN and encodes if missing or stale."""
    path = Path(out or profile.run("latents")) / LATENTS
    run = ensure(profile, run_dir)
    # re-encode unless the latents were made by the VQ-GAN run with the shaping the profile asks for
    if not up_to_date(path, read_stamp(path), latents_stamp(run)):
        encode_cohort(run, ensure_prepared(profile), path.parent)
    return path


def latents_stamp(vqgan_run: str | os.PathLike) -> dict:
    """What a latent set (cine or highres) records of the VQ-GAN run that encoded it: the id of its shaping."""
    return {"vqgan_id": fingerprint(recorded_shaping(vqgan_run))}


def save_latents(record: dict, path: str | os.PathLike) -> Path:
    """Write a latent record (`encode_cohort`'s keys; LATENT_PATHS absolute, as `load_latents` returns them) to the
    .pt `path` atomically, LATENT_PATHS recorded relative to the root (`core.to_record`), so that a copied root
    still finds its VQ-GAN and cache."""
    record = {**record, **{k: to_record(record[k]) for k in LATENT_PATHS if record.get(k)}}
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return Path(path)


def load_latents(path: str | os.PathLike) -> dict:
    """The dict written by encode_cohort (a folder or the latents.pt file); its LATENT_PATHS come back as
    absolute path strings (`core.from_record`: relative ones under today's root, old absolute ones as they are)."""
    path = Path(path)
    path = path / LATENTS if path.is_dir() else path
    if not path.exists():
        raise CardiolabError(f"{path}: no latents (run `python -m cardiolab encode` first)")
    record = torch.load(path, map_location="cpu", weights_only=True)
    return {**record, **{k: str(from_record(record[k])) for k in LATENT_PATHS if record.get(k)}}


# ---- evaluation helpers (notebook 02, benchmarks/vqgan_recon.py) ---------------------------------
@torch.no_grad()
def reconstruct(model: VQGAN, image: torch.Tensor) -> torch.Tensor:
    """image (1, D, H, W, T) -> its reconstruction (1, D, H, W, T) in [-1, 1]."""
    z, _ = encode_volume(model, image)
    return decode_latents(model, z[None], snap=False)[0]


@torch.no_grad()
def reconstruction_metrics(model: VQGAN, cache_dir: str | os.PathLike, split: str = "holdout") -> dict:
    """`cardiolab.metrics.fidelity.reconstruction_metrics` of the cache's `split` and its reconstructions,
    with "split" and per-subject rows ("subjects")."""
    real = load_cines(cache_dir, split=split)
    recon = torch.cat([reconstruct(model, x[None]) for x in real.images])       # (N, D, H, W, T)
    return {"split": split, **fidelity.reconstruction_metrics(real.images, recon, ids=real.ids)}


@torch.no_grad()
def codebook_usage(model: VQGAN, codes: torch.Tensor) -> np.ndarray:
    """How often each of the K codes occurs in `codes` (any shape): (K,) int64."""
    return torch.bincount(codes.flatten().cpu(), minlength=model.cfg.codes).numpy()


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
