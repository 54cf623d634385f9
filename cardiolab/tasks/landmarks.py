"""Training and use of the RV insertion point detector (`cardiolab.models.landmarks`): train / ensure / load / predict.

Training items are single frames (or 2k+1 neighbouring frames, `temporal_context` k) of every slice of the
cache's labelled frames, with two target heatmaps; slices without RV get empty maps, so the detector learns to
report nothing there (what PPV counts). After training the model is scored on the holdout split with
`cardiolab.metrics.landmarks` (summary under the strict policy + pitfall table) into `<run>/scores.json`.

TRUTH: the cache's "rvip" (the phantom's every-frame points, mapped by `prepare.map_inplane`) where the cache
has point truth ("truth": "phantom" in the run's config and scores); otherwise (real data) a stand-in derived
from the cache labels with `metrics.landmarks.points_from_labels` (checked against the phantom truth in
tests/test_rvip_cache.py), named by the same world rule as the phantom ("truth": "labels-standin").
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from monai.losses import DiceLoss
from torch.utils.data import Dataset

from cardiolab.core import SCORES, CardiolabError, seed_everything, write_json
from cardiolab.data.landmark_transforms import landmark_augmentation
from cardiolab.data.prepare import ensure_prepared
from cardiolab.data.cines import cache_volumes
from cardiolab.engine import Trainer, TrainConfig, ensure_run, load_checkpoint
from cardiolab.metrics import landmarks as metrics
from cardiolab.models.landmarks import LandmarkConfig, LandmarkNet, decode_heatmaps, encode_heatmaps
from cardiolab.profiles import Profile, data_shaping, profile_record, shaping_fields

log = logging.getLogger(__name__)

NAME = "landmarks"
KIND = "detector"
RUN = NAME                        # run folder under profile.run_dir
TRUTH_RULE = "cache rvip where present (phantom), else labels-standin"   # shaping: what the targets are
NET_VERSION = 2                   # shaping: 2 = LandmarkNet with the learned prior logit (older runs retrain)
MAX_FRAMES = 8                    # labelled frames kept per subject (as the segmenter: neighbours add little)
MSE_FOREGROUND_WEIGHT = 20.0      # targets cover < 1 % of a frame; unweighted MSE learns the all-zero map first
DICE = DiceLoss(sigmoid=True)


# ---- data ----------------------------------------------------------------------------------------------
def truth_kind(volumes: Sequence[dict]) -> str:
    """"phantom" when every volume carries point truth in the cache, "labels-standin" when none does."""
    kinds = {bool(v.get("has_rvip")) for v in volumes}
    if len(kinds) > 1:
        raise CardiolabError("landmarks: a cache mixes subjects with and without RVIP truth; prepare it again")
    return "phantom" if kinds == {True} else "labels-standin"


def truth_points(volume: dict, frames: Sequence[int]) -> np.ndarray:
    """RVIP truth of a volume record: (D, F, 2, 2) (row, col) px, NaN where undefined.

    The cache's "rvip" where the record has point truth, else the label-derived stand-in (named towards the
    record's "superior" direction, the phantom's RVIP_RULE)."""
    if volume.get("has_rvip") and "rvip" in volume:
        return volume["rvip"][:, list(frames)].numpy().astype(float)
    labels = volume["labels"][..., list(frames)].numpy()                       # (D, H, W, F)
    return metrics.points_from_labels(rearrange(labels, "d h w f -> d f h w"), volume.get("superior", (0.0, 1.0)))


def frame_stacks(image: torch.Tensor, context: int, frames: Sequence[int] | None = None) -> torch.Tensor:
    """Network inputs of every slice and frame: image (1, D, H, W, T) -> (D * F, 2k+1, H, W), ordered (d, f).

    Channel j holds frame (t + j - k) mod T: a cine covers one beat, so its neighbours wrap around.
    frames: the centre frames (default all T).
    """
    T = image.shape[-1]
    frames = list(range(T)) if frames is None else list(frames)
    idx = (torch.as_tensor(frames)[:, None] + torch.arange(-context, context + 1)[None]) % T    # (F, 2k+1)
    stacks = image[0][..., idx]                                                                # (D, H, W, F, C)
    return rearrange(stacks, "d h w f c -> (d f) c h w").float()


class LandmarkFrames(Dataset):
    """Frames of labelled volumes with RVIP heatmaps, held in memory.

    Items: {"image": (2k+1, H, W) float32 in [-1, 1], "heatmaps": (2, H, W) float32}; spacing per item in
    `self.spacing` (N, 2) and the truth points in `self.points` (N, 2, 2).
    """

    def __init__(self, volumes: Sequence[dict], config: LandmarkConfig, augment: bool = False,
                 max_frames: int = MAX_FRAMES):
        images, points, spacing = [], [], []
        for vol in volumes:
            frames = _pick_frames(vol["label_mask"], max_frames)
            if not frames:
                continue
            images.append(frame_stacks(vol["image"], config.temporal_context, frames))
            points.append(truth_points(vol, frames).reshape(-1, 2, 2))
            spacing += [vol["spacing"][:2]] * len(points[-1])
        if not images:
            raise CardiolabError("landmark training data: no labelled frames in the given volumes")
        self.images = torch.cat(images)
        self.points, self.spacing = np.concatenate(points), np.asarray(spacing, float)
        shape = tuple(self.images.shape[-2:])
        self.heatmaps = torch.from_numpy(np.stack([
            encode_heatmaps(p, shape, s, config.sigma_mm, config.target) for p, s in zip(self.points, self.spacing)]))
        self.augment = landmark_augmentation(elastic=2.0, size=shape) if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.images[i], "heatmaps": self.heatmaps[i]}
        if self.augment is None:
            return item
        self.augment.set_random_state(seed=int(np.random.randint(2**31)))   # the engine seeds numpy per step
        out = self.augment(item)
        return {k: torch.as_tensor(out[k]).float() for k in item}


def _pick_frames(label_mask: torch.Tensor, max_frames: int) -> list[int]:
    frames = torch.nonzero(torch.as_tensor(label_mask)).flatten().tolist()
    keep = np.unique(np.round(np.linspace(0, len(frames) - 1, max_frames)).astype(int)) if frames else []
    return [frames[k] for k in keep]


# ---- model ---------------------------------------------------------------------------------------------
def model_config(profile: Profile) -> LandmarkConfig:
    p = profile.landmarks
    return LandmarkConfig(channels=tuple(p.channels), sigma_mm=p.sigma_mm, target=p.target, loss=p.loss,
                          decoder=p.decoder, threshold=p.threshold, temporal_context=p.temporal_context)


def shaping(profile: Profile, seed: int = 0, steps: int | None = None,
            subjects: str | Sequence[str] = "public") -> dict:
    """The settings that shape the weights: the section's shaping fields (decoder, threshold and folds are
    runtime: they decode or evaluate), the targets, the network version, the data, the seed and the subjects."""
    section = shaping_fields(profile.landmarks)
    section["steps"] = steps or section["steps"]
    return {"landmarks": section, "truth": TRUTH_RULE, "net": NET_VERSION, **data_shaping(profile), "seed": seed,
            "subjects": subjects if isinstance(subjects, str) else list(subjects)}


def num_parameters(profile: Profile) -> int:
    return sum(p.numel() for p in LandmarkNet(model_config(profile)).parameters())


def load_config(run_dir: str | os.PathLike) -> dict:
    """The config a landmarks run was trained with (its checkpoint's); CardiolabError for any other folder."""
    return _checked_config(load_checkpoint(run_dir)["config"], run_dir)


def _checked_config(cfg: dict, run_dir) -> dict:
    if cfg.get("task") != RUN or "model" not in cfg:
        raise CardiolabError(f"{run_dir}: not a landmarks run (its config.json names no landmark model)")
    return cfg


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu", decoder: str | None = None,
         threshold: float | None = None) -> LandmarkNet:
    """The trained detector of a run folder, in eval mode; decoder / threshold override the trained ones."""
    ckpt = load_checkpoint(run_dir)
    cfg = _checked_config(ckpt["config"], run_dir)
    model_cfg = {**cfg["model"], "channels": tuple(cfg["model"]["channels"])}
    model_cfg.update({k: v for k, v in (("decoder", decoder), ("threshold", threshold)) if v is not None})
    model = LandmarkNet(LandmarkConfig(**model_cfg))
    model.load_state_dict(ckpt["modules"]["model"])
    return model.to(device).eval()


