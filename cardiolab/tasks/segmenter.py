"""Training and use of the cardiac segmenter (`cardiolab.models.segmenter`): train / ensure / load / segment.

Training data are labelled 2D frames gathered from labelled volumes, which come from the prepared cache
(`subjects`: a split name or a list of ids) and/or an ACDC-layout cohort (`cohort`: real or synthetic with
labels, e.g. the two-stage generator's masks, or volumes pseudo-labelled in memory). So the same `train`
serves the segmenter of the evaluation suite and the real / synthetic / real+synthetic runs of
`cardiolab.evaluation.utility`. After training, the model is scored on the cache's holdout split
(Dice and HD95 per structure) and the scores are written to `<run>/scores.json`.

Volume records come from `cardiolab.data.cines` (`cache_volumes`, `cohort_volumes`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from monai.losses import DiceCELoss
from torch.utils.data import ConcatDataset, Dataset

from cardiolab.core import SCORES, CardiolabError, seed_everything, to_record, write_json
from cardiolab.data.cines import cache_volumes, cohort_volumes
from cardiolab.data.prepare import ensure_prepared
from cardiolab.data.randomise import RandomiseConfig, randomise_batch
from cardiolab.engine import Trainer, TrainConfig, ensure_run, load_checkpoint
from cardiolab.metrics.segmentation import STRUCTURES, seg_scores
from cardiolab.models.segmenter import Segmenter, SegmenterConfig
from cardiolab.profiles import Profile, data_shaping, profile_record, shaping_fields

log = logging.getLogger(__name__)

NAME = "segmenter"
KIND = "segmenter"
RUN = NAME                 # run folder under profile.run_dir
MAX_FRAMES = 8             # labelled frames kept per subject: the phantom labels every frame, and
                           # neighbouring frames add little but memory (full profile: 32 frames of 256^2)
INTENSITY_JITTER = 0.1     # random gain/offset (the plain frames): robustness to a generator's intensity drift
LR = 5e-3                  # AdamW peak LR; the engine warms up and cosine-decays it
LOSS = DiceCELoss(to_onehot_y=True, softmax=True)
PRECISION = "off"          # it measures function, shape and utility: fp32 on every machine, same numbers anywhere


# ---- data ----------------------------------------------------------------------------------------------
class FrameSet(Dataset):
    """Labelled 2D frames of a set of volumes, held in memory.

    Items: {"image": (1, H, W) float32, "labels": (H, W) int64}.
    transform: an optional dict transform of each item, e.g. `cardiolab.data.randomise.domain_randomisation()`
    (`train` augments whole batches in its step instead: `augmentation`). It is re-seeded per item from numpy's
    global RNG, which the engine seeds at every step, so a resumed run draws the same augmentations.
    """

    def __init__(self, volumes: Sequence[dict], max_frames: int = MAX_FRAMES, transform: Callable | None = None):
        self.transform = transform
        images, labels = [], []
        for vol in volumes:
            frames = _pick_frames(vol["label_mask"], max_frames)
            if not frames:
                continue
            images.append(rearrange(vol["image"][0][..., frames], "d h w t -> (d t) 1 h w"))
            labels.append(rearrange(vol["labels"][..., frames], "d h w t -> (d t) h w").to(torch.uint8))
        if not images:
            raise CardiolabError("segmenter training data: no labelled frames in the given volumes")
        shapes = {tuple(x.shape[-2:]) for x in images}
        if len(shapes) > 1:
            raise CardiolabError(f"segmenter training data: volumes of different in-plane sizes {sorted(shapes)}")
        self.images, self.labels = torch.cat(images).float(), torch.cat(labels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.images[i], "labels": self.labels[i].long()}
        if self.transform is None:
            return item
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=int(np.random.randint(0, 2**31 - 1)))
        return self.transform(item)


def _pick_frames(label_mask: torch.Tensor, max_frames: int) -> list[int]:
    """Up to max_frames labelled frames, evenly spread, always the first and last (ED and ES-ish) ones."""
    frames = torch.nonzero(torch.as_tensor(label_mask)).flatten().tolist()
    if len(frames) <= max_frames:
        return frames
    keep = np.unique(np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(int))
    return [frames[k] for k in keep]


# ---- model ---------------------------------------------------------------------------------------------
def augmentation(profile: Profile) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The augmentation of a training batch, (image (N, 1, H, W), labels (N, H, W)) -> the same: SynthSeg-style
    domain randomisation (`cardiolab.data.randomise.randomise_batch`, with eval.seg_plain_share of the frames
    kept at their own contrast) when eval.seg_randomise, else the plain gain/offset jitter. Draws come from
    torch's global RNG, which the engine re-seeds at every step."""
    if profile.eval.seg_randomise:
        cfg = RandomiseConfig(plain_share=profile.eval.seg_plain_share, plain_jitter=INTENSITY_JITTER)
        return lambda x, y: randomise_batch(x, y, cfg)
    return _jitter


