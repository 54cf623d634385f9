"""FD-cardiolab and KID-cardiolab: distribution distances on features of cardiolab's own frozen evaluator.

No ImageNet/Inception/LPIPS weights can be downloaded, so cardiolab trains its own encoder
(`cardiolab.models.evaluator.CineEncoder`, trained by `cardiolab.tasks.evaluator`) self-supervised with SimCLR's
NT-Xent loss under cine augmentations (intensity jitter, small shifts, flips, temporal roll), then freezes it.
SimCLR's temporal-roll invariance and the final pooling over T drop frame order, so the encoder also gets the
circular frame differences as input channels (motion made explicit), and a "shuffle and learn" pretext head
(Misra et al. 2016: is this slab ordered, frame-shuffled - anywhere from two frames to all of them - or
slice-reversed?) and a degradation head are trained beside it. The unit it embeds is a slab of adjacent slices
over all frames, (S, H, W, T), so a cohort of N cines of D slices gives N * (D - S + 1) feature vectors.

* FD-cardiolab: the Frechet distance between Gaussian fits of the two feature sets (MONAI `FIDMetric`).
  Like FID it is biased upwards for small sets, so two halves of one real set do not give exactly 0.
* KID-cardiolab: the unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / F + 1)^3 (Binkowski et al.
  2018). MONAI's `MMDMetric` has only the linear kernel and needs equal set sizes, so it is written here.
* Standard FID only when the user supplies a TorchScript 2D feature extractor (`fid_from_torchscript`).
* The features: the encoder's learned features (a degradation-strength head trained beside SimCLR asks them to
  move with noise, blur and shuffling) plus three image statistics no training can make invariant (log
  energies of the in-plane Laplacian, the frame difference and the slice difference; `CineEncoder.embed`).
* Small samples: FD between two same-distribution sets of a few cines is far from 0 (`fd_floor` measures it on
  two halves of the real set); KID comes with a 95 % interval; `prdc` gives precision / recall / density /
  coverage (Naeem et al. 2020), neighbourhood distances without FD's Gaussian fit.

`validate_features` checks that both distances rise with the strength of four degradations of a real set.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from monai.metrics import FIDMetric
from scipy.ndimage import gaussian_filter

from cardiolab.core import CardiolabError
from cardiolab.metrics.fidelity import as_cines, to_unit


# Degradation strengths, levels 1..4. Noise sigma is in [-1, 1] units, blur sigma in pixels (in-plane);
# temporal shuffle: the fraction of every cine's frames that leave their place (doubling per level: 75 % and
# 100 % of the frames moved are both a random order, which no feature told apart on 10-cine references);
# slice shuffle: the fraction of cines whose slice order is scrambled (no slice left in place).
DEGRADATIONS = {
    "noise": (0.05, 0.1, 0.2, 0.4),
    "blur": (0.75, 1.25, 2.0, 3.0),
    "temporal shuffle": (0.125, 0.25, 0.5, 1.0),
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
def features(model: torch.nn.Module, cines, batch_size: int = 64, per_cine: bool = False) -> torch.Tensor:
    """Features of the frozen evaluator.

    cines: (N, D, H, W, T) or (N, 1, D, H, W, T) in [-1, 1], or a list of (D, H, W, T) arrays
    (a folder: read it first with `cardiolab.data.cines.load_cines`).
    Returns (N * (D - S + 1), F) slab features, or (N, F) slab-averaged ones with per_cine=True.
    """
    x = as_cines(cines)
    model = model.eval()
    device = next(model.parameters()).device
    s = slabs(x, model.cfg.in_slices)
    out = torch.cat([model.embed(s[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(s), batch_size)])
    if per_cine:
        out = rearrange(out, "(n k) f -> n k f", n=x.shape[0]).mean(1)
    return out


# ---- distances ---------------------------------------------------------------------------------
def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of real (N, F) and fake (M, F) features (MONAI FIDMetric)."""
    if len(real) < 2 or len(fake) < 2:
        raise CardiolabError(f"Frechet distance needs >= 2 feature vectors per set, got {len(real)} and {len(fake)}")
    try:
        return float(FIDMetric()(torch.as_tensor(fake).double(), torch.as_tensor(real).double()))
    except np.linalg.LinAlgError:   # scipy >= 1.16 sqrtm raises on the singular covariances of few vectors
        return _frechet_psd(torch.as_tensor(real).double(), torch.as_tensor(fake).double())


