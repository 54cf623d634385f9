"""The one bootstrap of cardiolab (pure): a percentile interval of any statistic over resampled indices."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def bootstrap(stat: Callable[[np.ndarray], float], groups: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (lo, hi) of `stat(indices)`.

    groups: index arrays resampled separately, with replacement and at their own size (one group: the plain
    bootstrap; members and non-members: a stratified one, so every replicate keeps both classes). Seeded: the
    same inputs give the same interval.
    """
    rng = np.random.default_rng(seed)
    values = [stat(np.concatenate([rng.choice(g, len(g)) for g in groups])) for _ in range(n_boot)]
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))
