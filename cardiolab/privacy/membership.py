"""`audit mia`: membership inference against a DiT run (dit or dit-dp), one JSON and one log-log ROC figure.

Members are the run's training latents (latents.pt: every non-holdout id); non-members are the latents.pt's
holdout subjects plus fresh phantoms (`phantom --seed 7`, never seen by any run; profile mia.fresh: 128 at tiny,
1000 at full, so that TPR at 1 % FPR is measured; one cached set, shared with the copy audits' fresh phantoms)
encoded with the run's own VQ-GAN (`tasks.vqgan.encode_volume`). Every subject is scored unconditionally (the
null attribute class): fresh phantoms have no attribute codes, and one conditioning for all keeps the comparison
fair.

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
- lira (Carlini et al. 2022, "Membership inference attacks from first principles"), offline: the run's log loss
  against a Gaussian fitted per subject to the log losses of K reference models trained the run's way on shadow
  phantoms, never on a candidate (`privacy.lira`, `metrics.privacy.lira_offline`).
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

from cardiolab.core import CardiolabError, atomic_path, from_record, write_json
from cardiolab.data.cines import load_cines
from cardiolab.data.phantom import VERSION, generate_cohort
from cardiolab.diffusion import DiffusionConfig, create_scheduler, per_sample_loss, v_to_epsilon
from cardiolab.dp.accounting import PRIVACY_JSON, read_privacy_json
from cardiolab.io.cohort import samples_record
from cardiolab.metrics import privacy as mia
from cardiolab.plots.audits import save_mia_roc
from cardiolab.privacy.copies import dcr
from cardiolab.privacy.embeddings import embedder
from cardiolab.privacy.lira import ensure_references
from cardiolab.profiles import Profile
from cardiolab.tasks import dit, task_of_run
from cardiolab.tasks.vqgan import encode_volume, load as load_vqgan, load_latents

log = logging.getLogger(__name__)

KIND = "cardiolab-audit-mia"
DIT_TASKS = ("dit", "dit-dp")
T_FRACTIONS = (0.05, 0.1, 0.2, 0.3)   # fixed steps as fractions of T: low noise, where members stand out
PIA_FRACTION = 0.2                     # PIA's query step (Kong et al.: t = 200 of 1000)
FRESH_SEED = 7                         # fresh phantoms: a seed the profile's own cohort (seed 0) never used
ATTACKS = ("loss", "pia", "calibrated", "lira", "distance")
JSON_KEYS = ("kind", "run", "task", "profile", "n_members", "n_nonmembers", "timesteps", "attacks", "skipped",
             "reference", "lira_references", "dp", "figure", "roc")


def check_dit_run(run: str | os.PathLike) -> str:
    """The run's registry name when it is a DiT (dit, dit-dp); CardiolabError naming --run otherwise."""
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


FRESH_CHUNK = 50          # phantoms generated and read per temporary folder while the non-member cache is built


