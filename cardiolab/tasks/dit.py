"""Training and sampling CardioDiT (stage 2 of arXiv 2603.25194) on the VQ-GAN's 4D latents.

Training: latents.pt from `cardiolab.tasks.vqgan.ensure_latents` (unscaled, (N, C_z, D, h, w, t)) are
multiplied by its `scale` (1 / std) so the diffusion sees unit variance; holdout subjects are left out.
One engine step = one v-prediction smooth-L1 term (cardiolab.diffusion) with attribute dropout for
classifier-free guidance; EMA weights are kept for sampling.

Sampling: DDIM from the EMA model, latents divided by `scale` again, decoded slice by slice by the VQ-GAN
(which snaps them to its codebook), then written as a synthetic ACDC-layout cohort `synth0001`, ... that
carries no identifier of any training subject: ids, Info.cfg and samples.json hold only sampled values.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cardiolab.core import (RUN_CONFIG, CardiolabError, from_record, machine_info, pick_device, seed_everything,
                            to_record, write_json)
from cardiolab.data import attributes
from cardiolab.data.cines import cohort_geometry
from cardiolab.diffusion import DiffusionConfig, create_scheduler, diffusion_loss, sample, sampling_precision
from cardiolab.engine import Trainer, TrainConfig, ensure_run, load_checkpoint, run_id
from cardiolab.io.cohort import INTENSITY_SCALE, SAMPLES_JSON, write_cines
from cardiolab.models.dit4d import DiT4D, DiT4DConfig
from cardiolab.models.vqgan import latent_shape as per_slice
from cardiolab.profiles import Profile, profile_record, run_profile, shaping_fields
from cardiolab.tasks import ensure_samples as ensure_generator_samples, vqgan

log = logging.getLogger(__name__)

NAME = "dit"
KIND = "generator"
GENERATOR = "cardiodit"            # samples.json's generator; the CLI name stays `dit`
COND_MODES = ("random", "from-training-distribution", "none")


# ---- configs from the profile ---------------------------------------------------------------------
def model_config(profile: Profile, latent_shape: tuple[int, ...], conditional: bool = True) -> DiT4DConfig:
    """DiT4DConfig for latents (C_z, D, h, w, t) and the profile's dit section."""
    p = profile.dit
    C, *size = latent_shape
    return DiT4DConfig(input_size=tuple(size), in_channels=C, patch=tuple(p.patch), hidden=p.hidden,
                       depth=p.depth, heads=p.heads,
                       cond_cardinalities=tuple(attributes.cardinalities()) if conditional else (),
                       cond_dropout=p.cond_dropout)


def diffusion_config(profile: Profile) -> DiffusionConfig:
    return DiffusionConfig(train_timesteps=profile.dit.train_timesteps)


def shaping(profile: Profile, seed: int = 0, vqgan_id: str | None = None,
            latents: str | os.PathLike | None = None, steps: int | None = None) -> dict:
    """What shapes the DiT's weights: its training fields, the VQ-GAN run behind its latents, the seed.

    vqgan_id: of the latents trained on (default: the profile's VQ-GAN, `tasks.vqgan.run_id`); latents: a
    latent set other than the profile's (canaries, subsets, private cohorts) is named too.
    """
    dit = shaping_fields(profile.dit)
    dit["steps"] = steps or dit["steps"]
    out = {"dit": dit, "vqgan": vqgan_id or vqgan.run_id(profile), "seed": seed}
    if latents is not None and Path(latents).resolve() != (profile.run("latents") / vqgan.LATENTS).resolve():
        out["latents"] = to_record(latents)
    return out


def latent_shape(profile: Profile) -> tuple[int, ...]:
    """(C_z, D, h, w, t) of the profile's latents, from its sizes (no encoding needed)."""
    C, h, w, t = per_slice(profile.vqgan, (profile.data.image_size, profile.data.image_size, profile.data.frames))
    return (C, profile.data.slices, h, w, t)


def sample_defaults(profile: Profile) -> dict:
    """The profile's sampling settings: {"n": studies, "steps": DDIM steps}."""
    return {"n": profile.dit.n_samples, "steps": profile.dit.sample_steps}


def num_parameters(profile: Profile) -> int:
    return sum(p.numel() for p in DiT4D(model_config(profile, latent_shape(profile))).parameters())


