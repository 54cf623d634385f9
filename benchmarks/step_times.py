"""Seconds per training step of model variants, interleaved round by round in one process (ratios on a busy CPU).

    OMP_NUM_THREADS=1 python benchmarks/step_times.py --precision fp32 --rounds 5 \
        --variant "full=vqgan" --variant "crop32=vqgan;vqgan.crop=32,32,0" --variant "cl=vqgan;channels_last" ...

A variant is NAME=MODEL[;override;...] with MODEL one of benchmarks/profile_steps.py's cases (vqgan, vqgan+disc,
dit, segmenter, evaluator) and overrides "section.field=value" on the profile, or `channels_last` (modules and
inputs in channels-last memory format). Each round runs one step of every variant in turn, so load from other
processes hits them alike; the median per variant is reported with its ratio to the first variant.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_steps import CASES, PRECISION  # noqa: E402

from cardiolab.core import machine_info, seed_everything, write_json  # noqa: E402
from cardiolab.engine import Trainer, TrainConfig  # noqa: E402
from cardiolab.profiles import get_profile, override  # noqa: E402


def _channels_last(t):
    if isinstance(t, torch.Tensor) and t.ndim in (4, 5) and t.is_floating_point():
        return t.contiguous(memory_format=torch.channels_last if t.ndim == 4 else torch.channels_last_3d)
    return t


def build(spec: str, profile: str, amp: str, tmp: Path):
    name, _, rest = spec.partition("=")
    model, *opts = rest.split(";")
    cl = "channels_last" in opts
    p = override(get_profile(profile), [o for o in opts if o and o != "channels_last"])
    seed_everything(0)
    modules, opts_, step_fn, batch, step, n = CASES[model](p, amp)
    if cl:
        modules = {k: m.to(memory_format=torch.channels_last_3d if model.startswith("vqgan") or model == "evaluator"
                             else torch.channels_last) for k, m in modules.items()}
        batch = {k: _channels_last(v) for k, v in batch.items()}
    tr = Trainer(tmp / name, TrainConfig(steps=1, amp=amp, device="cpu"), modules=modules, optimizers=opts_)
    for m in tr.modules.values():
        m.train()
    return name, (lambda: step_fn(batch, step, tr)), n


def main(args: argparse.Namespace) -> dict:
    amp = PRECISION[args.precision]
    with tempfile.TemporaryDirectory() as tmp:
        variants = [build(v, args.profile, amp, Path(tmp)) for v in args.variant]
        times = {name: [] for name, _, _ in variants}
        for r in range(args.warmup + args.rounds):
            for name, fn, _ in variants:
                t0 = time.perf_counter()
                fn()
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[variants[0][0]])
    rows = [{"variant": spec, "batch": n, "s_per_step": statistics.median(times[name]),
             "ratio": statistics.median(times[name]) / base, "times": times[name]}
            for spec, (name, _, n) in zip(args.variant, variants)]
    for r in rows:
        print(f"{r['s_per_step']:8.3f} s  {r['ratio']:6.3f}x  {r['variant']}")
    out = {"profile": args.profile, "precision": args.precision, "threads": torch.get_num_threads(),
           "rounds": args.rounds, "machine": machine_info("cpu"), "rows": rows}
    if args.json:
        write_json(args.json, out)   # atomic, parent folders made
    return out


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--precision", choices=list(PRECISION), default="fp32")
    ap.add_argument("--variant", action="append", required=True, help="NAME=MODEL[;override...], repeatable")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json")
    return ap.parse_args(argv)


if __name__ == "__main__":
    main(parse(sys.argv[1:]))
