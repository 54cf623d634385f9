"""VQ-GAN reconstruction quality on held-out subjects: PSNR / SSIM (MONAI, images in [0, 1], data_range 1).

    python benchmarks/vqgan_recon.py --run runs/tiny/vqgan [--cache data/cache/tiny] [--split holdout] [--out FILE]
                                     [--noise-free] [--continuous] [--rings]

Writes JSON (default <run>/recon_<split>.json) with the means, per-subject rows, the run's training step and the
machine, and prints a one-line summary. Goal for the tiny profile: PSNR >= 30 dB, SSIM >= 0.90.

--noise-free (phantom caches only): regenerates each subject without noise (same seed, SNR 1e6), prepares it like
the cache, maps it affinely onto the noisy cine's intensity scale (least squares: prepare scales each cine by its
own percentiles, which noise shifts), and adds PSNR(reconstruction, noise-free) and PSNR(noisy input, noise-free).
The latter is the noise floor: a VQ-GAN cannot reproduce the Rician noise of unseen subjects, so it bounds the
plain PSNR from above.
--continuous: adds the PSNR of decoding the unquantised encoder output; the gap is what the codebook costs.
--rings: adds the mean squared error in rings 4 pixels wide from the image edge inwards ("mse_rings", outermost
first), over subjects, slices and frames: where in the field of view the error sits (crop training, benchmarks/).
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from cardiolab.core import CardiolabError, from_record, machine_info, read_json, write_json
from cardiolab.engine import load_checkpoint
from cardiolab.profiles import get_profile
from cardiolab.metrics import fidelity
from cardiolab.tasks.vqgan import load, reconstruct, reconstruction_metrics

GOAL = {"PSNR": 30.0, "SSIM": 0.90}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two cines in [-1, 1]: `cardiolab.metrics.fidelity.psnr` (on [0, 1], data range 1)."""
    return float(fidelity.psnr(b, a)[0])


def noise_free(model, cache: Path, profile_name: str, ids: list[str]) -> dict:
    """Per subject: PSNR of the reconstruction and of the noisy input against the noise-free phantom."""
    from cardiolab.data.phantom import COHORT_FILE, make_subject
    from cardiolab.data.prepare import prepare_subject

    profile = get_profile(profile_name)
    d = profile.data
    stamp = profile.phantom_dir / COHORT_FILE
    seed = int(read_json(stamp).get("seed", 0)) if stamp.exists() else 0
    kw = dict(seed=seed, size=d.phantom_size, spacing=d.phantom_spacing, slices=d.phantom_slices,
              frames=d.phantom_frames)
    rows = {}
    for sid in ids:
        index = int(sid.removeprefix("patient")) - 1
        cached = torch.load(cache / "subjects" / f"{sid}.pt", weights_only=True)["image"]
        noisy = prepare_subject(make_subject(index, **kw)[0], profile)[0]["image"]
        if noisy.shape != cached.shape or (noisy - cached).abs().max() > 0.01:
            raise CardiolabError(f"{cache}: {sid} is not subject {index} of the {profile.name} phantom (seed {seed}); "
                                 "--noise-free needs the profile's own phantom cache")
        clean = prepare_subject(make_subject(index, snr=1e6, **kw)[0], profile)[0]["image"]
        # prepare scales each cine by its own percentiles, and noise moves them: match the intensity scale first
        A = torch.stack([clean.flatten(), torch.ones(clean.numel())], 1)
        a, b = torch.linalg.lstsq(A, cached.flatten()[:, None]).solution.flatten()
        clean = a * clean + b
        rows[sid] = {"psnr_vs_noise_free": psnr(reconstruct(model, cached[None])[0], clean),
                     "noise_floor_psnr": psnr(cached, clean)}
    return rows


@torch.no_grad()
def ring_mse(model, cache: Path, ids: list[str], width: int = 4) -> list[float]:
    """Mean squared reconstruction error in square rings `width` pixels wide, from the image edge inwards."""
    err = 0.0
    for sid in ids:
        x = torch.load(cache / "subjects" / f"{sid}.pt", weights_only=True)["image"][None]   # (1, D, H, W, T)
        err = err + ((reconstruct(model, x)[0] - x[0]) ** 2).mean(dim=(0, 3)) / len(ids)   # (H, W)
    h, w = err.shape
    rows, cols = torch.arange(h)[:, None], torch.arange(w)[None]
    ring = torch.minimum(torch.minimum(rows, h - 1 - rows), torch.minimum(cols, w - 1 - cols)) // width
    return [float(err[ring == r].mean()) for r in range(int(ring.max()) + 1)]


