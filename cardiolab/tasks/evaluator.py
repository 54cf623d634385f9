"""Training the feature evaluator behind FD-/KID-cardiolab (`cardiolab.models.evaluator.CineEncoder`).

SimCLR NT-Xent (MONAI `ContrastiveLoss`) between two augmented views of a random slab of adjacent slices, plus a
"shuffle and learn" order head (kept / frame-shuffled / slice-reversed) and a degradation head, on the public +
private splits of the prepared cache, through the one engine. The frozen encoder is then used by
`cardiolab.metrics.features`.

Why the degradation head: SimCLR alone leaves noise and blur out of its augmentations, so nothing asks the
features to see them; on 10-cine references FD then fell with blur and frame shuffling as often as it rose. The
head regresses, from the features, the strength of one random degradation (noise, blur, frame or slice
shuffling, or none) applied to a third view at a random strength, with `metrics.features.corrupt`, the code
that makes the validation levels. Measured on two unseen 10-cine phantom cohorts (benchmarks/README.md), the
learned features with it order slice shuffling strongly but still not every level of frame shuffling (nor of
noise on one cohort): the image statistics that `CineEncoder.embed` appends carry those.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss

from cardiolab.core import MANIFEST, CardiolabError, is_cache, seed_everything, to_record
from cardiolab.data.datasets import CineDataset, load_manifest
from cardiolab.data.prepare import ensure_prepared, prepare
from cardiolab.engine import Trainer, TrainConfig, ensure_run, load_checkpoint, unwrap
from cardiolab.io.layouts import detect_layout
from cardiolab.metrics.features import DEGRADATIONS, _derange, corrupt, moved_frames, slabs
from cardiolab.models.evaluator import CineEncoder, EvaluatorConfig, image_statistics
from cardiolab.profiles import Profile, data_shaping, profile_record

log = logging.getLogger(__name__)

NAME = "evaluator"
KIND = "evaluator"
RUN_NAME = NAME                 # runs/<profile>/evaluator
TEMPERATURE = 0.5               # NT-Xent temperature (SimCLR's CIFAR setting; small batches here)
ORDER_WEIGHT = 1.0              # weight of the order pretext loss beside NT-Xent
DEGRADATION_WEIGHT = 1.0        # weight of the degradation-strength regression (targets in [0, 1], MSE)
LR = 3e-4                       # 1e-3 collapsed NT-Xent to chance on phantom-like data
# A measuring instrument trains in fp32 on every machine, so FD-cardiolab never depends on a CPU's bf16 support;
# under bf16 autocast the smoke evaluator's NT-Xent turned NaN at step 2.
PRECISION = "off"


def evaluator_config(profile: Profile) -> EvaluatorConfig:
    return EvaluatorConfig(feature_dim=profile.eval.feature_dim, proj_dim=profile.eval.feature_dim,
                           degradations=True, statistics=True)


def shaping(profile: Profile, seed: int = 0, cache: str | os.PathLike | None = None,
            steps: int | None = None) -> dict:
    """What shapes the evaluator's weights: its network, batch, steps, the prepared data and the seed."""
    return {"evaluator": dataclasses.asdict(evaluator_config(profile)), "batch": profile.eval.feature_batch,
            "steps": steps or profile.eval.feature_steps, **data_shaping(profile, cache), "seed": seed}


def num_parameters(profile: Profile) -> int:
    return sum(p.numel() for p in CineEncoder(evaluator_config(profile)).parameters())


