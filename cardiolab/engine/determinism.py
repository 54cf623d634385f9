"""Determinism of training: every random draw of step k is a function of (seed, step, rank) only, and the
batch of step k is the k-th chunk of a stream of seeded permutations (see `cardiolab.engine`)."""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from cardiolab.core import CardiolabError


class StreamBatchSampler(Sampler[list[int]]):
    """Batches of a seeded stream of permutations: the batch of step k depends only on (seed, k).

    Global batch k is items [k*B, (k+1)*B) of perm(epoch 0) ++ perm(epoch 1) ++ ...; rank r of W takes
    its contiguous B/W share, so W ranks together see exactly the single-process batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        if n == 0:
            raise CardiolabError("training data is empty")
        if batch_size % world:
            raise CardiolabError(f"batch_size {batch_size} is not divisible by the {world} DDP ranks")
        self.n, self.B, self.seed, self.start, self.stop = n, batch_size, seed, start, stop
        self.rank, self.world = rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))}
        return self._perms[epoch]

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.B // self.world
        for k in range(self.start, self.stop):
            first = k * self.B + self.rank * per_rank
            yield [int(self._perm(j // self.n)[j % self.n]) for j in range(first, first + per_rank)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


POISSON_SLOT, NOISE_SLOT = 63, 62   # seed slots past any rank: DP batch and noise streams of a step


def step_seed(seed: int, step: int, slot: int) -> int:
    return (seed * 1_000_003 + step) * 64 + slot


def seed_step(seed: int, step: int, rank: int) -> None:
    s = step_seed(seed, step, rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def rng_state() -> tuple:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def set_rng_state(state: tuple) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])
