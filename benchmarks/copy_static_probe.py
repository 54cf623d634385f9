"""Does a static-anatomy channel separate copies the cine channel misses? A probe with pixel embeddings only.

    CARDIOLAB_ROOT=ROOT python benchmarks/copy_static_probe.py --profile tiny [--seed 301] [--copies 16]
        [--n-fresh 64] [--out static_probe.json]

ROOT holds the profile's phantom, cache and trained VQ-GAN. For each copy family (exact, vqgan, blur, mixed,
rotation, zoom: `privacy.plant`) `--copies` training cines are copied; `--n-fresh` fresh phantoms (their own seed)
are the non-members. Every side goes through the audit's label-free path, `align_cines` and the `central` window,
then one embedding: the cine itself (pooled to a g x g grid per plane), its temporal mean (the static anatomy),
each optionally blurred in-plane (sigma px). Printed per embedding: the 5th percentile of the fresh phantoms'
nearest-training correlation distances, and per family the median copy distance and the share of copies below that
percentile (recall at a 5 % FPR of these fresh phantoms, no conformal margin). JSON with the same to --out.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from cardiolab.data.cines import align_cines
from cardiolab.privacy import audit
from cardiolab.privacy.copies import correlation_distance
from cardiolab.privacy.embeddings import central, pixel_embeddings
from cardiolab.privacy.plant import apply_transform, draw_transform, family_transforms
from cardiolab.profiles import get_profile
from cardiolab.tasks.copy_detector import _blur

FAMILIES = ("exact", "vqgan", "blur", "mixed", "rotation", "zoom")
EMBEDDINGS = {"cine g16": (False, 16, 0), "cine g16 s2": (False, 16, 2), "cine g8 s2": (False, 8, 2),
              "static g32 s1": (True, 32, 1), "static g16": (True, 16, 0), "static g16 s2": (True, 16, 2),
              "static g8": (True, 8, 0)}


def embed(x: torch.Tensor, static: bool, grid: int, sigma: float) -> np.ndarray:
    a = central(align_cines(x))
    a = _blur(a, torch.full((a.shape[0],), float(sigma))) if sigma else a
    return pixel_embeddings(a.mean(-1, keepdim=True) if static else a, grid=grid).numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="tiny")
    p.add_argument("--seed", type=int, default=301)
    p.add_argument("--copies", type=int, default=16)
    p.add_argument("--n-fresh", type=int, default=64)
    p.add_argument("--out", default="static_probe.json")
    args = p.parse_args(argv)
    profile = get_profile(args.profile)
    _, train = audit._cines(None, profile, audit.TRAIN_SPLITS)
    fresh = audit.fresh_cines(profile, args.n_fresh, seed=args.seed)
    round_trip, rng = audit._round_trip(profile, None), np.random.default_rng(args.seed)
    copies = {}
    for f in FAMILIES:
        src = rng.integers(len(train), size=args.copies)
        copies[f] = torch.stack([apply_transform(train[j], {} if f == "exact" else draw_transform(
            rng, family_transforms(f), train.shape[-1]), None, round_trip)[0] for j in src])
    out = {}
    for name, how in EMBEDDINGS.items():
        reference = embed(train, *how)
        p5 = float(np.quantile(correlation_distance(embed(fresh, *how), reference).min(1), 0.05))
        row = {"fresh p5": p5}
        for f, x in copies.items():
            d = correlation_distance(embed(x, *how), reference).min(1)
            row[f] = {"median": float(np.median(d)), "below fresh p5 %": float(100 * (d < p5).mean())}
        out[name] = row
        print(f"{name:14s} fresh p5 {p5:.4f} | "
              + " ".join(f"{f} {row[f]['median']:.4f} / {row[f]['below fresh p5 %']:.0f} %" for f in FAMILIES))
    with open(args.out, "w") as fh:
        json.dump({"profile": profile.name, "seed": args.seed, "copies": args.copies, "n_fresh": args.n_fresh,
                   "rows": out}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
