"""VQ-GAN reconstruction quality on held-out subjects: PSNR / SSIM (MONAI, images in [0, 1], data_range 1).

    python benchmarks/vqgan_recon.py --run runs/tiny/vqgan [--cache data/cache/tiny] [--split holdout] [--out FILE]

Writes JSON (default <run>/recon_<split>.json) with the means, per-subject rows, the run's training step and the
machine, and prints a one-line summary. Goal for the tiny profile: PSNR >= 30 dB, SSIM >= 0.90.
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from cardiolab.core import CardiolabError, read_json, write_json
from cardiolab.engine import load_checkpoint
from cardiolab.tasks.vqgan import load, reconstruction_metrics

GOAL = {"psnr": 30.0, "ssim": 0.90}


def main(args: argparse.Namespace) -> dict:
    run = Path(args.run)
    config = read_json(run / "config.json")
    cache = Path(args.cache or config.get("cache_dir") or "")
    if not (cache / "manifest.json").exists():
        raise CardiolabError(f"{run / 'config.json'}: no usable cache_dir; pass --cache")
    model = load(run)
    t0 = time.perf_counter()
    result = reconstruction_metrics(model, cache, split=args.split)
    result.update({
        "run": str(run), "cache": str(cache), "step": int(load_checkpoint(run)["step"]),
        "profile": config.get("profile"), "goal": GOAL,
        "meets_goal": result["psnr"] >= GOAL["psnr"] and result["ssim"] >= GOAL["ssim"],
        "seconds": round(time.perf_counter() - t0, 2),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
    })
    out = Path(args.out) if args.out else run / f"recon_{args.split}.json"
    write_json(out, result)
    print(f"{run}: {result['n']} {args.split} subjects, PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} "
          f"(goal {GOAL['psnr']} dB / {GOAL['ssim']}: {'met' if result['meets_goal'] else 'not met'}) -> {out}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="VQ-GAN run folder (runs/<profile>/vqgan)")
    parser.add_argument("--cache", default=None, help="prepared cache (default: the run's config.json cache_dir)")
    parser.add_argument("--split", default="holdout", choices=["public", "private", "holdout"])
    parser.add_argument("--out", default=None, help="JSON output (default <run>/recon_<split>.json)")
    try:
        main(parser.parse_args())
    except CardiolabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
