"""Opacus wiring for DP-SGD through the engine: model checks, which parameters train, and `make_private`.

The engine (`cardiolab.engine`) owns the DP step itself: Poisson batches and noise from a secret source (release)
or from (seed, step) (replayable), chunking into physical batches, noise-only steps, the accountant in the
checkpoint. This module builds what it takes:
a GradSampleModule (per-sample gradients by hooks on Linear/Embedding/...), a DPOptimizer (clip each sample to
C, add N(0, sigma^2 C^2) to the sum), the Poisson DataLoader (whose sample_rate the engine samples at) and the
accountant hooked to the optimizer. One record = one dataset item (for cardiolab: one subject's 4D latent).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cardiolab.core import CardiolabError
from cardiolab.dp.accounting import make_accountant, validate

# params="attention": what DP fine-tuning updates (qkv/proj, adaLN modulation, attribute embeddings); the rest
# of the network keeps its public pre-trained weights. Matched as substrings of DiT4D parameter names.
ATTENTION_PARAMS = ("attn.qkv.", "attn.proj.", "adaLN_modulation.", "y_embedder.")


@dataclass
class DPSetup:
    """What `make_private` hands the engine: Trainer({name: module}, {name: optimizer}, accountant=...).fit(loader)."""
    module: nn.Module            # opacus GradSampleModule around the model
    optimizer: torch.optim.Optimizer   # opacus DPOptimizer
    loader: DataLoader           # opacus DPDataLoader: the dataset and the Poisson sample_rate
    accountant: Any              # opacus RDPAccountant / PRVAccountant, stepped by the optimizer
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float


def sample_rate(n: int, batch: int) -> float:
    """q = 1 / ceil(N / B): Opacus's Poisson rate for an expected batch B (DPDataLoader.from_data_loader)."""
    if n < 1:
        raise CardiolabError("DP-SGD: the private dataset is empty")
    if batch < 1:
        raise CardiolabError(f"dp.batch {batch}: must be >= 1")
    return 1 / math.ceil(n / batch)


DELTA_CAP = 1e-5       # default delta when 1/(10 N) is larger (N < 10^4)


def resolve_delta(delta: float, n: int) -> float:
    """The delta a run uses: dp.delta, or min(1e-5, 1/(10 N)) when dp.delta is 0 (auto); checked by check_delta.

    N (the number of private subjects) is treated as public: it is recorded in privacy.json and the data card.
    """
    if n < 1:
        raise CardiolabError("DP-SGD: the private dataset is empty")
    delta = min(DELTA_CAP, 1 / (10 * n)) if delta == 0 else float(delta)
    check_delta(delta, n)
    return delta


def check_delta(delta: float, n: int) -> None:
    """delta must be <= 1/(10 N): at 1/N a mechanism may publish one random record in the clear and still
    qualify, so delta * N (the chance that some subject's guarantee fails) stays at most 0.1."""
    validate(delta=delta)
    if delta * 10 * n > 1 * (1 + 1e-12):
        raise CardiolabError(f"dp.delta {delta:g}: must be <= 1/(10 N) = {1 / (10 * n):.3g} for N = {n} private "
                             f"subjects (delta N = {delta * n:.3g}; 0 picks min(1e-5, 1/(10 N)))")


