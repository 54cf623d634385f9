"""What the CardioDiT baselines share: data, how each packs a 4D latent for its network, train/load/sample.

Every baseline sees the same batches as the DiT: `batch` whole studies (C, D, h, w, t) per step, from
the VQ-GAN's latents.pt (`source="latents"`) or, for pixel diffusion, the prepared cache read as C = 1
"latents" with scale 1 (`source="pixels"`). A `Spec` says how a batch (B, C, D, h, w, t) is packed for
the network, and unpacked after sampling:

    layout="slices",   network="unet": (B*D, C, h, w, t), cond {"slice": (B*D,)}    (2D+t, slices independent)
    layout="slices",   network="dit":  (B*D, C, 1, h, w, t), cond (B*D, A + 1)     (factorized DiT)
    layout="channels", network="dit":  (B, D*C, 1, h, w, t), cond (B, A)           (channel-merged DiT)
    layout="channels", network="unet": (B, D*C, h, w, t), cond None                (mask generator)

The two-stage models: the mask generator diffuses one-hot label series (`source="labels"`: C = 4 classes
mapped to {-1, 1}, slices merged into channels so masks agree between slices); mask-to-image
(`masks=True`) adds cond["mask"] (B*D, 4, H, W, T), the one-hot labels of each slice, which SliceUNet
concatenates to its input (average-pooled to a latent's size).

Each `tasks/<name>.py` is then a Spec and the registry contract (KIND, shaping, train, ensure, load,
sample_cohort) delegating here. Samples are written as an ACDC-layout cohort like tasks.dit's.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
from einops import rearrange, repeat

from cardiolab.core import (RUN_CONFIG, CardiolabError, from_record, machine_info, pick_device, seed_everything, to_record,
                            write_json)
from cardiolab.data import attributes
from cardiolab.data.cines import cohort_geometry
from cardiolab.data.datasets import CineDataset, generator_splits, load_manifest
from cardiolab.data.prepare import ensure_prepared
from cardiolab.diffusion import DiffusionConfig, create_scheduler, diffusion_loss, sample, sampling_precision
from cardiolab.engine import Trainer, TrainConfig, ensure_run, load_checkpoint, run_id
from cardiolab.io.cohort import INTENSITY_SCALE, SAMPLES_JSON, write_cines
from cardiolab.models.dit4d import DiT4D, DiT4DConfig, channel_merged_config, factorized_config
from cardiolab.models.unet import SliceUNet, SliceUNetConfig
from cardiolab.profiles import Profile, data_shaping, profile_record, run_profile, shaping_fields
from cardiolab.tasks import ensure_samples as ensure_generator_samples
from cardiolab.tasks import dit as dit_task, vqgan

log = logging.getLogger(__name__)

N_CLASSES = 4                                     # background, RV, MYO, LV (cardiolab.io.cohort.LABELS)


@dataclass(frozen=True)
class Spec:
    name: str                 # CLI / registry name, run folder runs/<profile>/<name>, samples.json "generator"
    network: str              # "dit" (profile.dit sizes) | "unet" (models.unet.SliceUNet, profile.baselines)
    layout: str               # "slices" | "channels" (see the module docstring)
    source: str = "latents"   # "latents" (VQ-GAN latents.pt) | "pixels" (prepared cache images in [-1, 1])
    sampler: str = "ddim"     # "ddim" (v-prediction) | "rflow" (rectified flow, Euler ODE)
    masks: bool = False       # conditioned on per-slice one-hot label series (two-stage mask -> image)

    @property
    def pixel_space(self) -> bool:
        """A UNet over full-size images (pixels or label series): sized by profile.baselines.pixel_*."""
        return self.network == "unet" and self.source in ("pixels", "labels")

    def section(self, profile: Profile):
        """The profile section with this model's training settings (pixel-space UNets: the pixel_* sizes)."""
        if self.network == "dit":
            return profile.dit
        b = profile.baselines
        if not self.pixel_space:
            return b
        return dataclasses.replace(b, channels=b.pixel_channels, batch=b.pixel_batch, steps=b.pixel_steps,
                                   sample_steps=b.pixel_sample_steps)


