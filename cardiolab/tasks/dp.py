"""DP fine-tuning of CardioDiT (`dit-dp`): a public pre-trained DiT, DP-SGD (Opacus) on private latents.

Seed: arXiv 2407.16405 (public pre-training, DP fine-tuning on UK Biobank). One record = one subject: a
LatentSet item is a whole 4D latent. sigma comes from the profile's target epsilon through the accountant
(q = 1/ceil(N/B)); the engine runs DP-SGD (Poisson batches, per-sample clipping, noise, accountant in the
checkpoint; see cardiolab.engine and cardiolab.dp.mechanism); privacy.json beside the checkpoint records C, sigma,
q, steps, delta and epsilon under both accountants (`python -m cardiolab privacy check RUN` recomputes it).

Release mode is the default: Poisson masks and noise come from the OS's secret source, so two runs with the same
seed differ and privacy.json records no noise seed ("release": true). `replayable` (`train dit-dp --replayable`,
profile field dp.replayable) draws them from (seed, step) for bit-exact replay in tests and teaching; its
privacy.json says "release": false and records the seed. DP runs train in fp32 (per-sample clipping holds exactly),
with delta <= 1/(10 N) (default min(1e-5, 1/(10 N))), and log no statistic of a private batch.

No private value reaches the run's config: the latent `scale`, the attribute rows for sampling (`train_cond`)
and the cache behind `cohort_geometry` all come from the public init run, and a VQ-GAN trained on the
private subjects is refused. A model from scratch (`init=None`) takes them from the profile's public latents.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import torch

from cardiolab.core import RUN_CONFIG, CardiolabError, from_record, read_json, seed_everything, to_record
from cardiolab.diffusion import DiffusionConfig, create_scheduler, diffusion_loss
from cardiolab.dp import accounting
from cardiolab.dp.mechanism import make_private, per_sample_grad_norms, resolve_delta, sample_rate, select_parameters
from cardiolab.engine import Trainer, TrainConfig, ensure_run, load_checkpoint, run_id
from cardiolab.models.dit4d import DiT4D, DiT4DConfig
from cardiolab.profiles import Profile, profile_record, shaping_fields
from cardiolab.tasks import dit, vqgan

log = logging.getLogger(__name__)

KIND = "generator"
NAME = "dit-dp"
PRIVATE_LATENTS = "lat-priv"     # default private latents folder under runs/<profile>/


def _defaults(profile: Profile, latents, init) -> tuple[Path, Path | None]:
    latents = Path(latents or profile.run_dir / PRIVATE_LATENTS)
    scratch = isinstance(init, str) and init.lower() == "none"     # only the word: None means the default init
    init = None if scratch else Path(init or profile.run_dir / "dit")
    return latents, init


def shaping(profile: Profile, latents=None, init=None, seed: int = 0) -> dict:
    """The config fields and upstream runs that shape a dit-dp run's weights: the dp section, the DiT's training
    fields, the private latents and the id of the public init run (`engine.run_id`)."""
    latents, init = _defaults(profile, latents, init)
    return {"dp": shaping_fields(profile.dp), "dit": dit.shaping(profile)["dit"],
            "latents": to_record(latents), "init_run": None if init is None else run_id(init), "seed": seed}


def num_parameters(profile: Profile) -> int:
    return dit.num_parameters(profile)


sample_defaults = dit.sample_defaults


def _refuse_private_vqgan(vqgan_run: str, record: dict, path: Path) -> None:
    """Both phantom cohorts name subjects patient001...: ids match only together with the cache they came from."""
    conf = read_json(from_record(vqgan_run) / RUN_CONFIG)
    if "cache_dir" not in record:
        raise CardiolabError(f"{path}: records no cache_dir; re-encode it (`python -m cardiolab encode`) so the "
                             f"VQ-GAN's training subjects can be told apart from the private ones")
    vq_cache = from_record(conf.get("cache_dir"))
    seen = set(conf.get("train_ids", [])) if vq_cache and vq_cache.resolve() == Path(record["cache_dir"]).resolve() else set()
    if overlap := sorted(seen & set(record["ids"])):
        raise CardiolabError(f"{vqgan_run}: this VQ-GAN trained on {len(overlap)} private subject(s) of "
                             f"{record['cache_dir']} ({', '.join(overlap[:3])}...): encode with a public VQ-GAN")


def _public_side(profile: Profile, init: Path | None, record: dict, path: Path) -> tuple[torch.nn.Module | None, dict]:
    """(init model with its EMA weights or None, the public config entries: dit, diffusion, scale, train_cond, ...)."""
    if init is not None:
        model, conf = dit.load(init, ema=True)
        if list(conf["latent_shape"]) != list(record["latents"].shape[1:]):
            raise CardiolabError(f"--init {init}: trained on latents {tuple(conf['latent_shape'])}, "
                                 f"but {path} holds {tuple(record['latents'].shape[1:])}")
        if from_record(conf["vqgan_run"]).resolve() != Path(record["vqgan_run"]).resolve():
            raise CardiolabError(f"--init {init}: its latents came from {conf['vqgan_run']}, {path}'s from "
                                 f"{record['vqgan_run']} (another latent space)")
        return model.train(), conf

    public_path = vqgan.ensure_latents(profile)
    public = vqgan.load_latents(public_path)
    shape = tuple(record["latents"].shape[1:])
    if tuple(public["latents"].shape[1:]) != shape:
        raise CardiolabError(f"{path}: latents {shape} differ from the profile's public latents "
                             f"{tuple(public['latents'].shape[1:])}")
    pub_train = dit.training_set(public, public_path)
    conf = {"dit": dataclasses.asdict(dit.model_config(profile, shape)),
            "diffusion": dataclasses.asdict(dit.diffusion_config(profile)), "scale": float(public["scale"]),
            "latent_shape": list(shape), "vqgan_run": to_record(public.get("vqgan_run") or profile.run_dir / "vqgan"),
            "cache_dir": to_record(public.get("cache_dir") or profile.cache_dir), "train_cond": pub_train.cond.tolist()}
    return None, conf


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, latents: str | os.PathLike | None = None,
          init: str | os.PathLike | None = None, replayable: bool | None = None) -> Path:
    """DP fine-tune the DiT `init` (a run folder, or 'none' for scratch) on the private `latents`; returns the run.

    replayable: overrides dp.replayable (None: the profile's; default False = release mode, secret noise).
    Every check (delta <= 1/(10 N), unique subject ids, latent shape, VQ-GAN, model) runs before the run folder is made.
    dp.epsilon = inf: the non-private reference of the same fine-tuning (same init, data, steps, batch, lr;
    plain AdamW, no clipping or noise); it writes no privacy.json and its config records "private": false.
    """
    if replayable is not None:
        profile = dataclasses.replace(profile, dp=dataclasses.replace(profile.dp, replayable=bool(replayable)))
    p = profile.dp
    out = Path(out or profile.run(NAME))
    latents, init = _defaults(profile, latents, init)
    private = math.isfinite(p.epsilon)
    record = vqgan.load_latents(latents)
    path = latents / "latents.pt" if latents.is_dir() else latents
    _refuse_duplicate_ids(record, path)
    _refuse_private_vqgan(record["vqgan_run"], record, path)
    seed_everything(seed)
    model, public = _public_side(profile, init, record, path)
    if model is None:
        d = dict(public["dit"])
        for key in ("input_size", "patch", "cond_cardinalities"):
            d[key] = tuple(d[key])
        model = DiT4D(DiT4DConfig(**d))
    data = dit.training_set({**record, "scale": public["scale"]}, path)   # private latents, the public scale
    n, total = len(data), int(steps or p.steps)
    names = select_parameters(model, p.params)
    opt = torch.optim.AdamW([w for w in model.parameters() if w.requires_grad], lr=p.lr, weight_decay=0.0)
    if not private:
        return _train_non_private(profile, out, model, opt, data, public, total, seed, resume,
                                  shaping(profile, latents, init or "none", seed), init)
    delta = resolve_delta(p.delta, n)
    q = sample_rate(n, p.batch)
    sigma = accounting.sigma(p.epsilon, q, total, delta, p.accountant)
    setup = make_private(model, opt, data, batch=p.batch, noise_multiplier=sigma, max_grad_norm=p.max_grad_norm,
                         accountant=p.accountant, secure_mode=not p.replayable)
    cfg = _train_config(profile, total, seed, True)
    conf = {**{k: public[k] for k in ("dit", "diffusion", "scale", "latent_shape", "vqgan_run", "cache_dir",
                                      "train_cond")},
            "task": NAME, "shaping": shaping(profile, latents, init or "none", seed), **profile_record(profile),
            "n_train": n, "seed": seed, "noise_multiplier": sigma, "sample_rate": q, "delta": delta,
            "release": not p.replayable, "init_run": _path(init)}
    if (k := _group_size(record)) > 1:
        log.warning("dit-dp: a subject holds %d training records (canary duplicates or several studies): its "
                    "guarantee is group privacy, recorded in privacy.json as group_privacy", k)
    log.info("dit-dp: N=%d private latents, q=%.4g, sigma=%.4g for epsilon %g at delta %g (%s), %d steps, "
             "%d trained tensors, %s", n, q, sigma, p.epsilon, delta, p.accountant, total, len(names),
             "replayable (seeded noise: not a release)" if p.replayable else "release mode (secret noise)")
    tr = Trainer(out, cfg, modules={"model": setup.module}, optimizers={"model": setup.optimizer}, ema=["model"],
                 config=conf, accountant=setup.accountant)
    dcfg = DiffusionConfig(**public["diffusion"])      # the init run's schedule: the weights learnt it
    tr.fit(setup.loader, dit.make_step_fn(create_scheduler(dcfg), dcfg.loss), resume=resume)
    accounting.write_privacy_json(out, max_grad_norm=p.max_grad_norm, noise_multiplier=sigma, sample_rate=q,
                                  steps=tr.step, delta=delta, accountant=p.accountant, trained_parameters=names,
                                  n_subjects=n, init_run=_path(init), vqgan_run=to_record(record["vqgan_run"]),
                                  release=not p.replayable, noise_seed=seed if p.replayable else None,
                                  training_cohort=_training_cohort(record), group_size=_group_size(record))
    return out


def _training_cohort(record: dict) -> str:
    """accounting.training_cohort_id of the subjects DP-SGD trained on (the non-holdout ids of the latents' cache)."""
    splits = dict(record["splits"])
    return accounting.training_cohort_id(record["cache_dir"],
                                         [i for i in record["ids"] if splits.get(i) != "holdout"])


def _group_size(record: dict) -> int:
    """The most training records one subject holds ('<id>~dup1' is <id>'s: see accounting.subject_of)."""
    splits = dict(record["splits"])
    return accounting.group_size([i for i in record["ids"] if splits.get(i) != "holdout"])


def _refuse_duplicate_ids(record: dict, path: Path) -> None:
    """The unit of privacy is the subject: each id once, or one patient would count as several records."""
    ids = [str(i) for i in record["ids"]]
    if dupes := sorted({i for i in ids if ids.count(i) > 1}):
        raise CardiolabError(f"{path}: subject id(s) {', '.join(dupes[:3])} appear more than once; DP-SGD's unit "
                             f"of privacy is the subject (group a patient's studies into one record)")


def _path(init: Path | None) -> str | None:
    """The public init run as recorded (config.json, privacy.json): the audits' reference model."""
    return to_record(init)


def _train_config(profile: Profile, total: int, seed: int, private: bool) -> TrainConfig:
    """private: DP-SGD in fp32 (per-sample clipping must hold exactly) in chunks of dp.physical_batch; else the
    non-private reference at dit.amp."""
    p = profile.dp
    physical_batch = p.physical_batch if private else None
    return TrainConfig(steps=total, batch_size=p.batch, lr=p.lr, warmup=min(100, max(1, total // 10)),
                       ema_decay=profile.dit.ema_decay, ckpt_every=max(1, min(500, total // 4)),
                       log_every=max(1, min(10, total // 10)), amp="off" if private else profile.dit.amp,
                       seed=seed, device=profile.device, physical_batch=physical_batch,
                       dp_replayable=private and p.replayable)


def _train_non_private(profile: Profile, out: Path, model, opt, data, public: dict, total: int, seed: int,
                       resume: bool, shaped: dict, init: Path | None) -> Path:
    """epsilon = inf: the same fine-tuning without DP-SGD (the engine's batches of dp.batch, no clipping or noise)."""
    conf = {**{k: public[k] for k in ("dit", "diffusion", "scale", "latent_shape", "vqgan_run", "cache_dir",
                                      "train_cond")},
            "task": NAME, "shaping": shaped, **profile_record(profile), "n_train": len(data), "seed": seed,
            "private": False, "init_run": _path(init)}
    log.info("dit-dp at epsilon = inf: non-private fine-tuning on N=%d latents, %d steps", len(data), total)
    tr = Trainer(out, _train_config(profile, total, seed, False), modules={"model": model},
                 optimizers={"model": opt}, ema=["model"], config=conf)
    dcfg = DiffusionConfig(**public["diffusion"])
    tr.fit(data, dit.make_step_fn(create_scheduler(dcfg), dcfg.loss), resume=resume)
    return out


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    """The dit-dp run (default runs/<profile>/dit-dp) on the default private latents and init; trains unless finished."""
    run = Path(run_dir or profile.run(NAME))
    dit.ensure(profile)                                     # the public init the fine-tune starts from
    return ensure_run(run, profile.dp.steps, shaping(profile), lambda resume: train(profile, run, resume=resume))


def load(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu"):
    """(DiT4D with the DP-trained (EMA) weights, the run's config); see cardiolab.tasks.dit.load."""
    return dit.load(run_dir, ema=ema, device=device)


def sample_cohort(run_dir: str | os.PathLike, n: int, steps: int, seed: int, out: str | os.PathLike, **kw) -> Path:
    """dit.sample_cohort, then privacy.json's record copied into samples.json (key 'privacy'; None for the
    non-private epsilon = inf reference, whose config says "private": false)."""
    if read_json(Path(run_dir) / RUN_CONFIG).get("private", True) is False:
        record = None
    else:
        record = accounting.read_privacy_json(run_dir)
    return dit.sample_cohort(run_dir, n, steps, seed, out, meta={"task": NAME, "privacy": record}, **kw)


def gradient_norms(run_dir: str | os.PathLike, latents: str | os.PathLike, max_grad_norm: float | None = None,
                   batch: int = 4, n: int | None = None, seed: int = 0) -> dict:
    """Per-subject gradient norms of a DiT run's (raw, not EMA) weights on the training subjects of `latents`
    (scaled with the run's own scale), before and after clipping to C (default: the run's dp.max_grad_norm,
    else 1). One diffusion-loss draw (t, noise) per subject, seeded. See dp.mechanism.per_sample_grad_norms."""
    model, conf = dit.load(run_dir, ema=False)
    record = vqgan.load_latents(latents)
    data = dit.training_set({**record, "scale": conf["scale"]}, latents)
    k = len(data) if n is None else min(n, len(data))
    dp_conf = conf.get("shaping", {}).get("dp", {})
    C = float(max_grad_norm or dp_conf.get("max_grad_norm", 1.0))
    select_parameters(model, dp_conf.get("params", "all"))
    dcfg = DiffusionConfig(**conf["diffusion"])
    sch = create_scheduler(dcfg)
    g = torch.Generator().manual_seed(seed)
    batches = [{"z": data.z[i:min(i + batch, k)] * data.scale, "cond": data.cond[i:min(i + batch, k)]}
               for i in range(0, k, batch)]
    loss = lambda m, b: diffusion_loss(m, sch, b["z"], b["cond"], loss=dcfg.loss, generator=g)  # noqa: E731
    return per_sample_grad_norms(model, loss, batches, C)


def checkpoint_epsilon(run_dir: str | os.PathLike, delta: float) -> float:
    """epsilon of the accountant history stored in the run's checkpoint (what the engine actually stepped)."""
    state = load_checkpoint(run_dir)["accountant"]
    acc = accounting.make_accountant(state["mechanism"])
    acc.load_state_dict(state)
    return accounting.accountant_epsilon(acc, delta)
