"""Copies made by a tool the copy audit never saw: recall and false-positive rate of `audit copies` on them.

    python benchmarks/copy_outside_tool.py --profile tiny --train CACHE --holdout CACHE --out OUT \
        [--seeds 31,32] [--n-fresh 64] [--detector RUN]

`audit plant` and the copy detector's augmentations are cardiolab's own code; an auditor would rather check the
audit with copies from elsewhere. This script is that elsewhere, written apart from both: every copy of a training
cine (label-free, at profile geometry) is changed by scipy.ndimage alone, several changes at once, each with
probability 0.7:

* one in-plane affine map (rotation <= 10 degrees, zoom 0.9-1.1, shift <= 4 px per axis, sub-pixel) resampled with
  cubic splines (`ndimage.affine_transform`, order 3; what leaves the field of view is the background -1), about
  the image centre;
* a circular phase roll of up to a quarter beat, fractional, by a Fourier shift along the frames
  (`ndimage.fourier_shift`);
* gamma 0.8-1.25 and a gain 0.85-1.15 around the background;
* a 3 x 3 binomial blur (`ndimage.convolve`) and Gaussian noise of 2-5 % of the [-1, 1] range.

The cohort (32 copies + `--n-fresh` fresh phantoms with their own seed, planted.json beside it) is written with the
one cohort writer and audited with `privacy.audit.audit_copies` and the copy detector (default the profile's run).
One line per seed and OUT/outside.json: {seeds, rows: [{seed, recall, recall_matched, fpr, fpr_bound, threshold}]}.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from cardiolab.core import CardiolabError, write_json

FRESH_OFFSET = 200          # fresh phantom seed of cohort s: 200 + s (neither training, calibration nor audit families)


def outside_copy(cine: np.ndarray, rng: np.random.Generator, p: float = 0.7) -> tuple[np.ndarray, dict]:
    """One cine (D, H, W, T) in [-1, 1] changed by scipy.ndimage (module docstring); returns it and what was drawn."""
    D, H, W, T = cine.shape
    on = lambda: bool(rng.random() < p)                                    # noqa: E731
    t = {"rotation_deg": rng.uniform(-10, 10) if on() else 0.0, "zoom": rng.uniform(0.9, 1.1) if on() else 1.0,
         "shift_px": list(rng.uniform(-4, 4, 2)) if on() else [0.0, 0.0],
         "roll_frames": rng.uniform(-T / 4, T / 4) if on() else 0.0, "gamma": rng.uniform(0.8, 1.25) if on() else 1.0,
         "gain": rng.uniform(0.85, 1.15) if on() else 1.0, "blur": on(), "noise": rng.uniform(0.02, 0.05) if on() else 0}
    a = math.radians(t["rotation_deg"])
    m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) / t["zoom"]   # output -> input
    centre = np.array([(H - 1) / 2, (W - 1) / 2])
    offset = centre - m @ (centre + np.array(t["shift_px"]))
    x = cine.astype(np.float64) + 1.0                                      # background 0 while resampling
    x = np.stack([np.stack([ndimage.affine_transform(x[d, :, :, k], m, offset, order=3, mode="constant", cval=0.0)
                            for k in range(T)], -1) for d in range(D)])
    if t["roll_frames"]:
        spectrum = np.fft.fft(x, axis=-1)                                  # frames only: (0, 0, 0, roll)
        x = np.real(np.fft.ifft(ndimage.fourier_shift(spectrum, (0, 0, 0, t["roll_frames"])), axis=-1))
    x = np.clip(x / 2.0, 0.0, 1.0) ** t["gamma"] * 2.0 * t["gain"]
    if t["blur"]:
        k = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
        x = ndimage.convolve(x, k[None, :, :, None], mode="nearest")
    x = x - 1.0 + t["noise"] * rng.standard_normal(x.shape)
    return np.clip(x, -1.0, 1.0).astype(np.float32), {k: (float(v) if not isinstance(v, list) else v)
                                                       for k, v in t.items()}


def main(args: argparse.Namespace) -> dict:
    import torch

    from cardiolab.privacy import audit
    from cardiolab.privacy.plant import PlantedCohort, write_planted
    from cardiolab.profiles import get_profile

    profile = get_profile(args.profile)
    train_ids, train = audit._cines(args.train, profile, audit.TRAIN_SPLITS)
    rows = []
    for s in args.seeds:
        rng = np.random.default_rng(s)
        made = [outside_copy(c.numpy(), rng) for c in train]
        fresh = audit.fresh_cines(profile, args.n_fresh, FRESH_OFFSET + s)
        images = torch.cat([torch.from_numpy(np.stack([m[0] for m in made])), fresh.float()])
        order = rng.permutation(len(images))
        sources = list(train_ids) + [None] * len(fresh)
        ids = [f"other{k + 1:04d}" for k in range(len(images))]
        cohort = PlantedCohort(images=images[order], ids=ids, planted={ids[k]: sources[i] for k, i in enumerate(order)},
                               transforms={ids[k]: made[i][1] for k, i in enumerate(order) if i < len(made)})
        folder = write_planted(args.out / f"outside-{s}", cohort, (profile.data.spacing,) * 2 + (10.0,), 30.0,
                               profile.data.frames // 3)
        r = audit.audit_copies(folder, profile, args.train, args.holdout, embedding="copy-detector",
                               detector=args.detector, out_json=args.out / f"outside-{s}.json")
        p, c = r["planted"], r["calibration"]
        rows.append({"seed": s, "fresh_seed": FRESH_OFFSET + s, "recall": p["recall"],
                     "recall_matched": p["recall_matched"], "fpr": p["fpr"], "fpr_bound": c["fpr_bound"],
                     "threshold": r["threshold"], "n_planted": p["n_planted"], "n_fresh": p["n_fresh"]})
        print(f"seed {s}: recall {p['recall']:.1f} % (right subject {p['recall_matched']:.1f} %), FPR {p['fpr']:.1f} % "
              f"of {p['n_fresh']} fresh, tau {r['threshold']:.3f} (FPR bound {c['fpr_bound']:.1f} %)")
    result = {"profile": profile.name, "detector": str(args.detector or profile.run("copy-detector")), "rows": rows}
    write_json(args.out / "outside.json", result)
    return result


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="tiny")
    p.add_argument("--train", type=Path, default=None, help="training cache (default: the profile's)")
    p.add_argument("--holdout", type=Path, default=None, help="holdout cache (default: the profile's)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[31, 32])
    p.add_argument("--n-fresh", type=int, default=64)
    p.add_argument("--detector", type=Path, default=None, help="copy-detector run (default runs/<profile>/...)")
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    try:
        main(parse())
    except CardiolabError as e:
        sys.exit(f"error: {e}")