@torch.no_grad()
def continuous_psnr(model, cached: torch.Tensor) -> float:
    """PSNR of decoding the continuous encoder output (no codebook) of one cine (1, D, H, W, T)."""
    x = cached.permute(1, 0, 2, 3, 4)                                  # slices as the batch: (D, 1, H, W, T)
    return psnr(model.decode(model.encode(x)).clamp(-1, 1), x)


def main(args: argparse.Namespace) -> dict:
    run = Path(args.run)
    config = read_json(run / "config.json")
    cache = Path(args.cache or from_record(config.get("cache_dir")) or "")
    if not (cache / "manifest.json").exists():
        raise CardiolabError(f"{run / 'config.json'}: no usable cache_dir; pass --cache")
    model = load(run)
    t0 = time.perf_counter()
    result = reconstruction_metrics(model, cache, split=args.split)
    result.update({
        "run": str(run), "cache": str(cache), "step": int(load_checkpoint(run)["step"]),
        "profile": config.get("profile"), "goal": GOAL,
        "meets_goal": result["PSNR"] >= GOAL["PSNR"] and result["SSIM"] >= GOAL["SSIM"],
        "seconds": round(time.perf_counter() - t0, 2),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    **machine_info("cpu")},
        # what the run trained in (config.json of the engine) and on what, beside where it is evaluated
        "trained_precision": config.get("precision"), "trained_machine": config.get("machine"),
    })
    if args.noise_free:
        extra = noise_free(model, cache, config.get("profile", "tiny"), [r["id"] for r in result["subjects"]])
        for row in result["subjects"]:
            row.update(extra[row["id"]])
        for key in ("psnr_vs_noise_free", "noise_floor_psnr"):
            result[key] = sum(r[key] for r in result["subjects"]) / len(result["subjects"])
    if args.continuous:
        for row in result["subjects"]:
            image = torch.load(cache / "subjects" / f"{row['id']}.pt", weights_only=True)["image"][None]
            row["psnr_continuous"] = continuous_psnr(model, image)
        result["psnr_continuous"] = sum(r["psnr_continuous"] for r in result["subjects"]) / len(result["subjects"])
    if args.rings:
        result["mse_rings"] = ring_mse(model, cache, [r["id"] for r in result["subjects"]])
    out = Path(args.out) if args.out else run / f"recon_{args.split}.json"
    write_json(out, result)
    print(f"{run}: {result['n']} {args.split} subjects, PSNR {result['PSNR']:.2f} dB, SSIM {result['SSIM']:.4f} "
          f"(goal {GOAL['PSNR']} dB / {GOAL['SSIM']}: {'met' if result['meets_goal'] else 'not met'})"
          + (f"; vs noise-free PSNR {result['psnr_vs_noise_free']:.2f} dB, noise floor "
             f"{result['noise_floor_psnr']:.2f} dB" if args.noise_free else "")
          + (f"; unquantised {result['psnr_continuous']:.2f} dB" if args.continuous else "")
          + ("; MSE by ring from the edge " + " ".join(f"{v:.4f}" for v in result["mse_rings"]) if args.rings else "")
          + f" -> {out}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="VQ-GAN run folder (runs/<profile>/vqgan)")
    parser.add_argument("--cache", default=None, help="prepared cache (default: the run's config.json cache_dir)")
    parser.add_argument("--split", default="holdout", choices=["public", "private", "holdout"])
    parser.add_argument("--out", default=None, help="JSON output (default <run>/recon_<split>.json)")
    parser.add_argument("--noise-free", action="store_true",
                        help="phantom only: also PSNR against the noise-free phantom, and the noise floor")
    parser.add_argument("--rings", action="store_true",
                        help="also the MSE in 4-pixel rings from the image edge inwards (where the error sits)")
    parser.add_argument("--continuous", action="store_true",
                        help="also PSNR of decoding the unquantised encoder output (what the codebook costs)")
    try:
        main(parser.parse_args())
    except CardiolabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
