"""amp=auto on a CPU: bf16 only where this CPU computes this model right and fast, decided once per model, batch
shape and CPU kind by running the first step in fp32 and bf16 (`settle_precision`) and remembered in
runs/precision-verdicts.json."""
from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any, Callable

import torch
from torch import nn

from cardiolab.core import PassResult, bf16_verdict, fingerprint, machine_info, poisoned_heap, project_root, write_json
from cardiolab.engine.determinism import seed_step
from cardiolab.engine.wrappers import unwrap
from cardiolab.profiles import PROFILE_KEY

log = logging.getLogger(__name__)

# `settle_precision`'s verdicts, remembered per model, batch shape and CPU kind in the project's runs/
# folder, so that every later run of that model on this machine trains in the same precision (same seed, same
# numbers) instead of re-deciding on a timing that load can tip
VERDICTS = "precision-verdicts.json"
_VERDICTS: dict[str, tuple[str, str]] = {}


def _verdicts() -> dict[str, tuple[str, str]]:
    if not _VERDICTS and (path := project_root() / "runs" / VERDICTS).exists():
        try:
            _VERDICTS.update({k: tuple(v) for k, v in json.loads(path.read_text()).items()})
        except (json.JSONDecodeError, TypeError, ValueError):
            log.warning("%s: unreadable, measuring again", path)
    return _VERDICTS


def _remember(key: str, verdict: tuple[str, str]) -> None:
    _verdicts()[key] = verdict
    try:
        write_json(project_root() / "runs" / VERDICTS, _VERDICTS)
    except OSError as e:          # a read-only checkout still trains; it measures again next time
        log.warning("cannot remember the precision verdict: %s", e)


@torch.no_grad()
def _wake_zero_parameters(modules: Any) -> None:
    """Give parameters that start at zero (adaLN-Zero, zero output convolutions) small seeded values: at init they
    make every gradient before them zero, and a precision check must see every kernel's gradient, not zeros."""
    g = torch.Generator().manual_seed(0)
    for module in modules:
        for p in unwrap(module).parameters():
            if p.dtype.is_floating_point and p.numel() and not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def _signature(modules: dict[str, nn.Module], batch: Any, config: dict) -> str:
    """What a bf16 verdict depends on: every parameter's name and shape, the batch's shapes and dtypes, and the
    run's config (what step_fn does with the batch, e.g. random crops, changes the shapes the kernels see)."""
    def shapes(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return [list(x.shape), str(x.dtype)]
        if isinstance(x, dict):
            return {k: shapes(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [shapes(v) for v in x]
        return type(x).__name__
    params = {n: [[k, list(p.shape)] for k, p in unwrap(m).named_parameters()] for n, m in modules.items()}
    config = {k: v for k, v in config.items() if k != PROFILE_KEY}    # sampling settings: no kernel sees them
    return fingerprint({"params": params, "batch": shapes(batch), "config": json.loads(json.dumps(config, default=str)),
                        "machine": machine_info("cpu")})


def settle_precision(trainer, batch: Any, step_fn: Callable) -> None:
    """amp=auto on a CPU with native bf16: run this model's first step in fp32 and in bf16 (no update) and
    keep bf16 only where `core.bf16_verdict` finds it finite, close to fp32 and not slower.

    Why: oneDNN's bf16 kernels have shape-specific bugs on some CPU kinds (e.g. the Conv3d weight gradient
    of an input two voxels deep reads memory it never wrote on AVX-512 BF16 without AMX: NaN or 1e36), and
    bf16 is slower than fp32 for some models on some kinds. The passes run on a poisoned heap
    (`core.poisoned_heap`) so that such a read shows. Verdicts are remembered per model, batch shape and CPU
    kind (runs/precision-verdicts.json; delete it to measure again); a resumed run keeps its checkpoint's.
    """
    if trainer.verdict is not None or trainer.cfg.amp != "auto" or trainer.amp_dtype != torch.bfloat16 \
            or trainer.device.type != "cpu" or trainer.dp:
        return
    key = _signature(trainer.modules, batch, trainer.config)
    if key not in _verdicts():
        saved = {n: copy.deepcopy(trainer.raw(n).state_dict()) for n in trainer.modules}
        passes: dict[str, list[PassResult]] = {"fp32": [], "bf16": []}
        for precision in ("fp32", "bf16") * 3:            # the first pass of each warms oneDNN's kernels up
            _wake_zero_parameters(trainer.modules.values())
            passes[precision].append(_probe_pass(trainer, batch, step_fn, precision))
            for n, sd in saved.items():
                trainer.raw(n).load_state_dict(sd)
        _remember(key, bf16_verdict(passes["fp32"][1:], passes["bf16"][1:]))
    trainer.verdict = _VERDICTS[key]
    trainer.precision, trainer.reason = trainer.verdict
    trainer.amp_dtype = torch.bfloat16 if trainer.precision == "bf16" else None
    if trainer.precision != "bf16":
        log.warning("%s: %s", trainer.run_dir, trainer.reason)

def _probe_pass(trainer, batch: Any, step_fn: Callable, precision: str) -> PassResult:
    trainer.amp_dtype, trainer._probe = (torch.bfloat16 if precision == "bf16" else None), []
    seed_step(trainer.cfg.seed, trainer.step, trainer.rank)
    try:
        with poisoned_heap():
            t0 = time.perf_counter()
            out = step_fn(batch, trainer.step, trainer)
            seconds = time.perf_counter() - t0
    finally:
        grads, trainer._probe = trainer._probe, None
    return PassResult([float(v) for k, v in out.items() if "loss" in k], grads, seconds)

