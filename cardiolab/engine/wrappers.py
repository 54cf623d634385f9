"""The plain model inside DDP and Opacus wrappers, and copies of it without Opacus's hooks (EMA)."""
from __future__ import annotations

import copy
from typing import Any

from torch import nn


def unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside DDP and Opacus wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_module") and isinstance(module._module, nn.Module):  # opacus GradSampleModule
            module = module._module
        else:
            return module


def plain_copy(module: nn.Module) -> nn.Module:
    """A deep copy without Opacus's per-sample-gradient hooks and attributes (for EMA copies).

    The hooks are bound methods of the GradSampleModule: a plain deepcopy drags along a copy of it, and an EMA
    forward in train mode would then capture activations into it.
    """
    def opacus_hook(hook: Any) -> bool:
        owner = getattr(getattr(hook, "func", hook), "__self__", None)
        return hasattr(owner, "capture_activations_hook")

    hooked = [m for m in module.modules() if any(map(opacus_hook, [*m._forward_hooks.values(), *m._backward_hooks.values()]))]
    memo: dict[int, Any] = {}
    for m in hooked:   # share, not copy, the GradSampleModule the hooks are bound to; they are dropped below
        for hook in [*m._forward_hooks.values(), *m._backward_hooks.values()]:
            if opacus_hook(hook):
                owner = getattr(getattr(hook, "func", hook), "__self__")
                memo[id(owner)] = owner
    copied = copy.deepcopy(module, memo)
    for m in copied.modules():
        for hooks in (m._forward_hooks, m._backward_hooks):
            for key in [k for k, h in hooks.items() if opacus_hook(h)]:
                del hooks[key]
        if not m._backward_hooks:
            m._is_full_backward_hook = None
        for attr in ("activations", "autograd_grad_sample_hooks", "max_batch_len"):
            m.__dict__.pop(attr, None)
    for p in copied.parameters():
        for attr in ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample"):
            p.__dict__.pop(attr, None)
    return copied
