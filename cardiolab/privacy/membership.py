"""`audit mia`: membership inference against a DiT run (dit or dit-dp), one JSON and one log-log ROC figure.

Members are the run's training latents (latents.pt: every non-holdout id); non-members are the latents.pt's
holdout subjects plus fresh phantoms (`phantom --seed 7`, never seen by any run) encoded with the run's own
VQ-GAN (`tasks.vqgan.encode_volume`). Every subject is scored unconditionally (the null attribute class): fresh
phantoms have no attribute codes, and one conditioning for all keeps the comparison fair.

Attacks (a higher score = "member"):
- loss: minus the denoising loss (`diffusion.per_sample_loss`) averaged over fixed steps t at 5-30 % of T, with
  noise drawn from a seed derived from the subject id, so every model sees the same (t, noise) per subject.
- pia (Kong et al. 2024, "An efficient membership inference attack for the diffusion model by proximal
  initialization"): two queries; eps0 = the model's noise estimate at t = 0, then x_t = sqrt(abar) x0 +
  sqrt(1 - abar) eps0 and minus the mean squared gap between the estimate at t and eps0. The DiT predicts v;
  `diffusion.v_to_epsilon` turns it into eps.
- calibrated: minus (loss - the loss of a reference model that never saw the subject) (Carlini et al. 2022's
  offline difficulty calibration). Reference: `--reference RUN`, default for a dit-dp run its public init
  (`init_run` in its privacy.json or config.json: it never saw the private members). A non-DP run has no natural
  reference: pass a DiT trained on other subjects (e.g. `train dit --latents runs/<p>/lat-priv`, notebook 06's
  private cohort), else the attack is left out and the JSON says why.
- distance: black-box, the synthetic cohort alone: minus each subject's distance to its closest synthetic cine
  (`privacy.copies.dcr`, pixel embeddings), when a synthetic cohort is given or found in runs/<p>/samples/<task>.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from cardiolab.core import CardiolabError, from_record, write_json
from cardiolab.profiles import Profile, get_profile

log = logging.getLogger(__name__)

KIND = "cardiolab-audit-mia"
DIT_TASKS = ("dit", "dit-dp")
T_FRACTIONS = (0.05, 0.1, 0.2, 0.3)   # fixed steps as fractions of T: low noise, where members stand out
PIA_FRACTION = 0.2                     # PIA's query step (Kong et al.: t = 200 of 1000)
FRESH_SEED = 7
ATTACKS = ("loss", "pia", "calibrated", "distance")
JSON_KEYS = ("kind", "run", "task", "profile", "n_members", "n_nonmembers", "timesteps", "attacks", "skipped",
             "reference", "dp", "figure", "roc")


def check_dit_run(run: str | os.PathLike) -> str:
    """The run's registry name when it is a DiT (dit, dit-dp); CardiolabError naming --run otherwise."""
    from cardiolab.tasks import task_of_run

    if not Path(run).is_dir():
        raise CardiolabError(f"--run {run}: not a run folder")
    task = task_of_run(run)
    if task not in DIT_TASKS:
        raise CardiolabError(f"--run {run}: a {task!r} run, not a DiT ({', '.join(DIT_TASKS)})")
    return task


def subject_noise(sid: str, shape: tuple[int, ...], k: int) -> torch.Tensor:
    """The k-th fixed noise draw (shape) of subject `sid`: the same in every model and every process."""
    seed = int.from_bytes(hashlib.sha256(f"{sid}/{k}".encode()).digest()[:8], "little") % 2**63
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _steps(T: int, fractions=T_FRACTIONS) -> list[int]:
    return sorted({min(T - 1, max(1, round(f * T))) for f in fractions})


@torch.no_grad()
def loss_scores(model, scheduler, z: torch.Tensor, ids: list[str], steps: list[int], loss: str,
                batch: int = 8) -> np.ndarray:
    """Mean per-sample denoising loss (N,) of scaled latents z (N, C, D, h, w, t) over `steps`, fixed noise."""
    from cardiolab.diffusion import per_sample_loss

    out = np.zeros(len(z))
    for k, t in enumerate(steps):
        for i in range(0, len(z), batch):
            x0 = z[i:i + batch]
            noise = torch.stack([subject_noise(s, tuple(x0.shape[1:]), k) for s in ids[i:i + batch]])
            tt = torch.full((len(x0),), t, dtype=torch.long)
            out[i:i + batch] += per_sample_loss(model, scheduler, x0, tt, noise, None, loss).double().numpy()
    return out / len(steps)