# ---- packing a batch of studies for the network ------------------------------------------------------
def pack(spec: Spec, z: torch.Tensor, cond: torch.Tensor | None):
    """z (B, C, D, h, w, t), cond (B, A) attribute codes or None -> (network input, network cond)."""
    B, C, D = z.shape[:3]
    if spec.layout == "channels" and spec.network == "unet":
        return rearrange(z, "b c d h w t -> b (d c) h w t"), None
    if spec.layout == "channels":
        return rearrange(z, "b c d h w t -> b (d c) 1 h w t"), cond
    slice_index = torch.arange(D, device=z.device).repeat(B)                      # (B*D,) slice of each row
    if spec.network == "unet":
        return rearrange(z, "b c d h w t -> (b d) c h w t"), {"slice": slice_index}
    codes = repeat(cond, "b a -> (b d) a", d=D) if cond is not None else torch.empty(B * D, 0, dtype=torch.long)
    return rearrange(z, "b c d h w t -> (b d) c 1 h w t"), torch.cat([codes.to(z.device), slice_index[:, None]], 1)


def mask_cond(masks: torch.Tensor) -> torch.Tensor:
    """Label series (B, D, H, W, T) int -> one-hot per slice (B*D, 4, H, W, T) float, as pack orders slices."""
    onehot = torch.nn.functional.one_hot(masks.long(), N_CLASSES).float()       # (B, D, H, W, T, 4)
    return rearrange(onehot, "b d h w t k -> (b d) k h w t")


def unpack(spec: Spec, x: torch.Tensor, B: int, C: int, D: int) -> torch.Tensor:
    """Inverse of pack for the data: network output -> (B, C, D, h, w, t)."""
    if spec.layout == "channels" and spec.network == "unet":
        return rearrange(x, "b (d c) h w t -> b c d h w t", d=D, c=C)
    if spec.layout == "channels":
        return rearrange(x, "b (d c) 1 h w t -> b c d h w t", d=D, c=C)
    if spec.network == "unet":
        return rearrange(x, "(b d) c h w t -> b c d h w t", b=B, d=D)
    return rearrange(x, "(b d) c 1 h w t -> b c d h w t", b=B, d=D)


# ---- configs from the profile ------------------------------------------------------------------------
def network_config(spec: Spec, profile: Profile, latent_shape: tuple[int, ...]) -> DiT4DConfig | SliceUNetConfig:
    """The network's config for studies (C, D, h, w, t)."""
    C, D, h, w, t = latent_shape
    if spec.network == "dit":
        base = dit_task.model_config(profile, latent_shape)
        return factorized_config(base) if spec.layout == "slices" else channel_merged_config(base)
    ch = tuple(spec.section(profile).channels)
    merged = spec.layout == "channels"
    return SliceUNetConfig(size=(h, w, t), in_channels=D * C if merged else C,
                           mask_channels=N_CLASSES if spec.masks else 0, channels=ch,
                           attention=(False,) * (len(ch) - 1) + (True,), head_channels=min(32, ch[-1]),
                           norm_groups=min(8, ch[0]), slices=0 if merged else D)


def diffusion_config(spec: Spec, profile: Profile) -> DiffusionConfig:
    # flow matching regresses a velocity with MSE (Lipman et al.); diffusion keeps CardioDiT's smooth-L1 on v
    return DiffusionConfig(train_timesteps=spec.section(profile).train_timesteps,
                           loss="mse" if spec.sampler == "rflow" else "smooth_l1")


def build(conf: dict) -> DiT4D | SliceUNet:
    """The network of a run's config dict (as saved in config.json / the checkpoint)."""
    d = dict(conf["net"])
    for key, value in d.items():
        if isinstance(value, list):
            d[key] = tuple(value)
    if conf["network"] == "dit":
        return DiT4D(DiT4DConfig(**d))
    d.setdefault("time_first", False)          # runs recorded before the UNet saw frames first
    return SliceUNet(SliceUNetConfig(**d))


def shaping(spec: Spec, profile: Profile, seed: int = 0, steps: int | None = None) -> dict:
    """The settings that shape this model's weights: its section's shaping fields that the model reads, the
    prepared data, the VQ-GAN run behind latents (`tasks.vqgan.run_id`) and the seed."""
    # read: pixel_* come in as channels / batch / steps (`Spec.section`); family picks mask-to-image's stage 2 only
    section = {k: v for k, v in shaping_fields(spec.section(profile)).items()
               if not k.startswith("pixel_") and (k != "family" or spec.masks)}
    section["steps"] = steps or section["steps"]
    out = {"model": spec.name, "section": section, **data_shaping(profile), "seed": seed}
    if spec.source == "latents":
        out["vqgan"] = vqgan.run_id(profile)
    return out