def predict(model: LandmarkNet, image: torch.Tensor, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """RVIPs of every slice and frame of a cine.

    image: (1, D, H, W, T) in [-1, 1] -> points (D, T, 2, 2) (row, col px, NaN = missing), confidence (D, T, 2).
    H and W need not be multiples of the UNet's stride: frames are padded and the maps cropped.
    """
    image = torch.as_tensor(image)
    if image.ndim != 5 or image.shape[0] != 1:
        raise CardiolabError(f"landmarks predict: expected (1, D, H, W, T), got {tuple(image.shape)}")
    _, D, H, W, T = image.shape
    x = frame_stacks(image, model.config.temporal_context)                       # (D*T, C, H, W)
    m = model.multiple
    x = F.pad(x, (0, -W % m, 0, -H % m), value=-1.0)                             # -1: the background intensity
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        maps = torch.cat([torch.sigmoid(model(c.to(device))).float().cpu() for c in x.split(chunk)])[..., :H, :W]
    model.train(was_training)
    points, confidence = decode_heatmaps(maps.numpy(), model.config.decoder, model.config.threshold)
    return points.reshape(D, T, 2, 2), confidence.reshape(D, T, 2)


# ---- training ------------------------------------------------------------------------------------------
def heatmap_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """logits, target: (N, 2, H, W). "bce_dice": BCE + soft Dice on sigmoid maps; "mse": foreground-weighted
    MSE on sigmoid maps."""
    if kind == "bce_dice":
        return F.binary_cross_entropy_with_logits(logits, target) + DICE(logits, target)
    weight = 1 + MSE_FOREGROUND_WEIGHT * target
    return (weight * (torch.sigmoid(logits) - target) ** 2).mean()


def _make_step(kind: str):
    def step(batch: dict, step: int, tr) -> dict:
        with tr.autocast():
            logits = tr.modules["model"](batch["image"])
        loss = heatmap_loss(logits.float(), batch["heatmaps"], kind)
        tr.backward(loss, "model")
        return {"loss": loss.item()}
    return step


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
          subjects: str | Sequence[str] = "public", evaluate_on: str | Sequence[str] | None = "holdout") -> Path:
    """Train the detector on the cache's labelled frames and score it; returns the run folder.

    subjects: cache split or ids to train on; evaluate_on: split or ids scored into <out>/scores.json (None: skip).
    """
    config = model_config(profile)                       # checks the landmarks section before any work
    p = profile.landmarks
    out = Path(out) if out is not None else profile.run(NAME)
    steps = steps if steps is not None else p.steps
    cache_dir = cache_dir if cache_dir is not None else ensure_prepared(profile)
    volumes = cache_volumes(cache_dir, subjects)
    truth = truth_kind(volumes)
    data = LandmarkFrames(volumes, config, augment=p.augment)
    log.info("landmarks: %d frames, %d with RVIPs (truth: %s)", len(data),
             int((~np.isnan(data.points).any((1, 2))).sum()), truth)

    seed_everything(seed)
    model = LandmarkNet(config)
    cfg = TrainConfig(steps=steps, batch_size=p.batch, lr=p.lr, warmup=min(100, steps // 10),
                      ckpt_every=max(50, steps // 4), log_every=max(1, min(20, steps // 10)), seed=seed,
                      device=profile.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    run_config = {"task": NAME, "model": config.to_dict(), **profile_record(profile), "frames": len(data), "truth": truth,
                  "shaping": shaping(profile, seed, steps, subjects)}
    tr = Trainer(out, cfg, modules={"model": model}, optimizers={"model": opt}, config=run_config)
    tr.fit(data, _make_step(config.loss), resume=resume)

    if evaluate_on is not None:
        test = cache_volumes(cache_dir, evaluate_on)
        if test:
            scores = score(tr.raw("model"), test)
            write_json(out / SCORES, {"split": evaluate_on if isinstance(evaluate_on, str) else "ids", **scores})
            log.info("landmarks %s on %s: median %.2f mm, TPR@5mm %.2f", out.name, evaluate_on,
                     scores["summary"]["slices"]["points"]["median"],
                     scores["summary"]["detection"]["5.0"]["both"]["tpr"])
    return out


def score(model: LandmarkNet, volumes: Sequence[dict]) -> dict:
    """Metrics of `model` on the labelled frames of `volumes` (stand-in truth), under the strict policy
    (missed = upper bound, single points count, mm), plus the pitfall table over all policies."""
    truth, pred, spacing, subject, level = [], [], [], [], []
    for vol in volumes:
        frames = torch.nonzero(vol["label_mask"]).flatten().tolist()
        if not frames:
            continue
        points, _ = predict(model, vol["image"])
        D = points.shape[0]
        truth.append(truth_points(vol, frames).reshape(-1, 2, 2))
        pred.append(points[:, frames].reshape(-1, 2, 2))
        n = D * len(frames)
        spacing += [vol["spacing"][:2]] * n
        subject += [vol["id"]] * n
        level += np.repeat(metrics.levels(D), len(frames)).tolist()
    if not truth:
        return {"n_subjects": 0}
    truth, pred, spacing = np.concatenate(truth), np.concatenate(pred), np.asarray(spacing, float)
    shape = tuple(volumes[0]["image"].shape[2:4])
    return {"n_subjects": len(set(subject)), "truth": truth_kind(volumes),
            "summary": metrics.summarize(truth, pred, spacing, shape, subject=subject, level=level),
            "pitfalls": metrics.pitfall_table(truth, pred, spacing, shape)}


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    """The profile's detector run folder (runs/<profile>/landmarks), trained (or finished) if needed."""
    out = Path(run_dir) if run_dir is not None else profile.run(NAME)
    return ensure_run(out, profile.landmarks.steps, shaping(profile), lambda resume: train(profile, out=out, resume=resume),
                      require=(SCORES,))
