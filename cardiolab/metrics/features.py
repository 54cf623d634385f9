"""FD-cardiolab and KID-cardiolab: distribution distances on features of cardiolab's own frozen evaluator.

No ImageNet/Inception/LPIPS weights can be downloaded, so cardiolab trains its own encoder
(`cardiolab.models.evaluator.CineEncoder`) self-supervised with SimCLR's NT-Xent loss (MONAI
`ContrastiveLoss`) under cine augmentations (intensity jitter, small shifts, flips, temporal roll), through
the one engine, then freezes it. SimCLR's temporal-roll invariance and the final pooling over T drop frame
order, so the encoder also gets the circular frame differences as input channels (motion made explicit) and
a "shuffle and learn" pretext head (Misra et al. 2016: is this slab ordered, frame-shuffled - anywhere from
two frames to all of them - or slice-reversed?) is trained beside it; so the shuffle degradations of
`validate_evaluator` are related to a training task, while noise and blur are never seen in training. The
unit it embeds is a slab of adjacent slices over all frames, (S, H, W, T), so a cohort of N cines of D
slices gives N * (D - S + 1) feature vectors.

* FD-cardiolab: the Frechet distance between Gaussian fits of the two feature sets (MONAI `FIDMetric`).
  Like FID it is biased upwards for small sets, so two halves of one real set do not give exactly 0.
* KID-cardiolab: the unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / F + 1)^3 (Binkowski et al.
  2018). MONAI's `MMDMetric` has only the linear kernel and needs equal set sizes, so it is written here.
* Standard FID only when the user supplies a TorchScript 2D feature extractor (`fid_from_torchscript`).

`validate_evaluator` checks that both distances rise with the strength of four degradations of a real set.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from einops import rearrange
from monai.metrics import FIDMetric
from scipy.ndimage import gaussian_filter

from cardiolab.core import CardiolabError, seed_everything
from cardiolab.metrics.fidelity import as_cines, to_unit
from cardiolab.models.evaluator import CineEncoder, EvaluatorConfig
from cardiolab.profiles import Profile

log = logging.getLogger(__name__)

RUN_NAME = "evaluator"          # runs/<profile>/evaluator
TEMPERATURE = 0.5               # NT-Xent temperature (SimCLR's CIFAR setting; small batches here)
ORDER_WEIGHT = 1.0              # weight of the order pretext loss beside NT-Xent
LR = 3e-4                       # 1e-3 collapsed NT-Xent to chance on phantom-like data

# Degradation strengths, levels 1..4. Noise sigma is in [-1, 1] units, blur sigma in pixels (in-plane);
# temporal shuffle: the fraction of every cine's frames that leave their place; slice shuffle: the fraction
# of cines whose slice order is scrambled (no slice left in place).
DEGRADATIONS = {
    "noise": (0.05, 0.1, 0.2, 0.4),
    "blur": (0.75, 1.25, 2.0, 3.0),
    "temporal shuffle": (0.25, 0.5, 0.75, 1.0),
    "slice shuffle": (0.25, 0.5, 0.75, 1.0),
}


# ---- features ----------------------------------------------------------------------------------
def slabs(cines: torch.Tensor, in_slices: int) -> torch.Tensor:
    """cines: (N, D, H, W, T) -> every slab of `in_slices` adjacent slices, (N * (D - S + 1), S, H, W, T)."""
    n, d = cines.shape[:2]
    if d < in_slices:  # a single-slice cohort: repeat the slice so the encoder still runs
        cines = cines.repeat_interleave(in_slices, dim=1)[:, :max(d, in_slices)]
        d = cines.shape[1]
    windows = cines.unfold(1, in_slices, 1)                       # (N, D-S+1, H, W, T, S)
    return rearrange(windows, "n k h w t s -> (n k) s h w t").contiguous()


@torch.no_grad()
def features(model: CineEncoder, cines, batch_size: int = 64, per_cine: bool = False) -> torch.Tensor:
    """Features of the frozen evaluator.

    cines: (N, D, H, W, T) or (N, 1, D, H, W, T) in [-1, 1], a list of (D, H, W, T) arrays, or a cohort
    folder / prepared cache (read with `cardiolab.evaluate.load_cines`, which needs the profile geometry).
    Returns (N * (D - S + 1), F) slab features, or (N, F) slab-averaged ones with per_cine=True.
    """
    if isinstance(cines, (str, os.PathLike)):
        from cardiolab.evaluate import load_cines
        cines = load_cines(cines).images
    x = as_cines(cines)
    model = model.eval()
    device = next(model.parameters()).device
    s = slabs(x, model.cfg.in_slices)
    out = torch.cat([model(s[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(s), batch_size)])
    if per_cine:
        out = rearrange(out, "(n k) f -> n k f", n=x.shape[0]).mean(1)
    return out


# ---- distances ---------------------------------------------------------------------------------
def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of real (N, F) and fake (M, F) features (MONAI FIDMetric)."""
    if len(real) < 2 or len(fake) < 2:
        raise CardiolabError(f"Frechet distance needs >= 2 feature vectors per set, got {len(real)} and {len(fake)}")
    return float(FIDMetric()(torch.as_tensor(fake).double(), torch.as_tensor(real).double()))


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with the KID polynomial kernel; x (m, F), y (n, F)."""
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise CardiolabError(f"KID needs >= 2 feature vectors per set, got {m} and {n}")
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 20, seed: int = 0) -> tuple[float, float]:
    """KID-cardiolab: (unbiased MMD^2 on the full sets, std over `subsets` random half-size subsets)."""
    value = mmd2_unbiased(real, fake)
    g = torch.Generator().manual_seed(seed)
    k = min(len(real), len(fake)) // 2
    if k < 2:
        return value, float("nan")
    draws = [mmd2_unbiased(real[torch.randperm(len(real), generator=g)[:k]],
                           fake[torch.randperm(len(fake), generator=g)[:k]]) for _ in range(subsets)]
    return value, float(np.std(draws) / np.sqrt(2))  # half-size subsets: sd of the full-set estimate ~ sd / sqrt(2)


def distances(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> dict:
    """{"FD-cardiolab", "KID-cardiolab", "KID-cardiolab_std", "n_real", "n_synthetic"} for two feature sets."""
    k, k_std = kid(real_feats, fake_feats)
    return {"FD-cardiolab": frechet_distance(real_feats, fake_feats), "KID-cardiolab": k, "KID-cardiolab_std": k_std,
            "n_real": len(real_feats), "n_synthetic": len(fake_feats)}


@torch.no_grad()
def fid_from_torchscript(real, fake, weights: str | os.PathLike, batch_size: int = 64) -> float:
    """Standard FID with a user-supplied TorchScript 2D feature extractor (e.g. an Inception exported locally).

    Every frame of every slice is one image: (H, W) in [0, 1] replicated to 3 channels, (B, 3, H, W); put
    any resizing / normalisation your network expects inside the TorchScript module. A 4D output is
    average-pooled to (B, F).
    """
    path = Path(weights)
    if not path.is_file():
        raise CardiolabError(f"{path}: --fid-weights file not found")
    try:
        net = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # not a TorchScript archive
        raise CardiolabError(f"{path}: not a TorchScript model ({type(e).__name__}: {e})") from None

    def embed(x) -> torch.Tensor:
        frames = rearrange(to_unit(as_cines(x)), "n d h w t -> (n d t) 1 h w").expand(-1, 3, -1, -1)
        outs = []
        for i in range(0, len(frames), batch_size):
            f = net(frames[i:i + batch_size].contiguous())
            outs.append(f.flatten(2).mean(2) if f.ndim == 4 else f.flatten(1))
        return torch.cat(outs).double()

    return frechet_distance(embed(real), embed(fake))


# ---- degradations for validation ----------------------------------------------------------------
def _derange(n: int, g: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation with no fixed point (n >= 2): a cyclic shift along a random order."""
    order = torch.randperm(n, generator=g)
    out = torch.empty(n, dtype=torch.long)
    out[order] = order.roll(1)
    return out