class LatentSet(Dataset):
    """Scaled latents and attribute codes: items {"z": (C_z, D, h, w, t) float32, "cond": (A,) int64}."""

    def __init__(self, latents: torch.Tensor, cond: torch.Tensor, scale: float):
        self.z, self.cond, self.scale = latents.float(), cond.long(), float(scale)

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"z": self.z[i] * self.scale, "cond": self.cond[i]}


def training_set(record: dict, path: str | os.PathLike = "latents.pt") -> LatentSet:
    """The non-holdout subjects of a latents.pt record."""
    ids, splits = list(record["ids"]), dict(record["splits"])
    keep = [i for i, sid in enumerate(ids) if splits.get(sid) != "holdout"]
    if not keep:
        raise CardiolabError(f"{path}: no non-holdout subjects to train the DiT on")
    return LatentSet(record["latents"][keep], record["cond"][keep], record["scale"])


def make_step_fn(scheduler, loss: str = "smooth_l1"):
    def step_fn(batch: dict, step: int, tr: Trainer) -> dict:
        with tr.autocast():
            value = diffusion_loss(tr.modules["model"], scheduler, batch["z"], batch["cond"], loss=loss)
        tr.backward(value, "model")
        return {"loss": value.item()}
    return step_fn


# ---- train / ensure / load ------------------------------------------------------------------------
def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, latents: str | os.PathLike | None = None,
          keep_every: int | None = None) -> Path:
    """Train the DiT of `profile` on its latents (built via the VQ-GAN if missing); returns the run folder.

    keep_every: also keep checkpoint-<step>.pt every this many steps (`audit sweep`); shapes no weights."""
    out = Path(out or profile.run(NAME))
    path = Path(latents) if latents else vqgan.ensure_latents(profile)
    record = vqgan.load_latents(path)
    data = training_set(record, path)
    seed_everything(seed)
    mcfg, dcfg = model_config(profile, tuple(data.z.shape[1:])), diffusion_config(profile)
    model = DiT4D(mcfg)
    p = profile.dit
    total = int(steps or p.steps)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.0)
    cfg = TrainConfig(steps=total, batch_size=p.batch, lr=p.lr, warmup=min(100, max(1, total // 10)),
                      ema_decay=p.ema_decay, ckpt_every=max(1, min(500, total // 4)), log_every=max(1, min(10, total // 10)),
                      amp=p.amp, seed=seed, device=profile.device, num_workers=profile.num_workers,
                      keep_every=keep_every)
    conf = {"task": NAME, "shaping": shaping(profile, seed, record.get("vqgan_id"), path, total),
            "dit": dataclasses.asdict(mcfg), "diffusion": dataclasses.asdict(dcfg), **profile_record(profile),
            "profile_dit": dataclasses.asdict(p),
            "scale": float(record["scale"]), "latent_shape": list(data.z.shape[1:]),
            "vqgan_run": to_record(record.get("vqgan_run") or profile.run("vqgan")), "latents": to_record(path),
            "cache_dir": to_record(record.get("cache_dir") or profile.cache_dir), "n_train": len(data), "seed": seed,
            # attribute codes only (no ids): lets sampling follow the training distribution of attributes
            "train_cond": data.cond.tolist()}
    log.info("DiT: %d training latents %s, %d tokens, %.2fM parameters", len(data), tuple(data.z.shape[1:]),
             mcfg.num_tokens, sum(q.numel() for q in model.parameters()) / 1e6)
    tr = Trainer(out, cfg, modules={"model": model}, optimizers={"model": opt}, ema=["model"], config=conf)
    tr.fit(data, make_step_fn(create_scheduler(dcfg), dcfg.loss), resume=resume)
    return out


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None,
           latents: str | os.PathLike | None = None, keep_every: int | None = None) -> Path:
    """The DiT run folder (default runs/<profile>/dit); trains (resuming a partial run) unless finished.

    latents: another latent set (canaries, subsets; named in the shaping by its path); keep_every: as `train`."""
    run = Path(run_dir or profile.run(NAME))
    if latents is None:
        vqgan.ensure_latents(profile)                # (re)encoded when the VQ-GAN changed; its id is in shaping()
    return ensure_run(run, profile.dit.steps, shaping(profile, latents=latents),
                      lambda resume: train(profile, run, resume=resume, latents=latents, keep_every=keep_every))


def load(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> tuple[DiT4D, dict]:
    """(model in eval mode with EMA weights unless ema=False, the run's config dict)."""
    ckpt = load_checkpoint(run_dir, map_location="cpu")
    conf = ckpt["config"]
    if "dit" not in conf:
        raise CardiolabError(f"{Path(run_dir) / RUN_CONFIG}: not a DiT run (no 'dit' section)")
    d = dict(conf["dit"])
    for key in ("input_size", "patch", "cond_cardinalities"):
        d[key] = tuple(d[key])
    model = DiT4D(DiT4DConfig(**d))
    weights = ckpt["ema"].get("model") if ema and ckpt.get("ema") else None
    model.load_state_dict(weights or ckpt["modules"]["model"])
    return model.to(device).eval(), conf


# ---- sampling -------------------------------------------------------------------------------------
def sample_conditions(conf: dict, n: int, mode: str, generator: torch.Generator) -> torch.Tensor | None:
    """(n, A) attribute codes: 'random' (uniform over each field's known classes), 'from-training-distribution'
    (rows of the training attributes, drawn with replacement) or 'none' (unconditional: the null class)."""
    cards = conf["dit"]["cond_cardinalities"]
    if mode not in COND_MODES:
        raise CardiolabError(f"--cond {mode!r}: choose one of {', '.join(COND_MODES)}")
    if not cards or mode == "none":
        return None
    if mode == "random":
        known = [f.unknown for f in attributes.FIELDS]  # classes 0 .. unknown-1 are real values
        return torch.stack([torch.randint(0, k, (n,), generator=generator) for k in known], dim=1)
    table = torch.tensor(conf["train_cond"], dtype=torch.long)
    return table[torch.randint(0, table.shape[0], (n,), generator=generator)]


@torch.no_grad()
def sample_latents(model: DiT4D, conf: dict, n: int, steps: int, seed: int = 0, guidance: float = 1.0,
                   cond: str | torch.Tensor = "random", eta: float = 0.0, batch: int = 4,
                   device: str | torch.device = "cpu",
                   autocast: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DDIM-sample n latents; returns (UNSCALED latents (n, C_z, D, h, w, t), attribute codes (n, A) or None).

    Everything random comes from one CPU generator seeded with `seed`: same seed, same samples.
    autocast: the network in bf16 (`sample_cohort` sets it where bf16 is native).
    """
    g = torch.Generator().manual_seed(seed)
    codes = cond if isinstance(cond, torch.Tensor) else sample_conditions(conf, n, cond, g)
    sch = create_scheduler(DiffusionConfig(**conf["diffusion"]), sampler="ddim")
    shape = tuple(conf["latent_shape"])
    device = pick_device(str(device))
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        c = None if codes is None else codes[start:start + b]
        out.append(sample(model, sch, (b, *shape), steps=steps, cond=c, guidance=guidance, eta=eta,
                          generator=g, device=device, autocast=autocast, progress=n > batch))
    return torch.cat(out) / float(conf["scale"]), codes


def sample_cohort(run_dir: str | os.PathLike, n: int, steps: int, seed: int, out: str | os.PathLike,
                  guidance: float = 1.0, cond: str = "random", eta: float = 0.0, batch: int = 4,
                  device: str = "auto", meta: dict | None = None,
                  profile: Profile | None = None) -> Path:
    """Sample n studies from the DiT run and write them as an ACDC-layout cohort at `out` (atomically).

    profile: the settings to sample with (dit.amp picks the precision); default the run's own (`run_profile`).

    meta: more samples.json entries (e.g. a DP run's privacy record), written with the cohort.

    out/synth0001/... per sample, out/samples.json (generator, run, steps, seed, guidance, conditioning mode,
    ES rule; no patient identifiers). GIFs are a figure: `plots.save_cohort_gifs` (the sample verb calls it).
    """
    if n < 1:
        raise CardiolabError(f"sample: --n must be at least 1, got {n}")
    run_dir = Path(run_dir)
    device = pick_device(device)
    model, conf = load(run_dir, device=device)
    vq = vqgan.load(from_record(conf["vqgan_run"]))
    geometry = cohort_geometry(from_record(conf["cache_dir"]))
    profile = profile or run_profile(conf)
    precision = sampling_precision(profile.dit.amp, device, run_dir)   # bf16 where native and sound
    z, codes = sample_latents(model, conf, n, steps, seed, guidance, cond, eta, batch, device,
                              autocast=precision == "bf16")
    images = vqgan.decode_latents(vq, z)[:, 0]                                # (n, D, H, W, T) in [-1, 1]
    ids = [f"synth{i + 1:04d}" for i in range(n)]
    info = [attributes.decode(codes[i]) if codes is not None else {"Group": "UNKNOWN"} for i in range(n)]
    record = {"generator": GENERATOR, "task": NAME, "run": to_record(run_dir), "run_id": run_id(run_dir),
            "n": n, "steps": steps, "seed": seed, "guidance": guidance,
            "cond": cond if isinstance(cond, str) else "given", "eta": eta, "sampler": "ddim",
            "es_rule": "median ES frame of the training cohort", "ed": 1, "batch": batch, "precision": precision,
            "machine": machine_info(device),
            "intensity": f"(x + 1) * {INTENSITY_SCALE:g} of the VQ-GAN output x in [-1, 1]", "ids": ids,
            **(meta or {})}

    out = write_cines(out, images, geometry, ids=ids, info=info,
                      extra=lambda tmp: write_json(tmp / SAMPLES_JSON, record))
    log.info("wrote %d synthetic studies to %s", n, out)
    return out


def ensure_samples(profile: Profile, seed: int = 0, run_dir: str | os.PathLike | None = None,
                   out: str | os.PathLike | None = None) -> Path:
    """The profile's n_samples DiT samples (default runs/<profile>/samples/dit), redrawn unless current
    (`cardiolab.tasks.ensure_samples`); trains the DiT first if needed."""
    return ensure_generator_samples(NAME, profile, seed, run_dir, out)


# ---- notebook helpers --------------------------------------------------------------------------------
@torch.no_grad()
def guidance_sweep(run_dir: str | os.PathLike, scales=(1.0, 2.0, 4.0), steps: int = 20, seed: int = 0,
                   cond: str = "from-training-distribution") -> tuple[torch.Tensor, dict]:
    """One sample per guidance scale from the same noise and attributes: images (S, D, H, W, T) in [-1, 1]."""
    model, conf = load(run_dir)
    vq = vqgan.load(from_record(conf["vqgan_run"]))
    codes = sample_conditions(conf, 1, cond, torch.Generator().manual_seed(seed))
    z = torch.cat([sample_latents(model, conf, 1, steps, seed, s, codes if codes is not None else "none")[0]
                   for s in scales])
    info = attributes.describe(codes[0]) if codes is not None else {}
    return vqgan.decode_latents(vq, z)[:, 0], info


@torch.no_grad()
def noised_cines(vq, z0: torch.Tensor, scale: float, scheduler, timesteps, seed: int = 0) -> torch.Tensor:
    """What the DiT sees at each noise level, made visible: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps drawn from
    q(x_t | x0) with one eps for every t, divided by `scale` again and decoded by the VQ-GAN `vq` as it is (not
    snapped to the codebook, so the noise shows as the decoder renders it).

    z0: one study's unscaled latent (C_z, D, h, w, t) as latents.pt holds it; scale: its `scale` (1 / std), so the
    noise meets the unit-variance latents the DiT trains on; scheduler: `cardiolab.diffusion.create_scheduler`'s;
    timesteps: the t to show. Returns images (len(timesteps), D, H, W, T) in [-1, 1].
    """
    t = torch.as_tensor(list(timesteps), dtype=torch.long)
    if t.ndim != 1 or not len(t) or int(t.min()) < 0 or int(t.max()) >= scheduler.num_train_timesteps:
        raise CardiolabError(f"noised_cines: timesteps must be in 0..{scheduler.num_train_timesteps - 1}, "
                             f"got {t.tolist()}")
    x0 = (z0.float() * float(scale))[None].expand(len(t), *z0.shape)                  # (S, C_z, D, h, w, t)
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))[None].expand_as(x0)
    x_t = scheduler.add_noise(x0, eps, t)
    return vqgan.decode_latents(vq, x_t / float(scale), snap=False)[:, 0]             # (S, D, H, W, T)