def num_parameters(spec: Spec, profile: Profile) -> int:
    """Parameters of spec's network at the profile's sizes (latent or image shape from the profile)."""
    if spec.source == "latents":
        shape = dit_task.latent_shape(profile)
    else:
        d = profile.data
        shape = (N_CLASSES if spec.source == "labels" else 1, d.slices, d.image_size, d.image_size, d.frames)
    return sum(p.numel() for p in build({"network": spec.network,
                                         "net": dataclasses.asdict(network_config(spec, profile, shape))}).parameters())


def sample_defaults(spec: Spec, profile: Profile) -> dict:
    """{"n", "steps"}: the sampling settings of spec's profile section."""
    section = spec.section(profile)
    return {"n": section.n_samples, "steps": section.sample_steps}


# ---- data --------------------------------------------------------------------------------------------
def pixel_record(cache_dir: str | os.PathLike) -> dict:
    """The prepared cache as a latents.pt-like record: images (N, 1, D, H, W, T) in [-1, 1], scale 1; the
    generator splits and the holdout (`datasets.generator_splits`, as `vqgan.encode_cohort`)."""
    manifest = load_manifest(cache_dir)
    keep = (*generator_splits(manifest), "holdout")
    data = CineDataset(cache_dir, split=[s["id"] for s in manifest["subjects"] if s["split"] in keep], mode="volume")
    splits = {r["id"]: r["split"] for r in data.records}
    return {"latents": data.stack("image"), "cond": data.stack("cond"), "ids": list(data.ids), "splits": splits,
            "scale": 1.0}