def degrade(cines: torch.Tensor, kind: str, level: int, seed: int = 0) -> torch.Tensor:
    """A degraded copy of cines (N, D, H, W, T) at strength `level` (1..4) of DEGRADATIONS[kind].

    With one seed for all levels the random draws are shared (the same noise field scaled, the frames and
    cines of level k also hit at level k + 1), so the levels differ in strength, not in luck.
    """
    if kind not in DEGRADATIONS:
        raise CardiolabError(f"unknown degradation {kind!r}: choose one of {', '.join(DEGRADATIONS)}")
    strength = DEGRADATIONS[kind][level - 1]
    g = torch.Generator().manual_seed(seed)
    x = as_cines(cines).clone()
    if kind == "noise":
        return x + strength * torch.randn(x.shape, generator=g)
    if kind == "blur":
        return torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, strength, strength, 0), mode="nearest"))
    if kind == "slice shuffle":   # D is 4-6, too few slices for graded fractions: grade by cines instead
        for i in torch.randperm(len(x), generator=g)[: int(round(strength * len(x)))].tolist():
            x[i] = x[i][_derange(x.shape[1], g)]
        return x
    T = x.shape[-1]
    moved = min(T, max(2, int(round(strength * T))))
    orders = [torch.randperm(T, generator=g) for _ in range(len(x))]  # drawn first: same seed -> nested levels
    for i in range(len(x)):
        pos = orders[i][:moved]                              # these frames trade places, none stays put
        order = torch.arange(T)
        order[pos] = pos[_derange(moved, g)]
        x[i] = x[i][..., order]
    return x