def _jitter(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gain = 1 + INTENSITY_JITTER * (2 * torch.rand(x.shape[0], 1, 1, 1, device=x.device) - 1)
    offset = INTENSITY_JITTER * (2 * torch.rand(x.shape[0], 1, 1, 1, device=x.device) - 1)
    return x * gain + offset, y


def model_config(profile: Profile) -> SegmenterConfig:
    return SegmenterConfig(channels=tuple(profile.eval.seg_channels))


def shaping(profile: Profile, seed: int = 0, cache: str | os.PathLike | None = None,
            data: dict | None = None, steps: int | None = None) -> dict:
    """What shapes the segmenter's weights: the seg_* fields (never the evaluator's or utility's; seg_randomise
    and seg_plain_share included: they pick the augmentation), the training data (default: the profile's
    public split) and the seed."""
    seg = {k: v for k, v in shaping_fields(profile.eval).items() if k.startswith("seg_")}
    seg["seg_steps"] = steps or seg["seg_steps"]
    return {"segmenter": seg, **data_shaping(profile, cache), "train_data": data or {"subjects": "public"},
            "seed": seed}


def num_parameters(profile: Profile) -> int:
    return sum(p.numel() for p in Segmenter(model_config(profile)).parameters())


def segment(model: Segmenter, images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Segment every frame of every slice.

    images: (B, 1, D, H, W, T) or (1, H, W, T) in [-1, 1] -> labels int64 (B, D, H, W, T) or (H, W, T).
    H and W need not be multiples of the UNet's stride: frames are padded and the result cropped.
    """
    images = torch.as_tensor(images)
    if images.ndim == 4:
        return segment(model, images[None, :, None])[0, 0]
    if images.ndim != 6 or images.shape[1] != 1:
        raise CardiolabError(f"segment: expected (B, 1, D, H, W, T) or (1, H, W, T), got {tuple(images.shape)}")
    B, _, D, H, W, T = images.shape
    device = next(model.parameters()).device
    frames = rearrange(images.float(), "b 1 d h w t -> (b d t) 1 h w")
    m = model.multiple
    frames = F.pad(frames, (0, -W % m, 0, -H % m), value=-1.0)  # -1: the background intensity
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x.to(device)).argmax(1).cpu() for x in frames.split(chunk)])
    model.train(was_training)
    return rearrange(out[:, :H, :W], "(b d t) h w -> b d h w t", b=B, d=D, t=T).long()


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Segmenter:
    """The trained segmenter of a run folder (from checkpoint.pt), in eval mode."""
    ckpt = load_checkpoint(run_dir)
    cfg = ckpt["config"].get("model")
    if cfg is None:
        raise CardiolabError(f"{run_dir}: not a segmenter run (config has no 'model')")
    model = Segmenter(SegmenterConfig(**{**cfg, "channels": tuple(cfg["channels"])}))
    model.load_state_dict(ckpt["modules"]["model"])
    return model.to(device).eval()


# ---- training ------------------------------------------------------------------------------------------
def _step(batch: dict, step: int, tr, augment: Callable = _jitter) -> dict:
    """One Dice+CE step on a batch of labelled frames: image (N, 1, H, W), labels (N, H, W), augmented first
    (`augmentation`)."""
    x, y = augment(batch["image"], batch["labels"])
    with tr.autocast():
        logits = tr.modules["model"](x)
    loss = LOSS(logits.float(), y[:, None])
    tr.backward(loss, "model")
    return {"loss": loss.item()}


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
          subjects: str | Sequence[str] | None = None, cohort: str | os.PathLike | Sequence[dict] | None = None,
          evaluate_on: str | Sequence[str] | None = "holdout") -> Path:
    """Train the segmenter on labelled frames and score it; returns the run folder.

    subjects: cache subjects to train on (split name or ids); default 'public' when no cohort is given, else none.
    cohort: an ACDC-layout folder with labels, or volume records (e.g. pseudo-labelled synthetic cines).
    evaluate_on: cache split or ids scored after training into <out>/scores.json (None: skip).
    cache_dir: the prepared cache (default: profile.cache_dir, prepared if missing).
    """
    out = Path(out) if out is not None else profile.run_dir / RUN
    steps = steps if steps is not None else profile.eval.seg_steps
    if subjects is None and cohort is None:
        subjects = "public"
    if cache_dir is None and (subjects is not None or evaluate_on is not None):
        cache_dir = ensure_prepared(profile)

    parts, described = [], {}
    if subjects is not None:
        parts.append(FrameSet(cache_volumes(cache_dir, subjects)))
        described["subjects"] = subjects if isinstance(subjects, str) else list(subjects)
    if cohort is not None:
        vols = cohort_volumes(cohort, profile) if isinstance(cohort, (str, os.PathLike)) else cohort
        parts.append(FrameSet(vols))
        in_memory = not isinstance(cohort, (str, os.PathLike))
        described["cohort"] = f"{len(vols)} volumes in memory" if in_memory else to_record(cohort)
    data = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    log.info("segmenter: %d labelled frames (%s)", len(data), described)

    seed_everything(seed)
    model = Segmenter(model_config(profile))
    cfg = TrainConfig(steps=steps, batch_size=profile.eval.seg_batch, lr=LR, warmup=min(100, steps // 10),
                      ckpt_every=max(50, steps // 4), log_every=max(1, min(20, steps // 10)), seed=seed,
                      device=profile.device, amp=PRECISION)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    config = {"task": NAME, "shaping": shaping(profile, seed, cache_dir, described, steps),
              "model": model.config.to_dict(), **profile_record(profile), "data": described, "frames": len(data)}
    tr = Trainer(out, cfg, modules={"model": model}, optimizers={"model": opt}, config=config)
    augment = augmentation(profile)
    tr.fit(data, lambda batch, step, trainer: _step(batch, step, trainer, augment), resume=resume)

    if evaluate_on is not None:
        test = cache_volumes(cache_dir, evaluate_on)
        if test:
            scores = score(tr.raw("model"), test)
            write_json(out / SCORES, {"split": evaluate_on if isinstance(evaluate_on, str) else "ids", **scores})
            log.info("segmenter %s Dice on %s: %s", out.name, evaluate_on,
                     {k: round(v, 3) for k, v in scores["dice"].items()})
    return out


def score(model: Segmenter, volumes: Sequence[dict]) -> dict:
    """Dice and HD95 (mm) per structure of `model` on the labelled frames of `volumes`.

    Returns {"n_subjects", "dice": {RV, MYO, LV, mean}, "hd95": {...}, "per_subject": [{"id", "dice_RV", ...}]}
    (structure scores are means over a subject's labelled frames; NaN-aware, see `seg_scores`).
    """
    rows = []
    for vol in volumes:
        frames = torch.nonzero(vol["label_mask"]).flatten().tolist()
        if not frames:
            continue
        pred = segment(model, vol["image"][None][..., frames])[0]          # (D, H, W, F)
        sx, sy, sz = vol["spacing"]
        truth = vol["labels"][..., frames]
        s = seg_scores(rearrange(pred, "d h w f -> f d h w"), rearrange(truth, "d h w f -> f d h w"),
                       spacing=(sz, sx, sy))
        rows.append({"id": vol["id"], **{k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                                         for k, v in s.items()}})
    summary = {"n_subjects": len(rows), "per_subject": rows}
    for metric in ("dice", "hd95"):
        vals = {n: float(np.nanmean([r[f"{metric}_{n}"] for r in rows])) if rows else float("nan") for n in STRUCTURES}
        vals["mean"] = float(np.nanmean(list(vals.values())))
        summary[metric] = vals
    return summary


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    """The profile's segmenter run folder (runs/<profile>/segmenter), trained (or finished) if needed."""
    out = Path(run_dir or profile.run(NAME))
    return ensure_run(out, profile.eval.seg_steps, shaping(profile), lambda resume: train(profile, out=out, resume=resume),
                      require=(SCORES,))


def ensure_model(profile: Profile, device: str | torch.device = "cpu") -> Segmenter:
    """`ensure` then `load`: the trained segmenter of the profile."""
    return load(ensure(profile), device=device)
