"""Benchmarks behind `python -m cardiolab bench` and benchmarks/*.py (measurements, not tests).

Training-step timing covers what one optimizer step costs: noise + forward + v-prediction loss + backward
+ grad clip + AdamW, exactly as cardiolab.tasks.dit trains. Peak memory: torch.cuda.max_memory_allocated
on a GPU; on the CPU the growth of the process's peak resident set (getrusage ru_maxrss) over its value
before the model was built, measured in a fresh child process so that earlier work does not hide it.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from cardiolab.core import CardiolabError, machine_info, pick_device, precision_name, resolve_amp, seed_everything
from cardiolab.diffusion import DiffusionConfig, create_scheduler, diffusion_loss, sample
from cardiolab.models.dit4d import DiT4D, DiT4DConfig

log = logging.getLogger(__name__)


PRECISIONS = ("auto", "fp32", "bf16")
# Dense bf16 tensor-core peaks (vendor datasheets, TFLOP/s) for MFU; other GPUs: pass peak_tflops yourself.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}


@dataclass(frozen=True)
class DiTBench:
    input_size: tuple[int, int, int, int] = (4, 32, 32, 8)   # latent (D, H, W, T)
    patch: tuple[int, int, int, int] = (1, 4, 4, 2)
    channels: int = 8
    hidden: int = 192
    depth: int = 6
    heads: int = 6
    batch: int = 2
    steps: int = 5              # timed steps (after `warmup` untimed ones)
    warmup: int = 2             # first steps pay for allocation, oneDNN kernel selection, compilation
    compile: bool = False
    checkpointing: bool = False
    precision: str = "auto"     # auto (what training would pick: core.resolve_amp) | fp32 | bf16 autocast
    fused_adamw: bool = True    # one fused kernel for the optimizer instead of many small ones
    device: str = "auto"
    seed: int = 0

    def resolved_precision(self) -> str:
        """'bf16' or 'fp32': the precision these timings run in."""
        if self.precision not in PRECISIONS:
            raise CardiolabError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        amp = "off" if self.precision == "fp32" else self.precision
        return precision_name(resolve_amp(amp, pick_device(self.device), "--precision"))

    def model_config(self) -> DiT4DConfig:
        return DiT4DConfig(input_size=tuple(self.input_size), in_channels=self.channels, patch=tuple(self.patch),
                           hidden=self.hidden, depth=self.depth, heads=self.heads, checkpointing=self.checkpointing)


def dit_train_flops(cfg: DiT4DConfig, batch: int) -> float:
    """FLOPs of one DiT4D training step, counted from the model's shapes (matmuls only; elementwise work,
    norms and softmax are left out, as MFU conventionally does).

    Per token, with width d, MLP ratio r, N tokens and P = prod(patch) * C_z values per patch:
      each block: qkv 6d^2 + out-projection 2d^2 + MLP 4r d^2 (= 24 d^2 at r = 4) + attention 4Nd
                  (QK^T and AV, 2N d each); patch embedding 2Pd; final linear 2Pd.
    Per sample: adaLN modulation 12 d^2 per block + 4 d^2 in the final layer (tiny beside the rest).
    Training = forward + backward = 3 x forward (backward computes two products per forward product).
    tests/test_bench.py checks this count against torch.utils.flop_counter.FlopCounterMode.
    """
    d, N, L, r = cfg.hidden, cfg.num_tokens, cfg.depth, cfg.mlp_ratio
    P = int(np.prod(cfg.patch)) * cfg.in_channels
    per_token = L * ((8 + 4 * r) * d * d + 4 * N * d) + 4 * P * d
    per_sample = L * 12 * d * d + 4 * d * d
    return 3.0 * batch * (N * per_token + per_sample)


def peak_tflops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak from BF16_PEAK_TFLOPS by its name; None on a CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def build_dit(b: DiTBench) -> nn.Module:
    model = DiT4D(b.model_config())
    return model.compile_blocks() if b.compile else model


def train_step_fn(model: nn.Module, b: DiTBench, fused_adamw: bool | None = None,
                  bf16: bool | None = None) -> Callable[[], float]:
    """A closure running one full training step of `model` (any `model(x_t, t, cond)` denoiser); returns seconds.

    Separate closures for several models can be called in turn, so a side-by-side timing interleaves them
    and load from other processes hits every model alike.
    """
    device = pick_device(b.device)
    model.to(device).train()
    sch = create_scheduler(DiffusionConfig())
    fused = b.fused_adamw if fused_adamw is None else fused_adamw
    bf16 = b.resolved_precision() == "bf16" if bf16 is None else bf16
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    x0 = torch.randn(b.batch, b.channels, *b.input_size, generator=torch.Generator().manual_seed(b.seed)).to(device)

    def step() -> float:
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = diffusion_loss(model, sch, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        _sync(device)
        return time.perf_counter() - t0
    return step


def time_train_steps(model: nn.Module, b: DiTBench) -> dict:
    """Median time of b.steps training steps after b.warmup untimed ones."""
    seed_everything(b.seed)
    step = train_step_fn(model, b)
    times = [step() for _ in range(b.warmup + b.steps)][b.warmup:]
    step_s = statistics.median(times)
    return {"samples_per_s": b.batch / step_s, "step_s": step_s, "step_s_all": times,
            "params": sum(p.numel() for p in model.parameters())}


def time_sampling(model: nn.Module, b: DiTBench, sample_steps: int = 50, n: int = 1) -> dict:
    """Seconds per 4D sample of a DDIM chain of `sample_steps` steps (batch of n)."""
    device = pick_device(b.device)
    sch = create_scheduler(DiffusionConfig(), sampler="ddim")
    model.to(device).eval()
    shape, bf16 = (n, b.channels, *b.input_size), b.resolved_precision() == "bf16"
    sample(model, sch, shape, steps=1, device=device, autocast=bf16)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    sample(model, sch, shape, steps=sample_steps, device=device, autocast=bf16,
           generator=torch.Generator().manual_seed(b.seed))
    _sync(device)
    total = time.perf_counter() - t0
    return {"s_per_sample": total / n, "s_per_step": total / sample_steps, "sample_steps": sample_steps, "n": n,
            "params": sum(p.numel() for p in model.parameters())}


def bench_dit(b: DiTBench) -> dict:
    """Training-step benchmark of cardiolab's DiT4D: throughput, step time, params and peak memory."""
    device = pick_device(b.device)
    base = _rss_peak_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = time_train_steps(build_dit(b), b)
    out["peak_mem_bytes"] = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                             else _rss_peak_bytes() - base)
    out["train_flops_per_step"] = flops = dit_train_flops(b.model_config(), b.batch)
    out["tflops_per_s"] = flops / out["step_s"] / 1e12
    peak = peak_tflops(device)
    out["peak_tflops"] = peak
    out["mfu"] = out["tflops_per_s"] / peak if peak else None
    return {**out, **_context(b), "threads": torch.get_num_threads()}


def bench_dit_sample(b: DiTBench, sample_steps: int = 50, n: int = 1) -> dict:
    return {**time_sampling(build_dit(b), b, sample_steps, n), **_context(b)}


def _context(b: DiTBench) -> dict:
    """What a timing depends on besides the model: device, precision, machine, config, torch."""
    device = pick_device(b.device)
    return {"device": _device_name(device), "precision": b.resolved_precision(), "machine": machine_info(device),
            "config": asdict(b), "torch": torch.__version__}


def in_fresh_process(fn: Callable[..., dict], *args, timeout: float | None = None) -> dict:
    """Run fn(*args) in a spawned child, so its peak RSS counts only what fn allocates."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(fn, args)
        try:
            return result.get(timeout)
        except mp.TimeoutError:
            raise CardiolabError(f"benchmark {fn.__name__} ran past its {timeout} s limit") from None


def _rss_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return "cpu"


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=True)