@torch.no_grad()
def pia_scores(model, scheduler, z: torch.Tensor, t: int, batch: int = 8) -> np.ndarray:
    """PIA distance (N,): mean squared gap between eps(x_t, t) and eps0 = eps(x0, 0), x_t built from eps0."""
    from cardiolab.diffusion import v_to_epsilon

    abar = scheduler.alphas_cumprod.double()
    out = []
    for x0 in z.split(batch):
        x0 = x0.float()
        B = len(x0)

        def eps(x, step):
            pred = model(x, torch.full((B,), step, dtype=torch.long), None).float()
            if scheduler.prediction_type == "v_prediction":
                return v_to_epsilon(pred, x, float(abar[step]))
            if scheduler.prediction_type == "epsilon":
                return pred
            raise CardiolabError(f"PIA: prediction type {scheduler.prediction_type!r} is not supported")

        eps0 = eps(x0, 0)
        a = float(abar[t])
        x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps0
        out.append((eps(x_t, t) - eps0).pow(2).flatten(1).mean(1).double())
    return torch.cat(out).numpy()


def fresh_latents(vq, profile: Profile, n: int, seed: int = FRESH_SEED) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(ids, unscaled latents (n, C_z, D, h, w, t), images (n, D, H, W, T)) of n fresh phantoms at profile geometry:
    the latents prepared as the cache (what the DiT's members went through), the images in the label-free comparison
    geometry (`load_cines(label_free=True)`, what the distance attack compares)."""
    from cardiolab.data.cines import load_cines
    from cardiolab.data.phantom import generate_cohort
    from cardiolab.tasks.vqgan import encode_volume

    d = profile.data
    with tempfile.TemporaryDirectory(prefix="cardiolab-mia-") as tmp:
        generate_cohort(tmp, n, seed=seed, size=d.phantom_size, spacing=d.phantom_spacing, slices=d.phantom_slices,
                        frames=d.phantom_frames)
        c = load_cines(tmp, profile)
        free = load_cines(tmp, profile, label_free=True).images
    z = torch.stack([encode_volume(vq, img[None])[0] for img in c.images])
    return [f"fresh-{seed}-{s}" for s in c.ids], z, free


def _dp_bound(run: Path) -> dict | None:
    from cardiolab.dp.accounting import PRIVACY_JSON, read_privacy_json
    from cardiolab.metrics.privacy import LOW_FPRS, dp_tpr_bound

    if not (run / PRIVACY_JSON).exists():
        return None
    rec = read_privacy_json(run)
    eps, delta = float(rec["epsilon"][rec["accountant"]]), float(rec["delta"])
    return {"epsilon": eps, "delta": delta, "init_run": rec.get("init_run"),
            "tpr_bound": {f"{100 * f:g}%": float(dp_tpr_bound(f, eps, delta)) for f in LOW_FPRS}}


def audit_mia(run: str | os.PathLike, profile: Profile | str | None = None, reference: str | os.PathLike | None = None,
              synthetic: str | os.PathLike | None = None, n_fresh: int | None = None, n_boot: int = 1000,
              out_json: str | os.PathLike | None = None, figure: str | os.PathLike | None = None) -> dict:
    """Membership inference against a DiT run; writes the JSON (keys JSON_KEYS) and a log-log ROC figure.

    n_fresh: fresh phantoms among the non-members (default: the profile's phantom_subjects; TPR at 1 % FPR needs
    >= 100 non-members in all; none on another data source, where a phantom would be an easy non-member).
    Default paths: runs/<profile>/audit/mia-<run name>.json / .png.
    """
    from cardiolab.diffusion import DiffusionConfig, create_scheduler
    from cardiolab.metrics import privacy as mia
    from cardiolab.privacy.copies import dcr
    from cardiolab.tasks import dit
    from cardiolab.tasks.vqgan import load as load_vqgan, load_latents

    profile = get_profile(profile)
    run = Path(run)
    task = check_dit_run(run)
    if n_fresh is None:
        n_fresh = profile.data.phantom_subjects if profile.data_source is None else 0
    n_fresh = int(n_fresh)
    if n_fresh < 0:
        raise CardiolabError(f"--n-fresh {n_fresh}: must be >= 0")
    if reference is not None:
        check_dit_run(reference)
    model, conf = dit.load(run)
    latents = conf.get("latents") or conf.get("shaping", {}).get("latents")
    if not latents:
        raise CardiolabError(f"{run}: its config names no latents.pt")
    record = load_latents(from_record(latents))
    ids, splits, scale = list(record["ids"]), dict(record["splits"]), float(conf["scale"])
    members = np.array([splits.get(s) != "holdout" for s in ids])
    vq = load_vqgan(from_record(conf["vqgan_run"]))
    f_ids, f_z, f_img = fresh_latents(vq, profile, n_fresh) if n_fresh else ([], record["latents"][:0], None)
    all_ids = ids + f_ids
    z = torch.cat([record["latents"].float(), f_z.float()]) * scale
    is_member = np.r_[members, np.zeros(len(f_ids), bool)]
    dcfg = DiffusionConfig(**conf["diffusion"])
    sch = create_scheduler(dcfg)
    steps = _steps(dcfg.train_timesteps)
    losses = loss_scores(model, sch, z, all_ids, steps, dcfg.loss)
    scores = {"loss": -losses, "pia": -pia_scores(model, sch, z, _steps(dcfg.train_timesteps, (PIA_FRACTION,))[0])}
    skipped: dict[str, str] = {}
    dp = _dp_bound(run)
    init = from_record((dp or {}).get("init_run") or conf.get("init_run"))   # a dit-dp run's public init (also at eps = inf)
    if reference is None and init and Path(init).is_dir():
        reference = init
    if reference is not None:
        ref_model, ref_conf = dit.load(reference)
        if ref_conf.get("latent_shape") != conf.get("latent_shape"):
            raise CardiolabError(f"--reference {reference}: latents {ref_conf.get('latent_shape')} differ from "
                                 f"the run's {conf.get('latent_shape')}")
        scores["calibrated"] = -(losses - loss_scores(ref_model, sch, z, all_ids, steps, dcfg.loss))
    else:
        skipped["calibrated"] = ("no reference model: pass --reference RUN, a DiT that never saw these subjects "
                                 "(for a dit-dp run its public init is used)")
    synthetic = Path(synthetic) if synthetic is not None else _own_samples(run, profile, task)
    if synthetic.is_dir() and any(synthetic.iterdir()):
        scores["distance"] = _distance_scores(synthetic, record, ids, f_img, profile, dcr)
    else:
        skipped["distance"] = f"no synthetic cohort of {run} at {synthetic} (sample the run first, or pass --synthetic)"
    bound = None if dp is None else (dp["epsilon"], dp["delta"])   # checked on the intervals, not point estimates
    attacks = {name: mia.attack_summary(s, is_member, n_boot=n_boot, dp=bound) for name, s in scores.items()}
    out_json = Path(out_json) if out_json is not None else profile.audit_dir / f"mia-{run.name}.json"
    figure = Path(figure) if figure is not None else out_json.with_suffix(".png")
    from cardiolab.plots.audits import save_mia_roc

    curves = {k: mia.roc_curve(s, is_member)[:2] for k, s in scores.items()}
    save_mia_roc(curves, figure, None if dp is None else (dp["epsilon"], dp["delta"]))
    result = {"kind": KIND, "run": str(run), "task": task, "profile": profile.name,
              "n_members": int(is_member.sum()), "n_nonmembers": int((~is_member).sum()),
              "n_holdout": int((~members).sum()), "n_fresh": len(f_ids), "timesteps": steps,
              "pia_timestep": _steps(dcfg.train_timesteps, (PIA_FRACTION,))[0], "attacks": attacks,
              "skipped": skipped, "reference": None if reference is None else str(reference), "dp": dp,
              "synthetic": str(synthetic) if "distance" in scores else None, "figure": str(figure),
              "roc": {k: {"fpr": f.tolist(), "tpr": t.tolist()} for k, (f, t) in curves.items()}}
    write_json(out_json, result)
    result["json"] = str(out_json)
    return result


def _own_samples(run: Path, profile: Profile, task: str) -> Path:
    """The run's own sampled cohort: runs/<p>/samples/<run name> (the DP grid's), else samples/<task> (`sample`'s
    default) when its samples.json names this run; else the first, which then reads as missing."""
    from cardiolab.io.cohort import samples_record

    for cohort in (profile.samples(run.name), profile.samples(task)):
        made_by = samples_record(cohort).get("run") if cohort.is_dir() else None
        if made_by and from_record(made_by).resolve() == run.resolve():
            return cohort
    return profile.samples(run.name)


def _distance_scores(synthetic: Path, record: dict, ids: list[str], fresh_images, profile: Profile, dcr) -> np.ndarray:
    """Minus each subject's distance to its closest synthetic cine (pixel embeddings), in the order ids + fresh; every
    side in the label-free comparison geometry (`load_cines(label_free=True)`), as the copy audit compares them."""
    from cardiolab.data.cines import load_cines
    from cardiolab.privacy.embeddings import embedder

    cache = Path(record.get("cache_dir") or profile.cache_dir)
    real = load_cines(cache, profile, label_free=True)
    where = {s: i for i, s in enumerate(real.ids)}
    missing = [s for s in ids if s not in where]
    if missing:
        raise CardiolabError(f"{cache}: latents subjects {missing[:3]} are not in the cache")
    images = real.images[[where[s] for s in ids]]
    if fresh_images is not None:
        images = torch.cat([images, fresh_images])
    syn = load_cines(synthetic, profile, label_free=True).images
    if syn.shape[1:] != images.shape[1:]:
        raise CardiolabError(f"--synthetic {synthetic}: cines {tuple(syn.shape[1:])}, the cache has "
                             f"{tuple(images.shape[1:])}")
    pixels = embedder("pixels")
    return -dcr(pixels(images).numpy(), pixels(syn).numpy())