# ---- training -----------------------------------------------------------------------------------
def evaluator_config(profile: Profile) -> EvaluatorConfig:
    return EvaluatorConfig(feature_dim=profile.eval.feature_dim, proj_dim=profile.eval.feature_dim)


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


def _random_slab(image: torch.Tensor, in_slices: int) -> torch.Tensor:
    """image: (B, 1, D, H, W, T) -> one random slab per cine, (B, S, H, W, T)."""
    image = image[:, 0]
    b, d = image.shape[:2]
    if d < in_slices:
        image, d = image.repeat_interleave(in_slices, dim=1), d * in_slices
    start = torch.randint(0, d - in_slices + 1, (b,))
    return torch.stack([image[i, s:s + in_slices] for i, s in enumerate(start.tolist())])


def train_evaluator(profile: Profile, out: str | os.PathLike | None = None, resume: bool = False,
                    seed: int = 0, cache_dir: str | os.PathLike | None = None, steps: int | None = None) -> Path:
    """SimCLR + order training of the evaluator on the public + private splits of the prepared cache.

    cache_dir: default the profile's (built if missing); steps: default profile.eval.feature_steps.
    Returns the run folder (default runs/<profile>/evaluator).
    """
    from monai.losses import ContrastiveLoss

    from cardiolab.data.datasets import CineDataset, load_manifest
    from cardiolab.data.prepare import ensure_prepared
    from cardiolab.engine import TrainConfig, Trainer

    out = Path(out or profile.run_dir / RUN_NAME)
    cache = Path(cache_dir) if cache_dir is not None else ensure_prepared(profile)
    steps = steps or profile.eval.feature_steps
    splits = load_manifest(cache)["splits"]
    data = CineDataset(cache, split=splits["public"] + splits["private"], mode="volume")
    seed_everything(seed)
    cfg = evaluator_config(profile)
    model = CineEncoder(cfg)
    batch = profile.eval.feature_batch
    train_cfg = TrainConfig(steps=steps, batch_size=min(batch, len(data)), lr=LR, warmup=max(1, steps // 20),
                            ckpt_every=200, seed=seed, device=profile.device)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=1e-4)
    loss_fn = ContrastiveLoss(temperature=TEMPERATURE)

    def step_fn(batch, step, tr):
        slab = _random_slab(batch["image"], cfg.in_slices)
        scrambled, order = scramble(slab)
        with tr.autocast():
            net = tr.modules["model"]
            (z1, z2), (logits,) = _heads(net, [augment(slab), augment(slab)], [augment(scrambled)])
            contrastive = loss_fn(z1.float(), z2.float())
            order_loss = F.cross_entropy(logits.float(), order.to(logits.device))
            loss = contrastive + ORDER_WEIGHT * order_loss
        tr.backward(loss, "model")
        return {"loss": loss.item(), "nt_xent": contrastive.item(), "order": order_loss.item()}

    config = {"evaluator": dataclasses.asdict(cfg), "profile": profile.name, "cache": str(cache),
              "n_train": len(data), "temperature": TEMPERATURE}
    Trainer(out, train_cfg, modules={"model": model}, optimizers={"model": opt}, config=config).fit(
        data, step_fn, resume=resume)
    return out


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


def _heads(net: torch.nn.Module, project: list, classify: list) -> tuple[list, list]:
    """One encoder pass over all views (one DDP forward), split into SimCLR projections and order logits."""
    from cardiolab.engine import unwrap
    feats = net(torch.cat(project + classify)).split([len(v) for v in project + classify])
    raw = unwrap(net)
    return [raw.proj(f) for f in feats[:len(project)]], [raw.order_head(f) for f in feats[len(project):]]


