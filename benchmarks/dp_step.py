"""Seconds per training step of the tiny DiT: non-DP (fp32, bf16) vs DP-SGD (replayable, release mode).

DP-SGD runs as `train dit-dp` does: fp32, Poisson batches at q = 1/ceil(N/batch) over N = 120 private latents,
per-sample clipping in chunks of dp.physical_batch, release mode with Opacus secure_mode noise (four Gaussian draws
per coordinate) from a secret seed every step. Variants are interleaved round by round so load on a shared machine
hits them alike; each round times `--steps` steps after one untimed warm-up step (metrics.jsonl s_per_step).

    OMP_NUM_THREADS=1 python benchmarks/dp_step.py --rounds 2 --steps 4 [--json runs/bench/dp_step.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import warnings
from pathlib import Path

import torch

from cardiolab.core import machine_info, write_json
from cardiolab.diffusion import DiffusionConfig, create_scheduler
from cardiolab.engine import Trainer, TrainConfig, read_metrics
from cardiolab.models.dit4d import DiT4D
from cardiolab.dp.mechanism import make_private
from cardiolab.profiles import get_profile
from cardiolab.tasks import dit

VARIANTS = ("fp32", "bf16", "dp-replayable", "dp-release")


def _data(profile, n: int):
    shape = (profile.vqgan.code_dim, profile.data.slices, 16, 16, 4)     # tiny latents: 8 x 6 x 16 x 16 x 4
    g = torch.Generator().manual_seed(0)
    n_attributes = len(dit.model_config(profile, shape).cond_cardinalities)
    record = {"latents": torch.randn((n, *shape), generator=g), "cond": torch.zeros(n, n_attributes, dtype=torch.long),
              "ids": [f"p{i}" for i in range(n)], "splits": {}, "scale": 1.0}
    return shape, dit.training_set(record)


def one(variant: str, profile, shape, data, steps: int, run_dir: Path) -> float:
    torch.manual_seed(0)
    model = DiT4D(dit.model_config(profile, shape)).train()
    p = profile.dp
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.0)
    cfg = dict(steps=steps + 1, batch_size=p.batch, lr=p.lr, warmup=1, ckpt_every=10_000, log_every=1)
    dcfg = DiffusionConfig(train_timesteps=profile.dit.train_timesteps)
    step_fn = dit.make_step_fn(create_scheduler(dcfg), dcfg.loss)
    if variant.startswith("dp"):
        setup = make_private(model, opt, data, batch=p.batch, noise_multiplier=1.3, max_grad_norm=p.max_grad_norm,
                             accountant="rdp", secure_mode=variant == "dp-release")
        tr = Trainer(run_dir, TrainConfig(**cfg, amp="off", physical_batch=p.physical_batch,
                                          dp_replayable=variant == "dp-replayable"),
                     {"model": setup.module}, {"model": setup.optimizer}, accountant=setup.accountant)
        tr.fit(setup.loader, step_fn)
    else:
        tr = Trainer(run_dir, TrainConfig(**cfg, amp="off" if variant == "fp32" else "bf16"), {"model": model},
                     {"model": opt})
        tr.fit(data, step_fn)
    return statistics.mean(r["s_per_step"] for r in read_metrics(run_dir)[1:])    # after the warm-up step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="Full backward hook")
    profile = get_profile("tiny")
    shape, data = _data(profile, 120)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for v in VARIANTS:
                times[v].append(one(v, profile, shape, data, args.steps, Path(tmp) / f"{v}-{r}"))
                print(f"round {r} {v}: {times[v][-1]:.3f} s/step", flush=True)
    result = {"s_per_step_median": {v: statistics.median(t) for v, t in times.items()}, "s_per_step": times,
              "batch": profile.dp.batch, "n": 120,
              "physical_batch": profile.dp.physical_batch, "threads": torch.get_num_threads(),
              "machine": machine_info("cpu"), "torch": torch.__version__}
    print(json.dumps(result["s_per_step_median"]))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
