"""Seconds per training step of the tiny VQ-GAN, DiT and ldm in fp32, bf16 and what amp=auto chose, on the CPU
kind this process is (run it once natively and once under each emulation setting; benchmarks/README.md).

    python benchmarks/cpu_kinds.py --steps 6 --json runs/bench/cpu_kinds-native.json
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/cpu_kinds.py ...
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/cpu_kinds.py ...

Each model trains `--steps` steps at the tiny profile's real shapes through the engine (`amp` set per run); the
step time is the mean `s_per_step` after the first logged step (oneDNN builds its kernels in the first).
The VQ-GAN trains on the tiny phantom cache (built once under --root); the latent models on random latents of
the tiny latent shape (the speed of a step does not depend on the values). Precisions are interleaved model by
model, so load from other processes hits each alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch


def _latents(root: Path) -> tuple[Path, Path]:
    """A latents.pt of tiny shape (16 subjects of (8, 6, 16, 16, 4)) and the cache manifest it names."""
    from cardiolab.core import write_json
    from cardiolab.data.attributes import cardinalities
    from cardiolab.data.prepare import CACHE_VERSION

    ids = [f"patient{i:03d}" for i in range(1, 17)]
    cache = root / "fake_cache"
    write_json(cache / "manifest.json", {"version": CACHE_VERSION, "subjects": [
        {"id": sid, "split": "public", "spacing": [3.0, 3.0, 10.0], "frame_ms": 40.0, "es": 5} for sid in ids]})
    g = torch.Generator().manual_seed(0)
    cond = torch.stack([torch.randint(0, n, (len(ids),), generator=g) for n in cardinalities()], 1)
    path = root / "latents.pt"
    torch.save({"latents": torch.randn(len(ids), 8, 6, 16, 16, 4, generator=g), "cond": cond, "ids": ids,
                "splits": {sid: "public" for sid in ids}, "scale": 1.0, "vqgan_run": str(root / "none")}, path)
    return path, cache


def _time(run: Path) -> dict:
    from cardiolab.engine import read_metrics

    records = read_metrics(run)
    config = json.loads((run / "config.json").read_text())
    steps = [r["s_per_step"] for r in records[1:]] or [records[-1]["s_per_step"]]
    return {"s_per_step": statistics.mean(steps), "precision": config["precision"],
            "reason": config.get("precision_reason", "")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--root", type=Path, default=Path("runs/bench/cpu_kinds_root"),
                   help="where the tiny phantom cache is built once (shared by every CPU kind)")
    p.add_argument("--models", default="vqgan,dit,ldm")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    os.environ["CARDIOLAB_ROOT"] = str(args.root.resolve())
    from cardiolab.core import machine_info, write_json
    from cardiolab.profiles import get_profile, override
    from cardiolab.tasks import dit, ldm, vqgan

    tmp = Path(tempfile.mkdtemp(prefix="cpu_kinds."))
    latents, cache = _latents(tmp)
    tiny = get_profile("tiny")
    out = {"machine": machine_info("cpu"), "threads": torch.get_num_threads(), "steps": args.steps, "models": {}}
    for model in args.models.split(","):
        rows = {}
        for amp in ("off", "bf16", "auto"):
            run = tmp / f"{model}-{amp}"
            section = {"vqgan": "vqgan", "dit": "dit", "ldm": "baselines"}[model]
            profile = override(tiny, [f"{section}.amp={amp}"])      # < 20 steps: the engine logs every step
            if model == "vqgan":
                vqgan.train(profile, out=run, steps=args.steps)
            elif model == "dit":
                dit.train(profile, out=run, steps=args.steps, latents=latents)
            else:
                ldm.train(profile, out=run, steps=args.steps, latents=latents, cache_dir=cache)
            rows[amp] = _time(run)
            print(f"{model:6s} amp={amp:5s} {rows[amp]['s_per_step']:.3f} s/step  ({rows[amp]['precision']}) "
                  f"{rows[amp]['reason']}", flush=True)
        rows["auto_vs_fp32"] = rows["off"]["s_per_step"] / rows["auto"]["s_per_step"]
        out["models"][model] = rows
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