def _frechet_psd(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The same distance without a matrix square root: with centred features A (n, F), B (m, F) and
    S1 = A^T A / (n-1), S2 = B^T B / (m-1), tr sqrt(S1 S2) is the sum of the singular values of
    A B^T / sqrt((n-1)(m-1)), an (n, m) matrix: exact for the singular covariances of few vectors."""
    A, B = real - real.mean(0), fake - fake.mean(0)
    n, m = len(A), len(B)
    cross = torch.linalg.svdvals(A @ B.T / ((n - 1) * (m - 1)) ** 0.5).sum()
    mean_term = (real.mean(0) - fake.mean(0)).square().sum()
    return float(mean_term + A.square().sum() / (n - 1) + B.square().sum() / (m - 1) - 2 * cross)


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


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict:
    """Precision, recall, density and coverage (Naeem et al. 2020) of fake (M, F) against real (N, F) features.

    Each point's ball reaches its k-th nearest neighbour in its own set (k shrinks to fit sets of a few cines).
    precision: share of fake points inside some real ball; recall: share of real points inside some fake ball;
    density: real balls holding a fake point, per fake point / k (1 when fake is distributed as real);
    coverage: share of real balls holding a fake point. Distances of neighbourhoods, not of Gaussian fits, so
    they do not inherit FD's small-sample bias; they are coarse (steps of 1/N) on a few cines.
    """
    real, fake = torch.as_tensor(real).double(), torch.as_tensor(fake).double()
    k = min(k, len(real) - 1, len(fake) - 1)
    if k < 1:
        raise CardiolabError(f"precision/recall need >= 2 feature vectors per set, got {len(real)} and {len(fake)}")
    radius = lambda x: torch.cdist(x, x).kthvalue(k + 1, dim=1).values   # noqa: E731  (index 0: the point itself)
    r_real, r_fake = radius(real), radius(fake)
    d = torch.cdist(real, fake)                                                   # (N, M)
    inside = d < r_real[:, None]
    return {"precision": float(inside.any(0).double().mean()),
            "recall": float((d < r_fake[None, :]).any(1).double().mean()),
            "density": float(inside.sum(0).double().mean() / k),
            "coverage": float((d.min(1).values < r_real).double().mean()), "prdc_k": k}


def distances(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> dict:
    """{"FD-cardiolab", "KID-cardiolab", "KID-cardiolab_std", "KID-cardiolab_ci95", "precision", "recall",
    "density", "coverage", "prdc_k", "n_real", "n_synthetic"} for two feature sets; the KID interval is
    +- 1.96 std (normal approximation over subsets)."""
    k, k_std = kid(real_feats, fake_feats)
    return {"FD-cardiolab": frechet_distance(real_feats, fake_feats), "KID-cardiolab": k, "KID-cardiolab_std": k_std,
            "KID-cardiolab_ci95": [k - 1.96 * k_std, k + 1.96 * k_std], **prdc(real_feats, fake_feats),
            "n_real": len(real_feats), "n_synthetic": len(fake_feats)}


def half_splits(n: int, splits: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`splits` random halves (a, b) of range(n): one split of a few cines is a lottery."""
    perms = [torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + i)) for i in range(splits)]
    return [(p[: n // 2], p[n // 2:]) for p in perms]


def fd_floor(feats: torch.Tensor, n_cines: int, splits: int = 3, seed: int = 0) -> dict:
    """FD between two halves of one set of cines: what FD-cardiolab reads for two same-distribution sets of
    n_cines / 2 cines (its small-sample bias; it is 0 only with infinitely many). feats: (n_cines * K, F) slab
    features in cine order (`features`). Returns {"mean", "values" (per split), "n_cines_per_half"}."""
    if n_cines < 4:
        raise CardiolabError(f"an FD floor needs >= 4 cines, got {n_cines}")
    per = rearrange(torch.as_tensor(feats), "(n k) f -> n k f", n=n_cines)
    flat = lambda idx: rearrange(per[idx], "n k f -> (n k) f")  # noqa: E731
    values = [frechet_distance(flat(a), flat(b)) for a, b in half_splits(n_cines, splits, seed)]
    return {"mean": float(np.mean(values)), "values": values, "n_cines_per_half": n_cines // 2}


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
    if kind == "temporal shuffle":   # at least level + 1 frames: the levels stay distinct on 8-frame cines
        strength = max(strength, (level + 1) / as_cines(cines).shape[-1])
    return corrupt(cines, kind, strength, torch.Generator().manual_seed(seed))


def corrupt(cines: torch.Tensor, kind: str, strength: float, g: torch.Generator | None = None) -> torch.Tensor:
    """cines (N, D, H, W, T) degraded by `kind` at any strength in DEGRADATIONS' units (0: unchanged); the one
    implementation behind the validation levels (`degrade`) and the evaluator's degradation training."""
    x = as_cines(cines).clone()
    if strength <= 0:
        return x
    if kind == "noise":
        return x + strength * torch.randn(x.shape, generator=g)
    if kind == "blur":
        return torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, strength, strength, 0), mode="nearest"))
    if kind == "slice shuffle":   # D is 4-6, too few slices for graded fractions: grade by cines instead
        for i in torch.randperm(len(x), generator=g)[: int(round(strength * len(x)))].tolist():
            x[i] = x[i][_derange(x.shape[1], g)]
        return x
    if kind != "temporal shuffle":
        raise CardiolabError(f"unknown degradation {kind!r}: choose one of {', '.join(DEGRADATIONS)}")
    T = x.shape[-1]
    moved = moved_frames(T, strength)
    orders = [torch.randperm(T, generator=g) for _ in range(len(x))]  # drawn first: same seed -> nested levels
    for i in range(len(x)):
        pos = orders[i][:moved]                              # these frames trade places, none stays put
        order = torch.arange(T)
        order[pos] = pos[_derange(moved, g)]
        x[i] = x[i][..., order]
    return x


def moved_frames(frames: int, strength: float) -> int:
    """How many of `frames` frames a temporal shuffle of this strength (a fraction) moves: at least two."""
    return min(frames, max(2, int(round(strength * frames))))


# ---- validation ---------------------------------------------------------------------------------
def validate_features(model: torch.nn.Module, cines, seed: int = 0, splits: int = 3) -> pd.DataFrame:
    """FD/KID between one random half of real cines (N, D, H, W, T) and the other half, clean (level 0) and
    at every degradation level, for `splits` random half splits (small cohorts make one split a lottery).

    Long format, one row per split x degradation x level: degradation, level, strength, split,
    FD-cardiolab, KID-cardiolab, KID-cardiolab_std, n_real, n_synthetic. Average over `split` to read it.
    """
    x = as_cines(cines)
    if len(x) < 4:
        raise CardiolabError(f"evaluator validation needs >= 4 real cines, got {len(x)}")
    rows = []
    for split, (ia, ib) in enumerate(half_splits(len(x), splits, seed)):
        a, b = x[ia], x[ib]
        fa = features(model, a)
        base = distances(fa, features(model, b))
        for kind, strengths in DEGRADATIONS.items():
            rows.append({"degradation": kind, "level": 0, "strength": 0.0, "split": split, **base})
            for level, strength in enumerate(strengths, 1):
                d = distances(fa, features(model, degrade(b, kind, level, seed=seed * 1000 + split)))
                rows.append({"degradation": kind, "level": level, "strength": strength, "split": split, **d})
    return pd.DataFrame(rows)


def validation_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over splits of FD/KID per degradation and level (rows of `validate_features`)."""
    return (df.groupby(["degradation", "level"], sort=False)[["FD-cardiolab", "KID-cardiolab"]]
              .agg(["mean", "std"]).round(5))


def is_monotonic(df: pd.DataFrame, metric: str = "FD-cardiolab") -> dict[str, bool]:
    """{degradation: the mean over splits of `metric` strictly rises with level (level 0 = clean halves)}."""
    means = df.groupby(["degradation", "level"], sort=False)[metric].mean()
    return {k: bool(np.all(np.diff(means[k].sort_index().to_numpy()) > 0)) for k in df.degradation.unique()}