def ensure_evaluator(profile: Profile) -> Path:
    """The trained evaluator's run folder (runs/<profile>/evaluator), training it first if unfinished or if
    it was trained with another evaluator config."""
    from cardiolab.engine import run_status
    out = profile.run_dir / RUN_NAME
    status = run_status(out, profile.eval.feature_steps, {"evaluator": dataclasses.asdict(evaluator_config(profile))})
    if status != "finished":
        log.info("training the feature evaluator -> %s", out)
        train_evaluator(profile, out, resume=status == "partial")
    return out


def load_evaluator(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> CineEncoder:
    """The frozen evaluator from a run folder (or checkpoint path), in eval mode."""
    from cardiolab.engine import load_checkpoint
    ckpt = load_checkpoint(run_dir)
    raw = ckpt["config"].get("evaluator")
    if raw is None:
        raise CardiolabError(f"{run_dir}: not an evaluator checkpoint (no 'evaluator' config)")
    raw = {"motion": False, **raw}  # checkpoints from before the frame-difference channels
    cfg = EvaluatorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    model = CineEncoder(cfg)
    model.load_state_dict(ckpt["modules"]["model"])
    return model.to(device).eval().requires_grad_(False)


# ---- validation ---------------------------------------------------------------------------------
def validate_features(model: CineEncoder, cines, seed: int = 0, splits: int = 3) -> pd.DataFrame:
    """FD/KID between one random half of real cines (N, D, H, W, T) and the other half, clean (level 0) and
    at every degradation level, for `splits` random half splits (small cohorts make one split a lottery).

    Long format, one row per split x degradation x level: degradation, level, strength, split,
    FD-cardiolab, KID-cardiolab, KID-cardiolab_std, n_real, n_synthetic. Average over `split` to read it.
    """
    x = as_cines(cines)
    if len(x) < 4:
        raise CardiolabError(f"evaluator validation needs >= 4 real cines, got {len(x)}")
    rows = []
    for split in range(splits):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1000 + split))
        a, b = x[perm[: len(x) // 2]], x[perm[len(x) // 2:]]
        fa = features(model, a)
        base = distances(fa, features(model, b))
        for kind, strengths in DEGRADATIONS.items():
            rows.append({"degradation": kind, "level": 0, "strength": 0.0, "split": split, **base})
            for level, strength in enumerate(strengths, 1):
                d = distances(fa, features(model, degrade(b, kind, level, seed=seed * 1000 + split)))
                rows.append({"degradation": kind, "level": level, "strength": strength, "split": split, **d})
    return pd.DataFrame(rows)


def validate_evaluator(profile: Profile, seed: int = 0) -> pd.DataFrame:
    """`validate_features` of the profile's trained evaluator on every cine of the prepared cache;
    also writes runs/<profile>/eval/evaluator_validation.csv and figures/evaluator_validation.png."""
    from cardiolab.data.prepare import ensure_prepared
    from cardiolab.evaluate import load_cines
    from cardiolab.plots import save_figure
    from cardiolab.report import save_table

    model = load_evaluator(ensure_evaluator(profile))
    df = validate_features(model, load_cines(ensure_prepared(profile), profile).images, seed=seed)
    save_table(df, profile.run_dir / "eval" / "evaluator_validation.csv")
    save_figure(plot_validation(df), profile.run_dir / "figures" / "evaluator_validation.png")
    return df


def validation_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over splits of FD/KID per degradation and level (rows of `validate_features`)."""
    return (df.groupby(["degradation", "level"], sort=False)[["FD-cardiolab", "KID-cardiolab"]]
              .agg(["mean", "std"]).round(5))


def is_monotonic(df: pd.DataFrame, metric: str = "FD-cardiolab") -> dict[str, bool]:
    """{degradation: the mean over splits of `metric` strictly rises with level (level 0 = clean halves)}."""
    means = df.groupby(["degradation", "level"], sort=False)[metric].mean()
    return {k: bool(np.all(np.diff(means[k].sort_index().to_numpy()) > 0)) for k in df.degradation.unique()}


def plot_validation(df: pd.DataFrame):
    """Two panels (FD, KID), one line per degradation against its level (mean over the half splits; symlog y)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("FD-cardiolab", "KID-cardiolab")):
        sns.lineplot(data=df, x="level", y=metric, hue="degradation", marker="o", errorbar=None, ax=ax)
        ax.set_xticks(range(int(df.level.max()) + 1))
        ax.set_xlabel("degradation level (0 = two clean halves)")
        ax.set_yscale("symlog", linthresh=0.1 if metric.startswith("FD") else 0.01)  # shuffles dwarf the rest
        ax.set_title(f"{metric} vs degradation")
    fig.tight_layout()
    return fig
