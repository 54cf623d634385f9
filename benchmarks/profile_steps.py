"""Where one training step of each tiny-profile model spends its time: torch.profiler top ops, per model.

    OMP_NUM_THREADS=2 python benchmarks/profile_steps.py [--profile tiny] [--models vqgan,dit,segmenter,evaluator]
        [--precision fp32|auto|bf16] [--steps 3] [--warmup 2] [--set vqgan.crop=32,32,16 ...] [--json OUT]

Each model's own step function (the one `train` hands to the engine) runs on random tensors of the profile's
shapes through a real `Trainer` (AMP, clipping, optimizer step), so the profile is the training step minus data
loading. The VQ-GAN is profiled twice: before its discriminator starts and after. Prints, per model, the mean
step time, the top ops by self CPU time and their share; --json also writes them with the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from cardiolab.core import machine_info, write_json, precision_name, resolve_amp, seed_everything
from cardiolab.engine import Trainer, TrainConfig
from cardiolab.profiles import get_profile, override

PRECISION = {"fp32": "off", "auto": "auto", "bf16": "bf16"}


def vqgan_case(p, amp: str, after_disc: bool):
    from cardiolab.tasks import vqgan

    cfg = dataclasses.replace(p.vqgan, amp=amp)
    size = vqgan.crop_size(p)
    model, disc = vqgan.build(cfg, size)
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    batch = {"image": torch.rand(cfg.batch, 1, *vqgan.slice_size(p)) * 2 - 1}
    step = cfg.disc_start * 2 if after_disc else 0
    return ({"model": model, "disc": disc}, {"model": opt_g, "disc": opt_d}, vqgan.make_step_fn(cfg, size),
            batch, step, cfg.batch)


def dit_case(p, amp: str):
    from cardiolab.diffusion import create_scheduler
    from cardiolab.models.dit4d import DiT4D
    from cardiolab.tasks import dit
    from cardiolab.tasks.vqgan import VQConfig, latent_shape

    c, *hwt = latent_shape(VQConfig.pick(p.vqgan), (p.data.image_size, p.data.image_size, p.data.frames))
    shape = (c, p.data.slices, *hwt)                                   # (C_z, D, h, w, t)
    mcfg, dcfg = dit.model_config(p, shape), dit.diffusion_config(p)
    model = DiT4D(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=p.dit.lr, weight_decay=0.0)
    cond = torch.zeros(p.dit.batch, len(mcfg.cond_cardinalities), dtype=torch.long)
    batch = {"z": torch.randn(p.dit.batch, *shape), "cond": cond}
    return {"model": model}, {"model": opt}, dit.make_step_fn(create_scheduler(dcfg), dcfg.loss), batch, 0, p.dit.batch


def segmenter_case(p, amp: str):
    from cardiolab.models.segmenter import Segmenter
    from cardiolab.tasks import segmenter

    model = Segmenter(segmenter.model_config(p))
    opt = torch.optim.AdamW(model.parameters(), lr=segmenter.LR, weight_decay=1e-4)
    n, s = p.eval.seg_batch, p.data.image_size
    batch = {"image": torch.rand(n, 1, s, s) * 2 - 1, "labels": torch.randint(0, 4, (n, s, s))}
    return {"model": model}, {"model": opt}, segmenter._step, batch, 0, n


def evaluator_case(p, amp: str):
    from monai.losses import ContrastiveLoss
    import torch.nn.functional as F

    from cardiolab.models.evaluator import CineEncoder
    from cardiolab.tasks import evaluator as ev

    cfg = ev.evaluator_config(p)
    model = CineEncoder(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=ev.LR, weight_decay=1e-4)
    loss_fn = ContrastiveLoss(temperature=ev.TEMPERATURE)

    def step_fn(batch, step, tr):  # the step of tasks.evaluator.train, which keeps it inside train
        slab = ev.random_slab(batch["image"], cfg.in_slices)
        scrambled, order = ev.scramble(slab)
        with tr.autocast():
            (z1, z2), (logits,) = ev._heads(tr.modules["model"], [ev.augment(slab), ev.augment(slab)],
                                            [ev.augment(scrambled)])
            loss = loss_fn(z1.float(), z2.float()) + ev.ORDER_WEIGHT * F.cross_entropy(logits.float(), order)
        tr.backward(loss, "model")
        return {"loss": loss.item()}

    n, d = p.eval.feature_batch, p.data
    batch = {"image": torch.rand(n, 1, d.slices, d.image_size, d.image_size, d.frames) * 2 - 1}
    return {"model": model}, {"model": opt}, step_fn, batch, 0, n


CASES = {"vqgan": lambda p, a: vqgan_case(p, a, False), "vqgan+disc": lambda p, a: vqgan_case(p, a, True),
         "dit": dit_case, "segmenter": segmenter_case, "evaluator": evaluator_case}


def profile_case(name: str, p, amp: str, steps: int, warmup: int, top: int, out_dir: Path) -> dict:
    seed_everything(0)
    modules, opts, step_fn, batch, step, n = CASES[name](p, amp)
    tr = Trainer(out_dir / name, TrainConfig(steps=1, amp=amp, device="cpu"), modules=modules, optimizers=opts)
    for m in tr.modules.values():
        m.train()
    for _ in range(warmup):
        step_fn(batch, step, tr)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step_fn(batch, step, tr)
    wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {"model": name, "batch": n, "precision": tr.precision, "s_per_step_profiled": wall,
            "top_ops": [{"op": e.key, "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                         "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in rows]}


def main(args: argparse.Namespace) -> dict:
    p = override(get_profile(args.profile), args.set or [])
    amp = PRECISION[args.precision]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            r = profile_case(name, p, amp, args.steps, args.warmup, args.top, Path(tmp))
            results.append(r)
            print(f"\n{name} (batch {r['batch']}, {r['precision']}): {r['s_per_step_profiled']:.3f} s/step "
                  f"(profiled, {torch.get_num_threads()} threads)")
            for o in r["top_ops"]:
                print(f"  {o['share']:6.1%}  {o['self_cpu_ms_per_step']:8.1f} ms  {o['op']}")
    out = {"profile": p.name, "overrides": args.set or [], "precision_requested": args.precision,
           "threads": torch.get_num_threads(), "machine": machine_info("cpu"),
           "resolved": precision_name(resolve_amp(amp, "cpu")), "results": results}
    if args.json:
        write_json(args.json, out)   # atomic, parent folders made
    return out


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--models", default="vqgan,vqgan+disc,dit,segmenter,evaluator")
    ap.add_argument("--precision", choices=list(PRECISION), default="fp32")
    ap.add_argument("--steps", type=int, default=3, help="profiled steps per model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--top", type=int, default=8, help="ops listed per model")
    ap.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="profile override, repeatable")
    ap.add_argument("--json")
    return ap.parse_args(argv)


if __name__ == "__main__":
    main(parse(sys.argv[1:]))