def fresh_cines(profile: Profile, n: int, seed: int = FRESH_SEED) -> dict:
    """n fresh phantoms as the audits need them: {"ids", "images": (n, D, H, W, T) prepared at profile geometry
    (what the DiT's members went through before encoding), "label_free": (n, D, H, W, T) the label-free comparison
    geometry (what every copy audit compares, `audit.fresh_cines`), "pixels": (n, E) their pixel embeddings (what
    the distance attack compares)}.

    They depend on the profile's data settings only, so they are made once, FRESH_CHUNK at a time (a tiny phantom
    is ~5 MB on disk, 1000 of them would fill 5 GB), and kept in data/cache/<profile>-fresh<seed>-<n>.pt: the
    membership audits of notebooks 06 and 07 and the planted copy cohorts of 07 share one set.
    """
    d = profile.data
    key = {"data": {k: v for k, v in vars(d).items()}, "n": n, "seed": seed, "phantom": VERSION,
           "embedding": "pixels, aligned", "label_free": True}
    pixels = embedder("pixels")            # as `_distance_scores` embeds the members: aligned, then pooled
    path = profile.cache_dir.with_name(f"{profile.cache_dir.name}-fresh{seed}-{n}.pt")
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if cached.get("key") == repr(key):
            return cached
    ids, images, label_free, embedded = [], [], [], []
    for first in range(0, n, FRESH_CHUNK):
        with tempfile.TemporaryDirectory(prefix="cardiolab-mia-") as tmp:
            generate_cohort(tmp, min(FRESH_CHUNK, n - first), seed=seed, size=d.phantom_size,
                            spacing=d.phantom_spacing, slices=d.phantom_slices, frames=d.phantom_frames, first=first)
            c = load_cines(tmp, profile)
            ids += [f"fresh-{seed}-{s}" for s in c.ids]
            images.append(c.images)
            label_free.append(load_cines(tmp, profile, label_free=True).images)
            embedded.append(pixels(label_free[-1]).float())
    out = {"key": repr(key), "ids": ids, "images": torch.cat(images), "label_free": torch.cat(label_free),
           "pixels": torch.cat(embedded)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return out


def fresh_latents(vq, profile: Profile, n: int, seed: int = FRESH_SEED) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(ids, unscaled latents (n, C_z, D, h, w, t), pixel embeddings (n, E)) of n fresh phantoms (`fresh_cines`),
    encoded with the run's VQ-GAN (`tasks.vqgan.encode_volume`)."""
    c = fresh_cines(profile, n, seed)
    with torch.no_grad():
        z = torch.stack([encode_volume(vq, img[None])[0] for img in c["images"]])
    return c["ids"], z, c["pixels"]


def _dp_bound(run: Path) -> dict | None:

    if not (run / PRIVACY_JSON).exists():
        return None
    rec = read_privacy_json(run)
    eps, delta = float(rec["epsilon"][rec["accountant"]]), float(rec["delta"])
    return {"epsilon": eps, "delta": delta, "init_run": rec.get("init_run"),
            "tpr_bound": {f"{100 * f:g}%": float(mia.dp_tpr_bound(f, eps, delta)) for f in mia.LOW_FPRS}}


def _phantom_sides(profile: Profile, n_fresh: int | None, references: int | None) -> tuple[int, int]:
    """(fresh phantom non-members, LiRA reference models): the profile's on phantom data, none by default on a real
    source (phantoms beside real members would be told apart by their source; LiRA's shadow models train on
    phantoms, another distribution than a real source's)."""
    real = profile.data_source is not None
    n_fresh = int(n_fresh if n_fresh is not None else 0 if real else profile.mia.fresh)
    references = int(references if references is not None else 0 if real else profile.mia.references)
    if n_fresh < 0:
        raise CardiolabError(f"--n-fresh {n_fresh}: must be >= 0")
    if references < 0 or references == 1:
        raise CardiolabError(f"--references {references}: must be 0 (no LiRA) or >= 2 (a variance needs two)")
    return n_fresh, references


def _trained_latents(run: Path, conf: dict) -> Path:
    """The latents.pt a DiT run trained on, as its config names it."""
    latents = conf.get("latents") or conf.get("shaping", {}).get("latents")
    if not latents:
        raise CardiolabError(f"{run}: its config names no latents.pt")
    return from_record(latents)


def audit_mia(run: str | os.PathLike, profile: Profile, reference: str | os.PathLike | None = None,
              synthetic: str | os.PathLike | None = None, n_fresh: int | None = None, n_boot: int = 1000,
              out_json: str | os.PathLike | None = None, figure: str | os.PathLike | None = None,
              references: int | None = None) -> dict:
    """Membership inference against a DiT run; writes the JSON (keys JSON_KEYS) and a log-log ROC figure.

    n_fresh: fresh phantoms among the non-members (default: the profile's mia.fresh on phantom data, none on a real
    data source; TPR at 1 % FPR needs >= 100 non-members in all). references: LiRA's reference models (default
    mia.references on phantom data, none on a real source; 0 leaves LiRA out; trained once per target recipe under
    runs/<profile>/lira, `privacy.lira`).
    Default paths: runs/<profile>/audit/mia-<run name>.json / .png.
    """
    run = Path(run)
    task = check_dit_run(run)
    n_fresh, references = _phantom_sides(profile, n_fresh, references)
    if reference is not None:
        check_dit_run(reference)
    model, conf = dit.load(run)
    record = load_latents(_trained_latents(run, conf))
    ids, splits, scale = list(record["ids"]), dict(record["splits"]), float(conf["scale"])
    members = np.array([splits.get(s) != "holdout" for s in ids])
    vq = load_vqgan(from_record(conf["vqgan_run"]))
    f_ids, f_z, f_pix = fresh_latents(vq, profile, n_fresh) if n_fresh else ([], record["latents"][:0], None)
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
    def other_losses(ref_run: Path) -> np.ndarray:        # the same loss queries on another DiT
        ref_model, ref_conf = dit.load(ref_run)
        if ref_conf.get("latent_shape") != conf.get("latent_shape"):
            raise CardiolabError(f"reference {ref_run}: latents {ref_conf.get('latent_shape')} differ from "
                                 f"the run's {conf.get('latent_shape')}")
        return loss_scores(ref_model, sch, z, all_ids, steps, dcfg.loss)

    if reference is not None:
        scores["calibrated"] = -(losses - other_losses(reference))
    else:
        skipped["calibrated"] = ("no reference model: pass --reference RUN, a DiT that never saw these subjects "
                                 "(for a dit-dp run its public init is used)")
    lira_refs = ensure_references(run, conf, task, profile, references) if references else []
    if lira_refs:
        scores["lira"] = mia.lira_offline(losses, np.stack([other_losses(r) for r in lira_refs]))
    else:
        skipped["lira"] = ("--references 0" if profile.data_source is None else
                           "a real data source: LiRA's shadow phantoms are not its distribution (--references K to force)")
    synthetic = Path(synthetic) if synthetic is not None else _own_samples(run, profile, task)
    if synthetic.is_dir() and any(synthetic.iterdir()):
        scores["distance"] = _distance_scores(synthetic, record, ids, f_pix, profile, dcr)
    else:
        skipped["distance"] = f"no synthetic cohort of {run} at {synthetic} (sample the run first, or pass --synthetic)"
    bound = None if dp is None else (dp["epsilon"], dp["delta"])   # checked on the intervals, not point estimates
    attacks = {name: mia.attack_summary(s, is_member, n_boot=n_boot, dp=bound) for name, s in scores.items()}
    out_json = Path(out_json) if out_json is not None else profile.audit_dir / f"mia-{run.name}.json"
    figure = Path(figure) if figure is not None else out_json.with_suffix(".png")
    curves = {k: mia.roc_curve(s, is_member)[:2] for k, s in scores.items()}
    save_mia_roc(curves, figure, None if dp is None else (dp["epsilon"], dp["delta"]))
    result = {"kind": KIND, "run": str(run), "task": task, "profile": profile.name,
              "n_members": int(is_member.sum()), "n_nonmembers": int((~is_member).sum()),
              "n_holdout": int((~members).sum()), "n_fresh": len(f_ids), "timesteps": steps,
              "pia_timestep": _steps(dcfg.train_timesteps, (PIA_FRACTION,))[0], "attacks": attacks,
              "skipped": skipped, "reference": None if reference is None else str(reference), "dp": dp,
              "lira_references": [str(r) for r in lira_refs],
              "synthetic": str(synthetic) if "distance" in scores else None, "figure": str(figure),
              "roc": {k: {"fpr": f.tolist(), "tpr": t.tolist()} for k, (f, t) in curves.items()}}
    write_json(out_json, result)
    result["json"] = str(out_json)
    return result


def _own_samples(run: Path, profile: Profile, task: str) -> Path:
    """The run's own sampled cohort: runs/<p>/samples/<run name> (the DP grid's), else samples/<task> (`sample`'s
    default) when its samples.json names this run; else the first, which then reads as missing."""
    for cohort in (profile.samples(run.name), profile.samples(task)):
        made_by = samples_record(cohort).get("run") if cohort.is_dir() else None
        if made_by and from_record(made_by).resolve() == run.resolve():
            return cohort
    return profile.samples(run.name)


def _distance_scores(synthetic: Path, record: dict, ids: list[str], fresh_pixels, profile: Profile, dcr) -> np.ndarray:
    """Minus each subject's distance to its closest synthetic cine (pixel embeddings), in the order ids + fresh
    (fresh_pixels: their embeddings, `fresh_cines`); every side in the label-free comparison geometry
    (`load_cines(label_free=True)`), as the copy audit compares them."""
    cache = Path(record.get("cache_dir") or profile.cache_dir)
    real = load_cines(cache, profile, label_free=True)
    where = {s: i for i, s in enumerate(real.ids)}
    missing = [s for s in ids if s not in where]
    if missing:
        raise CardiolabError(f"{cache}: latents subjects {missing[:3]} are not in the cache")
    images = real.images[[where[s] for s in ids]]
    syn = load_cines(synthetic, profile, label_free=True).images
    if syn.shape[1:] != images.shape[1:]:
        raise CardiolabError(f"--synthetic {synthetic}: cines {tuple(syn.shape[1:])}, the cache has "
                             f"{tuple(images.shape[1:])}")
    pixels = embedder("pixels")
    query = pixels(images)
    if fresh_pixels is not None:
        query = torch.cat([query, fresh_pixels.to(query.dtype)])
    return -dcr(query.numpy(), pixels(syn).numpy())
