"""Peak memory of one DiT-S training step at the full profile's latent, with and without gradient checkpointing.

    OMP_NUM_THREADS=1 python benchmarks/dit_memory.py --json runs/bench/dit_memory.json

DiT-S (hidden 768, depth 8, 12 heads) on 6 x 64 x 64 x 8 latents with C_z = 8 and patch (1, 4, 4, 2): 6144 tokens,
batch 1. Each configuration runs in a fresh process (see cardiolab.bench.speed); on a CPU one step takes minutes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cardiolab.bench.speed import DiTBench, bench_dit, in_fresh_process

FULL_S = dict(input_size=(6, 64, 64, 8), patch=(1, 4, 4, 2), channels=8, hidden=768, depth=8, heads=12, batch=1,
              steps=1, warmup=0)


def main(args) -> dict:
    rows = {}
    for ckpt in (False, True):
        b = DiTBench(**FULL_S, checkpointing=ckpt, precision=args.precision, device=args.device)
        rows["checkpointing" if ckpt else "plain"] = in_fresh_process(bench_dit, b, timeout=args.timeout)
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    result = main(a)
    print("| gradient checkpointing | peak memory (GB) | step (s) | device |\n|---|---|---|---|")
    for name, r in result.items():
        print(f"| {name} | {r['peak_mem_bytes'] / 1e9:.2f} | {r['step_s']:.1f} | {r['device']} |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