def cache_labels(cache_dir: str | os.PathLike, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(label series (N, D, H, W, T) int64, fully labelled (N,) bool) of the cache subjects `ids`, in that order."""
    data = CineDataset(cache_dir, split=list(ids), mode="volume")
    return data.stack("labels"), data.stack("label_mask").all(dim=1)


TWO_STAGE = ("mask-generator", "mask-to-image")   # learn from every frame's labels (mask series -> images)


def labels_every_frame(profile: Profile) -> bool:
    """True when some training subject of the profile's cache is labelled in every frame, as the two-stage models
    need: the phantom's are; real ACDC and M&Ms label ED and ES only."""
    manifest = load_manifest(ensure_prepared(profile))
    return any(len(s["label_frames"]) == manifest["frames"] for s in manifest["subjects"] if s["split"] != "holdout")


def data_path(spec: Spec, profile: Profile) -> Path:
    """The profile's training data for spec: latents.pt or the cache folder (built first if missing or stale)."""
    if spec.source == "latents":
        return vqgan.ensure_latents(profile)

    return ensure_prepared(profile)


def load_record(spec: Spec, profile: Profile, latents=None, cache_dir=None) -> tuple[dict, Path]:
    """(record, its path) for spec.source; builds the VQ-GAN latents or the cache if missing.

    With spec.masks (or source "labels") the record also has "labels" (N, D, H, W, T) and "labelled" (N,).
    """
    if spec.source == "latents":
        path = Path(latents) if latents else data_path(spec, profile)
        record = vqgan.load_latents(path)
    else:
        path = Path(cache_dir) if cache_dir else data_path(spec, profile)
        record = pixel_record(path)
    if spec.masks or spec.source == "labels":
        record["labels"], record["labelled"] = cache_labels(cache_dir or ensure_prepared(profile), record["ids"])
    if spec.source == "labels":                # one-hot masks in {-1, 1} are the data
        onehot = torch.nn.functional.one_hot(record["labels"], N_CLASSES).float() * 2 - 1   # (N, D, H, W, T, 4)
        record["latents"] = rearrange(onehot, "n d h w t k -> n k d h w t")
    return record, path


class MaskedSet(torch.utils.data.Dataset):
    """dit_task.LatentSet's items plus "mask": the label series (D, H, W, T) int64 of that study."""

    def __init__(self, base, labels: torch.Tensor):
        self.base, self.labels = base, labels
        self.z, self.cond = base.z, base.cond

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return {**self.base[i], "mask": self.labels[i]}


def training_set(spec: Spec, record: dict, path) -> torch.utils.data.Dataset:
    """Non-holdout studies (dit_task.training_set); label-based models keep only fully labelled ones."""
    if "labels" not in record:
        return dit_task.training_set(record, path)
    keep = [i for i, sid in enumerate(record["ids"])
            if record["splits"].get(sid) != "holdout" and bool(record["labelled"][i])]
    if not keep:
        raise CardiolabError(f"{path}: no non-holdout subjects with labels in every frame to train {spec.name} on")
    base = dit_task.LatentSet(record["latents"][keep], record["cond"][keep], record["scale"])
    return MaskedSet(base, record["labels"][keep]) if spec.masks else base


# ---- train / ensure / load ---------------------------------------------------------------------------
def make_step_fn(spec: Spec, scheduler, loss: str):
    def step_fn(batch: dict, step: int, tr: Trainer) -> dict:
        x, cond = pack(spec, batch["z"], batch["cond"])
        if spec.masks:
            cond["mask"] = mask_cond(batch["mask"])
        with tr.autocast():
            value = diffusion_loss(tr.modules["model"], scheduler, x, cond, loss=loss)
        tr.backward(value, "model")
        return {"loss": value.item()}
    return step_fn


def train(spec: Spec, profile: Profile, out: str | os.PathLike | None = None,
          resume: bool = False, steps: int | None = None, seed: int = 0, latents: str | os.PathLike | None = None,
          cache_dir: str | os.PathLike | None = None) -> Path:
    """Train spec's model on the profile's non-holdout studies; returns the run folder (default runs/<profile>/<name>)."""
    out = Path(out or profile.run(spec.name))
    record, path = load_record(spec, profile, latents, cache_dir)
    data = training_set(spec, record, path)
    seed_everything(seed)
    latent_shape = tuple(data.z.shape[1:])
    ncfg, dcfg = network_config(spec, profile, latent_shape), diffusion_config(spec, profile)
    model = build({"network": spec.network, "net": dataclasses.asdict(ncfg)})
    p = spec.section(profile)
    total = int(steps or p.steps)
    if total < 1:
        raise CardiolabError(f"train {spec.name}: steps must be >= 1, got {total}")
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.0)
    cfg = TrainConfig(steps=total, batch_size=min(p.batch, len(data)), lr=p.lr, warmup=min(100, max(1, total // 10)),
                      ema_decay=p.ema_decay, ckpt_every=max(1, min(500, total // 4)),
                      log_every=max(1, min(10, total // 10)), amp=p.amp, seed=seed, device=profile.device,
                      num_workers=profile.num_workers)
    run_shaping = shaping(spec, profile, seed, total)
    if latents or cache_dir:                   # not the profile's own data: never passes for the profile's run
        run_shaping["data_path"] = to_record(path)
    conf = {"task": spec.name, "network": spec.network, "layout": spec.layout, "source": spec.source,
            "sampler": spec.sampler, "masks": spec.masks, "net": dataclasses.asdict(ncfg), "diffusion": dataclasses.asdict(dcfg),
            **profile_record(profile), "shaping": run_shaping, "scale": float(record["scale"]),
            "latent_shape": list(latent_shape), "vqgan_run": to_record(record.get("vqgan_run")),
            "data_path": to_record(path), "cache_dir": to_record(cache_dir or profile.cache_dir),
            "n_train": len(data), "seed": seed, "train_cond": data.cond.tolist(),
            "mask_shape": list(record["labels"].shape[1:]) if "labels" in record else None}
    log.info("%s: %d training studies %s, %.2fM parameters", spec.name, len(data), latent_shape,
             sum(q.numel() for q in model.parameters()) / 1e6)
    tr = Trainer(out, cfg, modules={"model": model}, optimizers={"model": opt}, ema=["model"], config=conf)
    tr.fit(data, make_step_fn(spec, create_scheduler(dcfg, spec.sampler), dcfg.loss), resume=resume)
    return out


def ensure(spec: Spec, profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    """spec's run folder; trains (resuming a partial run) unless finished with the same shaping settings."""
    run = Path(run_dir or profile.run(spec.name))
    data_path(spec, profile)                   # (re)builds latents or cache; their identity is in shaping()
    return ensure_run(run, spec.section(profile).steps, shaping(spec, profile),
                      lambda resume: train(spec, profile, run, resume=resume))


def load(name: str | None, run_dir: str | os.PathLike, ema: bool = True,
         device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(network in eval mode, with EMA weights unless ema=False; the run's config dict).

    name: the model the run must hold (None: any baseline)."""
    ckpt = load_checkpoint(run_dir, map_location="cpu")
    conf = ckpt["config"]
    if "net" not in conf or (name is not None and conf.get("task") != name):
        want = name or "baseline"
        raise CardiolabError(f"{Path(run_dir) / RUN_CONFIG}: not a {want} run (model {conf.get('task')!r})")
    model = build(conf)
    weights = ckpt["ema"].get("model") if ema and ckpt.get("ema") else None
    model.load_state_dict(weights or ckpt["modules"]["model"])
    return model.to(device).eval(), conf


# ---- sampling ----------------------------------------------------------------------------------------
def spec_of(conf: dict) -> Spec:
    return Spec(conf["task"], conf["network"], conf["layout"], conf["source"], conf["sampler"], conf.get("masks", False))


def attribute_codes(conf: dict, n: int, mode: str, generator: torch.Generator) -> torch.Tensor | None:
    """(n, A) attribute codes for the DiT variants (tasks.dit.sample_conditions), None for the UNets."""
    if conf["network"] != "dit":
        return None
    cards = list(conf["net"]["cond_cardinalities"])
    if conf["layout"] == "slices":
        cards = cards[:-1]                     # the last field is the slice index, set by pack
    codes = dit_task.sample_conditions({"dit": {"cond_cardinalities": cards}, "train_cond": conf["train_cond"]},
                                       n, mode, generator)
    return codes if codes is not None else torch.full((n, len(cards)), -1, dtype=torch.long)


@torch.no_grad()
def sample_latents(model: torch.nn.Module, conf: dict, n: int, steps: int, seed: int = 0, cond: str = "random",
                   batch: int | None = None, device: str | torch.device = "cpu", callback=None,
                   callback_every: int = 1, masks: torch.Tensor | None = None,
                   autocast: bool | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n UNSCALED studies (n, C, D, h, w, t) and their attribute codes; one CPU generator seeded with `seed`.

    masks: (n, D, H, W, T) label series, required by mask-conditioned runs. batch (studies per pass) and autocast
    (the network in bf16): default `sampling_setup` of the run on `device`.

    callback(i, x0_pred) as in cardiolab.diffusion.sample (x0_pred in the network's packed, scaled layout).
    """
    spec = spec_of(conf)
    if spec.masks and (masks is None or masks.shape[0] != n):
        raise CardiolabError(f"{spec.name}: sampling needs n = {n} label series, got "
                             f"{'none' if masks is None else masks.shape[0]}")
    g = torch.Generator().manual_seed(seed)
    codes = attribute_codes(conf, n, cond, g)
    sch = create_scheduler(DiffusionConfig(**conf["diffusion"]), sampler=spec.sampler)
    C, D, *_ = conf["latent_shape"]
    device = pick_device(str(device))
    default_batch, precision = sampling_setup(conf, device)
    batch = batch or default_batch
    autocast = precision == "bf16" if autocast is None else autocast
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        template, c = pack(spec, torch.zeros(b, *conf["latent_shape"]), None if codes is None else codes[start:start + b])
        if spec.masks:
            c["mask"] = mask_cond(masks[start:start + b])
        x = sample(model, sch, tuple(template.shape), steps=steps, cond=c, generator=g, device=device,
                   autocast=autocast, callback=callback, callback_every=callback_every)
        out.append(unpack(spec, x, b, C, D))
    return torch.cat(out) / float(conf["scale"]), codes


def decode(conf: dict, z: torch.Tensor) -> torch.Tensor:
    """Unscaled studies (n, C, D, h, w, t) -> images (n, D, H, W, T) in [-1, 1] (label series for "labels")."""
    if conf["source"] == "labels":
        return z.argmax(dim=1)                                     # (n, D, H, W, T) class per voxel
    if conf["source"] == "pixels":
        return z[:, 0].clamp(-1, 1)

    return vqgan.decode_latents(vqgan.load(from_record(conf["vqgan_run"])), z)[:, 0]


def sampling_setup(conf: dict, device: torch.device, run_dir: str | os.PathLike | None = None,
                   profile: Profile | None = None) -> tuple[int, str]:
    """(studies per network pass, precision) for sampling a run: its training batch (pixel models: pixel_batch) and
    `diffusion.sampling_precision` of its section's amp (bf16 only where native: an AVX2 CPU keeps fp32). Tiny ddpm
    on a 2-core AVX-512 BF16 CPU: 49 -> 13.6 s/sample. profile: default the run's own (`profiles.run_profile`)."""
    section = spec_of(conf).section(profile or run_profile(conf))
    return section.batch, sampling_precision(section.amp, device, run_dir)


def sample_cohort(name: str | None, run_dir: str | os.PathLike, n: int, steps: int, seed: int,
                  out: str | os.PathLike | None = None, cond: str = "random", batch: int | None = None,
                  device: str = "auto", masks: torch.Tensor | None = None, meta: dict | None = None,
                  profile: Profile | None = None) -> Path:
    """Sample n studies from a baseline run; writes out (default runs/<profile>/samples/<name>) and returns it.

    profile: the settings to sample with (batch, amp); default the run's own (`profiles.run_profile`).

    batch: studies per network pass (default: the run's training batch); precision: `sampling_setup`.

    masks: (n, D, H, W, T) label series for mask-conditioned runs; they are written as the cohort's labels.
    A mask generator's cohort holds the sampled label series, its images a rendering of them (labels / 3 in
    [-1, 1]), so that the cohort has the usual layout and passes `check`. meta: extra samples.json entries.
    """
    if n < 1:
        raise CardiolabError(f"sample: --n must be at least 1, got {n}")
    run_dir = Path(run_dir)
    device = pick_device(device)
    model, conf = load(name, run_dir, device=device)
    name = conf["task"]
    profile = profile or run_profile(conf)
    out = Path(out) if out else profile.samples(name)
    default_batch, precision = sampling_setup(conf, device, run_dir, profile)
    batch = batch or default_batch
    t0 = time.perf_counter()
    z, codes = sample_latents(model, conf, n, steps, seed, cond, batch, device, masks=masks,
                              autocast=precision == "bf16")
    images, labels = decode(conf, z), masks
    seconds = time.perf_counter() - t0
    if conf["source"] == "labels":
        images, labels = images.float() / (N_CLASSES - 1) * 2 - 1, images
    ids = [f"synth{i + 1:04d}" for i in range(n)]
    info = [attributes.decode(codes[i]) if codes is not None and bool((codes[i] >= 0).all()) else {"Group": "UNKNOWN"}
            for i in range(n)]
    record = {"generator": name, "task": name, "run": to_record(run_dir), "run_id": run_id(run_dir), "n": n,
              "steps": steps, "seed": seed, "sampler": conf["sampler"], "cond": cond, "ids": ids,
              "batch": batch, "precision": precision, "machine": machine_info(device),
              "es_rule": "median ES frame of the training cohort", "ed": 1,
              "intensity": f"(x + 1) * {INTENSITY_SCALE:g} of x in [-1, 1]",
              "seconds": seconds, "s_per_sample": seconds / n, **(meta or {})}
    out = write_cines(out, images, cohort_geometry(from_record(conf["cache_dir"])), ids=ids, info=info, labels=labels,
                      extra=lambda tmp: write_json(tmp / SAMPLES_JSON, record))
    log.info("wrote %d synthetic studies to %s", n, out)
    return out


def ensure_samples(name: str, profile: Profile, seed: int = 0, **kw) -> Path:
    """The baseline `name`'s cohort runs/<profile>/samples/<name> at the profile's sampling settings, redrawn
    unless current (`cardiolab.tasks.ensure_samples`: run id, count, sampling steps, seed); trained first if
    needed. kw: more sample_cohort options."""
    return ensure_generator_samples(name, profile, seed, **kw)


def trajectory(run_dir: str | os.PathLike, steps: int, seed: int = 0, every: int = 1,
               masks: torch.Tensor | None = None) -> list[tuple[int, torch.Tensor]]:
    """The denoising trajectory of one study: [(step i, x0 prediction decoded to (D, H, W, T))] every `every`
    steps (`cardiolab.diffusion.sample`'s callback), for a figure. masks: (1, D, H, W, T) for mask-to-image."""
    model, conf = load(None, run_dir)
    spec = spec_of(conf)
    C, D, *_ = conf["latent_shape"]
    predictions = []
    sample_latents(model, conf, 1, steps, seed, callback=lambda i, x0: predictions.append((i, x0.detach().clone())),
                   callback_every=every, masks=masks)
    return [(i, decode(conf, unpack(spec, x0, 1, C, D) / float(conf["scale"]))[0]) for i, x0 in predictions]


def bind(spec: Spec) -> SimpleNamespace:
    """The registry contract of one baseline (see cardiolab.tasks): its functions with `spec` filled in."""
    return SimpleNamespace(
        shaping=partial(shaping, spec), num_parameters=partial(num_parameters, spec),
        sample_defaults=partial(sample_defaults, spec), train=partial(train, spec), ensure=partial(ensure, spec),
        load=partial(load, spec.name), sample_cohort=partial(sample_cohort, spec.name))