def augment(x: torch.Tensor) -> torch.Tensor:
    """A random SimCLR view of slabs x (B, S, H, W, T): intensity jitter, small shifts, flips, temporal roll.

    Noise and blur are deliberately absent: the features must stay sensitive to them.
    """
    b, _, h, w, t = x.shape
    out = []
    for v in x:
        gain, bias = 1 + 0.2 * (torch.rand(()) * 2 - 1), 0.1 * (torch.rand(()) * 2 - 1)
        v = (v + 1) * gain - 1 + bias                                         # jitter around the [-1, 1] floor
        shift = [int(s) for s in torch.randint(-max(1, h // 16), max(1, h // 16) + 1, (2,))]
        v = v.roll(shifts=(*shift, int(torch.randint(t, ()))), dims=(1, 2, 3))  # shift in-plane, roll in time
        for dim in (1, 2):
            if torch.rand(()) < 0.5:
                v = v.flip(dim)
        out.append(v)
    return torch.stack(out)


def random_slab(image: torch.Tensor, in_slices: int) -> torch.Tensor:
    """image: (B, 1, D, H, W, T) -> one random slab per cine, (B, S, H, W, T)."""
    image = image[:, 0]
    b, d = image.shape[:2]
    if d < in_slices:
        image, d = image.repeat_interleave(in_slices, dim=1), d * in_slices
    start = torch.randint(0, d - in_slices + 1, (b,))
    return torch.stack([image[i, s:s + in_slices] for i, s in enumerate(start.tolist())])


def scramble(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The order pretext task: each slab (B, S, H, W, T) is kept (0), frame-shuffled (1) or slice-reversed (2).

    A shuffled slab has a random number (2 .. T) of its frames trade places, none staying put, so the head
    must notice a few jumbled frames as well as a wholly scrambled beat.
    """
    order = torch.randint(0, 3, (len(x),))
    out = x.clone()
    t = x.shape[-1]
    for i, c in enumerate(order.tolist()):
        if c == 1 and t > 1:
            pos = torch.randperm(t)[: int(torch.randint(2, t + 1, ()))]
            perm = torch.arange(t)
            perm[pos] = pos[_derange(len(pos))]
            out[i] = x[i][..., perm]
        elif c == 2:
            out[i] = x[i].flip(0)
    return out, order


def degrade_views(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The degradation task: each slab of x (B, S, H, W, T) gets one of the four `DEGRADATIONS` or none (1 in 5
    each) at a uniform random strength up to the strongest validation level. Returns the views and targets
    (B, 4): per kind, the strength applied as a fraction of that level (0 where not applied; a slice shuffle of
    a slab is all or nothing, so 1)."""
    kinds = list(DEGRADATIONS)
    out, target = x.clone(), torch.zeros(len(x), len(kinds))
    t = x.shape[-1]
    for i, k in enumerate(torch.randint(0, len(kinds) + 1, (len(x),)).tolist()):
        if k == len(kinds):
            continue                                          # clean: every target 0
        u = 1.0 if kinds[k] == "slice shuffle" else float(torch.rand(()))
        top = DEGRADATIONS[kinds[k]][-1]
        out[i] = corrupt(x[i:i + 1], kinds[k], u * top)[0]
        target[i, k] = moved_frames(t, u * top) / t / top if kinds[k] == "temporal shuffle" and u > 0 else u
    return out, target


def _heads(net: torch.nn.Module, project: list, classify: list, regress: list) -> tuple[list, list, list]:
    """One encoder pass over all views (one DDP forward), split into SimCLR projections, order logits and
    degradation strengths."""
    views = project + classify + regress
    feats = net(torch.cat(views)).split([len(v) for v in views])
    raw = unwrap(net)
    a, b = len(project), len(project) + len(classify)
    return ([raw.proj(f) for f in feats[:a]], [raw.order_head(f) for f in feats[a:b]],
            [raw.degradation_head(f) for f in feats[b:]])


def train(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
          steps: int | None = None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
          root: str | os.PathLike | None = None) -> Path:
    """SimCLR + order + degradation training of the evaluator on the public + private splits of the prepared cache.

    cache_dir: default the profile's (built if missing); steps: default profile.eval.feature_steps.
    root: any cohort folder (e.g. a real public cohort) instead: prepared into `<out>-cache` at the profile's
    geometry first, so the evaluator can be fitted to real cines.
    Returns the run folder (default runs/<profile>/evaluator).
    """
    out = Path(out or profile.run(NAME))
    if root is not None and cache_dir is not None:
        raise CardiolabError("train evaluator: give --root or --cache, not both")
    if root is not None:
        cache_dir = out.with_name(f"{out.name}-cache")
        prepare(root, detect_layout(root), profile, cache_dir)
    cache = Path(cache_dir) if cache_dir is not None else ensure_prepared(profile)
    if not is_cache(cache):
        raise CardiolabError(f"{cache}: not a prepared cache (no {MANIFEST}; `prepare` a cohort or use --root)")
    steps = steps or profile.eval.feature_steps
    splits = load_manifest(cache)["splits"]
    data = CineDataset(cache, split=splits["public"] + splits["private"], mode="volume")
    seed_everything(seed)
    cfg = evaluator_config(profile)
    model = CineEncoder(cfg)
    batch = profile.eval.feature_batch
    train_cfg = TrainConfig(steps=steps, batch_size=min(batch, len(data)), lr=LR, warmup=max(1, steps // 20),
                            ckpt_every=200, seed=seed, device=profile.device, amp=PRECISION)
    with torch.no_grad():   # centre the image statistics on the training cines (every slab of each)
        model.statistics_centre.copy_(torch.cat([image_statistics(slabs(data[i]["image"], cfg.in_slices))
                                                 for i in range(len(data))]).mean(0))
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=1e-4)
    loss_fn = ContrastiveLoss(temperature=TEMPERATURE)

    def step_fn(batch, step, tr):
        slab = random_slab(batch["image"], cfg.in_slices)
        scrambled, order = scramble(slab)
        degraded, strength = degrade_views(augment(slab.cpu()))
        with tr.autocast():
            net = tr.modules["model"]
            (z1, z2), (logits,), (pred,) = _heads(net, [augment(slab), augment(slab)], [augment(scrambled)],
                                                  [degraded.to(slab.device)])
            contrastive = loss_fn(z1.float(), z2.float())
            order_loss = F.cross_entropy(logits.float(), order.to(logits.device))
            degradation_loss = F.mse_loss(pred.float(), strength.to(pred.device))
            loss = contrastive + ORDER_WEIGHT * order_loss + DEGRADATION_WEIGHT * degradation_loss
        tr.backward(loss, "model")
        return {"loss": loss.item(), "nt_xent": contrastive.item(), "order": order_loss.item(),
                "degradation": degradation_loss.item()}

    config = {"task": NAME, "shaping": shaping(profile, seed, cache, steps), "evaluator": dataclasses.asdict(cfg),
              **profile_record(profile), "cache": to_record(cache), "n_train": len(data), "temperature": TEMPERATURE}
    Trainer(out, train_cfg, modules={"model": model}, optimizers={"model": opt}, config=config).fit(
        data, step_fn, resume=resume)
    return out


def ensure(profile: Profile, run_dir: str | os.PathLike | None = None) -> Path:
    """The trained evaluator's run folder (runs/<profile>/evaluator), trained unless finished with this shaping."""
    out = Path(run_dir or profile.run(NAME))
    return ensure_run(out, profile.eval.feature_steps, shaping(profile),
                      lambda resume: train(profile, out, resume=resume))


def load(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> CineEncoder:
    """The frozen evaluator from a run folder (or checkpoint path), in eval mode."""
    return load_encoder(run_dir, "evaluator", device)


def load_encoder(run_dir: str | os.PathLike, key: str, device: str | torch.device = "cpu") -> CineEncoder:
    """A frozen CineEncoder whose EvaluatorConfig a run recorded as config[key] (evaluator, copy detector)."""
    ckpt = load_checkpoint(run_dir)
    raw = ckpt["config"].get(key)
    if raw is None:
        raise CardiolabError(f"{run_dir}: not a run of this model (no {key!r} in its config)")
    # checkpoints from before the frame differences, the degradation head and the image statistics
    raw = {"motion": False, "degradations": False, "statistics": False, **raw}
    cfg = EvaluatorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    model = CineEncoder(cfg)
    model.load_state_dict(ckpt["modules"]["model"])
    return model.to(device).eval().requires_grad_(False)