def check_model(model: nn.Module) -> None:
    """Refuse modules that mix samples in a batch (BatchNorm: one subject's data moves every output) or that
    Opacus cannot compute per-sample gradients for; all problems in one message."""
    from opacus.validators import ModuleValidator  # lazy: opacus is a slow import, needed only here

    problems = [f"{name or type(model).__name__}: {type(m).__name__} mixes samples within a batch (use GroupNorm)"
                for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not problems:
        was = model.training
        problems = [str(e) for e in ModuleValidator.validate(model.train(), strict=False)]
        model.train(was)
    if problems:
        raise CardiolabError("model cannot be trained with DP-SGD: " + "; ".join(problems))


def select_parameters(model: nn.Module, params: str = "all") -> list[str]:
    """Freeze all but the DP-trained parameters (before make_private); return the trained names.

    params: 'all' or 'attention' (ATTENTION_PARAMS: attention qkv/proj, adaLN modulation, attribute embeddings).
    """
    if params not in ("all", "attention"):
        raise CardiolabError(f"dp.params {params!r}: must be 'all' or 'attention'")
    names = []
    for name, p in model.named_parameters():
        train = params == "all" or any(key in name for key in ATTENTION_PARAMS)
        p.requires_grad_(train)
        if train:
            names.append(name)
    if not names:
        raise CardiolabError(f"dp.params {params!r}: selects no parameter of {type(model).__name__}")
    return names


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, *, batch: int,
                 noise_multiplier: float, max_grad_norm: float, accountant: str = "prv", secure_mode: bool = False,
                 collate_fn: Callable[[list], Any] | None = None) -> DPSetup:
    """Wrap model/optimizer/dataset for DP-SGD at Poisson rate q = 1/ceil(N/batch) (expected batch ~ batch).

    optimizer: built over the model's trainable parameters (after `select_parameters`). The loss in step_fn must
    be a mean over the batch (Opacus loss_reduction='mean'); the update divides the noisy sum by N*q.
    secure_mode: Opacus's noise robust to floating-point attacks (arXiv 2107.10138: each draw the mean of 4).
    The engine seeds the noise generator: secretly from the OS at every step, unless cfg.dp_replayable.
    """
    from opacus import GradSampleModule  # lazy: opacus is a slow import, needed only here
    from opacus.data_loader import DPDataLoader
    from opacus.optimizers import DPOptimizer

    validate(noise_multiplier=noise_multiplier, accountant=accountant)
    if not max_grad_norm > 0:
        raise CardiolabError(f"dp.max_grad_norm {max_grad_norm}: must be > 0")
    check_model(model)
    q = sample_rate(len(dataset), batch)
    loader = DPDataLoader.from_data_loader(DataLoader(dataset, batch_size=batch, collate_fn=collate_fn))
    module = GradSampleModule(model.train(), batch_first=True, loss_reduction="mean", strict=True)
    module.forbid_grad_accumulation()   # every backward is followed by a step (skipped ones between chunks)
    dp_opt = DPOptimizer(optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                         expected_batch_size=max(1, int(len(dataset) * q)), loss_reduction="mean",
                         secure_mode=secure_mode)
    acc = make_accountant(accountant)
    dp_opt.attach_step_hook(acc.get_optimizer_hook_fn(sample_rate=q))
    return DPSetup(module, dp_opt, loader, acc, q, float(noise_multiplier), float(max_grad_norm))


def per_sample_grad_norms(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batches,
                          max_grad_norm: float) -> dict:
    """Per-sample gradient norms of `model` before and after DP-SGD clipping to C = max_grad_norm.

    loss_fn(module, batch): the batch-mean loss (as in training). batches: an iterable of batches. The model's
    trainable parameters (requires_grad) are the ones measured, as DPOptimizer would clip them; the model is
    left as it was (hooks removed, grads cleared). Returns {"before": (N,) array, "after": (N,) array, "C": C},
    after = before * min(1, C / (before + 1e-6)) (Opacus's flat clipping factor).
    """
    from opacus import GradSampleModule  # lazy: opacus is a slow import, needed only here

    if not max_grad_norm > 0:
        raise CardiolabError(f"dp.max_grad_norm {max_grad_norm}: must be > 0")
    check_model(model)
    was = model.training
    module = GradSampleModule(model.train(), batch_first=True, loss_reduction="mean", strict=True)
    params = [p for p in module.parameters() if p.requires_grad]
    norms = []
    try:
        for batch in batches:
            loss_fn(module, batch).backward()
            per = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in params], dim=1)   # (B, P)
            norms.append(per.norm(dim=1).detach().cpu())
            for p in params:
                p.grad_sample, p.grad = None, None
    finally:
        module._close()
        model.train(was)
    before = torch.cat(norms).double().numpy()
    factor = np.minimum(1.0, max_grad_norm / (before + 1e-6))
    return {"before": before, "after": before * factor, "C": float(max_grad_norm)}
