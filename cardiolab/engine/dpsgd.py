"""The engine's side of DP-SGD (see `cardiolab.engine`): Poisson batches, secret or replayable noise, noise-only steps,
the checks on precision. The Opacus pieces themselves are built by `cardiolab.dp.mechanism`."""
from __future__ import annotations

import os
import random
import secrets
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from cardiolab.core import CardiolabError, to_device
from cardiolab.engine.determinism import NOISE_SLOT, POISSON_SLOT, step_seed


def poisson_indices(n: int, sample_rate: float, seed: int | None, step: int) -> list[int]:
    """The Poisson batch of `step`: each of n items joins independently with probability sample_rate.

    seed None (release): uniforms from os.urandom (53 random bits each), a fresh secret mask never stored.
    Otherwise a function of (seed, step) only, so a resumed run draws exactly the batches of an uninterrupted one.
    """
    if seed is None:
        u = (np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)) * 2.0 ** -53   # [0, 1)
        return np.flatnonzero(u < sample_rate).tolist()
    g = torch.Generator().manual_seed(step_seed(seed, step, POISSON_SLOT))
    return torch.nonzero(torch.rand(n, generator=g) < sample_rate).flatten().tolist()


@dataclass
class PoissonBatch:
    """One DP-SGD step's Poisson batch as index chunks (physical batches), fetched chunk by chunk."""
    dataset: Dataset
    collate: Callable[[list], Any]
    chunks: list[list[int]]


def is_dp(opt: torch.optim.Optimizer) -> bool:
    return hasattr(opt, "noise_multiplier") and hasattr(opt, "signal_skip_step")   # Opacus DPOptimizer


def check_dp_amp(dtype: torch.dtype | None) -> None:
    if dtype == torch.float16:
        raise CardiolabError("amp=fp16 with DP-SGD: GradScaler does not unscale per-sample gradients; use amp=off")
    if dtype == torch.bfloat16:   # a toy check clipped one sample to 1.0067 C in bf16: more than the accountant assumes
        raise CardiolabError("amp=bf16 with DP-SGD: per-sample gradients and clipping must be fp32 for the clip "
                             "bound C to hold; use amp=off (or auto)")


def _secret_reseed() -> None:
    """Re-seed Python's, NumPy's and torch's global generators from the OS CSPRNG (release-mode DP steps)."""
    random.seed(secrets.randbits(64))
    np.random.seed(secrets.randbits(32))
    torch.manual_seed(secrets.randbits(63))


def _noise_only_step(opt: torch.optim.Optimizer) -> None:
    """An empty Poisson batch still costs a step: zero clipped sum + noise, accounted like any other."""
    opt.zero_grad(set_to_none=True)
    for p in opt.params:
        p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
    opt.step()


def dp_step(trainer, batch: PoissonBatch, step_fn: Callable) -> dict:
    """One DP-SGD step over a Poisson batch: step_fn per chunk, noise + update after the last (as BatchMemoryManager).

    Returns {}: step_fn's losses and the batch size are statistics of the private batch outside the mechanism.
    """
    for opt in trainer.dp:   # replayable: from (seed, step); release: 64 fresh bits of the OS CSPRNG, never stored
        opt.generator.manual_seed(step_seed(trainer.cfg.seed, trainer.step, NOISE_SLOT) if trainer.cfg.dp_replayable
                                  else secrets.randbits(64))
    if not trainer.cfg.dp_replayable:    # step_fn's draws (t, noise, dropout) secret too; fit re-seeds next step
        _secret_reseed()
    if not batch.chunks:
        for opt in trainer.dp:
            _noise_only_step(opt)
        return {}
    for i, idx in enumerate(batch.chunks):
        if i < len(batch.chunks) - 1:       # accumulate clipped grads; no noise, no update yet
            for opt in trainer.dp:
                opt.signal_skip_step(True)
        chunk = to_device(batch.collate([batch.dataset[j] for j in idx]), trainer.device)
        step_fn(chunk, trainer.step, trainer)
    return {}

