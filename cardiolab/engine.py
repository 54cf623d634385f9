"""The one training loop every cardiolab model uses (VQ-GAN, DiT, segmenter, evaluator, DP fine-tuning).

A model contributes a `step_fn(batch, step, trainer) -> dict of floats` that computes its losses under
`trainer.autocast()` and calls `trainer.backward(loss, name)` once per optimizer. The engine owns
everything else: devices, DDP, AMP, clipping, the LR schedule, EMA, logging, atomic checkpoints and resume.

Precision: amp="auto" on a CPU with native bf16 runs the model's first step in fp32 and bf16 (no update) and keeps
bf16 only where it is finite, agrees with fp32 and is not slower (`Trainer._settle_precision`); config.json says
which and why. Never silent: the first non-finite loss or gradient norm stops the run with one line and exit code
1, its last checkpoint kept.

Determinism: the data order and every random draw are functions of (seed, step, rank) only: each step
re-seeds the RNGs, and the batch of step k is the k-th chunk of a stream of seeded permutations. So a run
that is killed and resumed from its last checkpoint ends with weights bit-identical (on CPU) to one that
was never interrupted, and there is no RNG state to restore.

Opacus (DP-SGD; `cardiolab.dp.mechanism.make_private` builds the pieces): pass the GradSampleModule as the
module, the DPOptimizer as its optimizer, its accountant as `accountant` and the Poisson DataLoader as `data`.
Then one engine step is one Poisson batch of the loader's dataset at its `sample_rate` (not drawn by replaying
the loader), fed to step_fn in chunks of cfg.physical_batch samples as Opacus's BatchMemoryManager does
(`signal_skip_step`); an empty batch is a noise-only step. Release mode (the default): the Poisson mask, the
noise and step_fn's own draws (diffusion timesteps and noise, label dropout) come from the OS's cryptographic
source (os.urandom / secrets), fresh at every step and never stored, so knowing the seed, the code and every other
record does not let anyone replay the run; the DP guarantee needs exactly that secrecy (a public stream of loss
draws would also tie each record's draw to its place in the secret batch, so one record could move the others').
cfg.dp_replayable draws all of them from (seed, step) instead (tests, teaching: not a release).
Either way the accountant's history is checkpointed, so kill -9 + resume keeps epsilon identical (and, replayable,
the weights). The engine skips its own clipping (DP-SGD clips per sample), keeps EMA copies free of the Opacus
hooks, computes per-sample gradients and clipping in fp32 (amp=auto resolves to fp32; bf16 per-sample gradients
let a clipped norm exceed C, so the accountant's sensitivity would not hold), refuses DDP, fp16 and bf16, and
returns no per-step statistic of the private batch (loss, batch size) to the log: only DP outputs leave the run.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from cardiolab.core import (RUN_CONFIG, CardiolabError, PassResult, atomic_path, bf16_verdict, explain_amp,
                            fingerprint, machine_info, pick_device, poisoned_heap, precision_name, project_root,
                            read_stamp, stale, write_json)
from cardiolab.profiles import PROFILE_KEY

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
STATE = "state.json"          # small sidecar: step, steps, finished (readable without loading weights)
METRICS = "metrics.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    steps: int                      # optimizer steps in total
    batch_size: int = 8             # global batch; DDP splits it evenly over ranks
    lr: float = 1e-4                # peak LR of every optimizer group without its own 'initial_lr'
    warmup: int = 100               # linear warm-up steps, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0   # global grad-norm clip (skipped for Opacus optimizers, which clip per sample)
    ema_decay: float | None = None  # EMA of the modules named in Trainer(ema=...)
    ckpt_every: int = 200
    keep_every: int | None = None   # also keep checkpoint-<step>.pt every this many steps (memorization sweeps)
    log_every: int = 10
    amp: str = "auto"               # auto: bf16 where native (core.resolve_amp) | bf16 | fp16 (GPU, GradScaler) | off
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    physical_batch: int | None = None  # DP-SGD: samples per forward/backward (memory); None = the whole Poisson batch
    dp_replayable: bool = False     # DP-SGD: Poisson masks and noise from (seed, step), not secret: never a release

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def poisson_indices(n: int, sample_rate: float, seed: int | None, step: int) -> list[int]:
    """The Poisson batch of `step`: each of n items joins independently with probability sample_rate.

    seed None (release): uniforms from os.urandom (53 random bits each), a fresh secret mask never stored.
    Otherwise a function of (seed, step) only, so a resumed run draws exactly the batches of an uninterrupted one.
    """
    if seed is None:
        u = (np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)) * 2.0 ** -53   # [0, 1)
        return np.flatnonzero(u < sample_rate).tolist()
    g = torch.Generator().manual_seed(_step_seed(seed, step, _POISSON_SLOT))
    return torch.nonzero(torch.rand(n, generator=g) < sample_rate).flatten().tolist()


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to cfg.min_lr_ratio."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside DDP and Opacus wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_module") and isinstance(module._module, nn.Module):  # opacus GradSampleModule
            module = module._module
        else:
            return module


_POISSON_SLOT, _NOISE_SLOT = 63, 62   # seed slots past any rank: DP batch and noise streams of a step


def _step_seed(seed: int, step: int, slot: int) -> int:
    return (seed * 1_000_003 + step) * 64 + slot


def _seed_step(seed: int, step: int, rank: int) -> None:
    s = _step_seed(seed, step, rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def _rng_state() -> tuple:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_rng_state(state: tuple) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])


# `Trainer._settle_precision`'s verdicts, remembered per model, batch shape and CPU kind in the project's runs/
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


def _distributed() -> tuple[int, int]:
    """(rank, world) from torchrun's environment; initialises the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Runs `step_fn` for cfg.steps steps over `data`, checkpointing to run_dir. See the module docstring."""

    def __init__(self, run_dir: str | os.PathLike, cfg: TrainConfig, modules: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], ema: tuple[str, ...] | list[str] = (),
                 config: dict | None = None, accountant: Any = None):
        self.run_dir, self.cfg, self.config = Path(run_dir), cfg, config or {}
        self.accountant = accountant          # Opacus accountant (state_dict/load_state_dict), checkpointed
        self.dp = [opt for opt in optimizers.values() if _is_dp(opt)]
        self.rank, self.world = _distributed()
        if self.dp and self.world > 1:
            raise CardiolabError(f"DP-SGD on {self.world} DDP ranks is not supported: run it in one process")
        self.device = pick_device(cfg.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        self.modules: dict[str, nn.Module] = {}
        for name, module in modules.items():
            module.to(self.device)
            trainable = any(p.requires_grad for p in module.parameters())
            if self.world > 1 and trainable and not isinstance(module, nn.parallel.DistributedDataParallel):
                module = nn.parallel.DistributedDataParallel(module, device_ids=[self.device] if self.device.type == "cuda" else None)
            self.modules[name] = module
        self.optimizers = optimizers
        for opt in optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.ema = {name: _plain_copy(self.raw(name)).eval().requires_grad_(False) for name in ema}
        amp, self.reason = explain_amp(cfg.amp, self.device, "TrainConfig.amp")
        self.precision = precision_name(amp)   # what it really uses; amp=auto on a CPU: `_settle_precision` may
        self.verdict: tuple[str, str] | None = None     # turn bf16 into fp32 at the first step (recorded)
        self._probe: list[torch.Tensor] | None = None
        self.last_finite: dict[str, float] = {}
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        self.machine = machine_info(self.device)
        if self.dp:
            if cfg.amp == "auto":   # per-sample gradients and clipping in fp32 (see the module docstring)
                self.precision, self.amp_dtype = "fp32", None
                self.reason = "auto: DP-SGD clips per-sample gradients in fp32"
            _check_dp_amp(self.amp_dtype)
            for opt in self.dp:  # noise drawn on the parameters' device, re-seeded every step (_dp_step)
                opt.generator = torch.Generator(self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step = 0

    # ---- what step_fn uses -------------------------------------------------------------------
    def raw(self, name: str) -> nn.Module:
        return unwrap(self.modules[name])

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor, name: str) -> float:
        """One optimizer step of `name` on `loss`: zero_grad, backward, clip, step. Returns the grad norm (or nan)."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if self._probe is not None:         # a precision check (`_settle_precision`): gradients only, no update
            loss.backward()
            grads = [p.grad.detach().float().flatten() for g in opt.param_groups for p in g["params"] if p.grad is not None]
            self._probe.append(torch.cat(grads) if grads else torch.zeros(0))
            opt.zero_grad(set_to_none=True)
            return float("nan")
        is_dp = _is_dp(opt)  # Opacus DPOptimizer clips per sample itself
        if not is_dp and not math.isfinite(value := float(loss.detach())):
            self._diverged(f"the {name} loss is {value}")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
        else:
            loss.backward()
        norm = float("nan")
        if self.cfg.grad_clip and not is_dp:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            norm = float(nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
            if not math.isfinite(norm) and self.scaler is None:     # fp16's scaler skips such steps by design
                self._diverged(f"the {name} gradient norm is {norm}")
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        # DP-SGD: check the weights (the mechanism's output, public), never the private loss: stopping on a loss
        # would release one bit about the private batch outside the mechanism
        if is_dp and not all(torch.isfinite(p).all() for g in opt.param_groups for p in g["params"]):
            self._diverged(f"the {name} weights are not finite after a DP-SGD step")
        return norm

    def _diverged(self, what: str) -> None:
        """Stop at the first non-finite loss or gradient: one line, the last good checkpoint kept as it is."""
        saved = json.loads((self.run_dir / STATE).read_text())["step"] if (self.run_dir / STATE).exists() else None
        raise CardiolabError(
            f"{self.run_dir}: training diverged at step {self.step + 1}: {what} (last finite "
            f"{', '.join(f'{k} {v:.4g}' for k, v in self.last_finite.items()) or 'loss: none yet'}; precision "
            f"{self.precision}); {f'the checkpoint of step {saved} is kept' if saved else 'no checkpoint was written'}"
            f" (lower the learning rate, or set amp=off if bf16 is to blame)", exit_code=1)

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self, data: Dataset | DataLoader, step_fn: Callable[[Any, int, "Trainer"], dict], resume: bool = False) -> "Trainer":
        """Train until cfg.steps; with resume=True continue from run_dir/checkpoint.pt if it exists."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and (self.run_dir / CHECKPOINT).exists():
            self._load(load_checkpoint(self.run_dir))
            log.info("resumed %s at step %d", self.run_dir, self.step)
        elif self.rank == 0:
            if (self.run_dir / STATE).exists():   # say so: a run folder's weights are about to be trained over
                log.warning("%s: training anew over the run at step %s there (--resume continues a killed run "
                            "instead)", self.run_dir, json.loads((self.run_dir / STATE).read_text()).get("step"))
            (self.run_dir / METRICS).unlink(missing_ok=True)
        batches = self._batches(data)         # lazy: nothing is read before the first fetch
        first = self._fetch(batches) if self.step < self.cfg.steps else None
        if first is not None and not isinstance(first[0], _PoissonBatch):
            self._settle_precision(_to_device(first[0], self.device), step_fn)
        if self.rank == 0:
            # precision and machine describe this process, not the run's identity: config.json only, never
            # state.json / the checkpoint, whose config run_status compares (another machine must not retrain)
            write_json(self.run_dir / RUN_CONFIG, {"train": self.cfg.to_dict(), **self.config,
                                                      "precision": self.precision, "precision_reason": self.reason,
                                                      "machine": self.machine})
            self._trim_metrics()
        if self.step >= self.cfg.steps:
            return self
        window: dict[str, list[float]] = {}
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc=self.run_dir.name, disable=self.rank != 0,
                   mininterval=2.0, dynamic_ncols=True)
        t0, n = time.perf_counter(), 0
        try:
            while self.step < self.cfg.steps:
                batch, rng = first or self._fetch(batches)
                first = None
                _set_rng_state(rng)      # as right after the fetch, whatever the precision check drew in between
                self._set_lr()
                for m in self.modules.values():
                    m.train()
                if isinstance(batch, _PoissonBatch):
                    out = self._dp_step(batch, step_fn)
                else:
                    out = step_fn(_to_device(batch, self.device), self.step, self)
                self._update_ema()
                self.step, n = self.step + 1, n + 1
                for k, v in out.items():
                    window.setdefault(k, []).append(float(v))
                self.last_finite = {k: float(v) for k, v in out.items() if "loss" in k} or self.last_finite
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                    means = {k: float(np.mean(v)) for k, v in window.items()}
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:3]})
                    self._log({"step": self.step, **means, "lr": self._lr(), "s_per_step": (time.perf_counter() - t0) / n,
                               "precision": self.precision, "machine": self._machine_label()})
                    window, t0, n = {}, time.perf_counter(), 0
                if self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.steps or self._keep():
                    self.save()
        finally:
            bar.close()
        return self

    def _fetch(self, batches: Iterator[Any]) -> tuple[Any, tuple]:
        """The next batch and the RNG state right after fetching it (each step seeds the RNGs before its fetch:
        augmentations are seeded too)."""
        _seed_step(self.cfg.seed, self.step, self.rank)
        return next(batches), _rng_state()

    # ---- precision: bf16 where this CPU computes this model right and fast -----------------------------
    def _settle_precision(self, batch: Any, step_fn: Callable[[Any, int, "Trainer"], dict]) -> None:
        """amp=auto on a CPU with native bf16: run this model's first step in fp32 and in bf16 (no update) and
        keep bf16 only where `core.bf16_verdict` finds it finite, close to fp32 and not slower.

        Why: oneDNN's bf16 kernels have shape-specific bugs on some CPU kinds (e.g. the Conv3d weight gradient
        of an input two voxels deep reads memory it never wrote on AVX-512 BF16 without AMX: NaN or 1e36), and
        bf16 is slower than fp32 for some models on some kinds. The passes run on a poisoned heap
        (`core.poisoned_heap`) so that such a read shows. Verdicts are remembered per model, batch shape and CPU
        kind (runs/precision-verdicts.json; delete it to measure again); a resumed run keeps its checkpoint's.
        """
        if self.verdict is not None or self.cfg.amp != "auto" or self.amp_dtype != torch.bfloat16 \
                or self.device.type != "cpu" or self.dp:
            return
        key = _signature(self.modules, batch, self.config)
        if key not in _verdicts():
            saved = {n: copy.deepcopy(self.raw(n).state_dict()) for n in self.modules}
            passes: dict[str, list[PassResult]] = {"fp32": [], "bf16": []}
            for precision in ("fp32", "bf16") * 3:            # the first pass of each warms oneDNN's kernels up
                _wake_zero_parameters(self.modules.values())
                passes[precision].append(self._probe_pass(batch, step_fn, precision))
                for n, sd in saved.items():
                    self.raw(n).load_state_dict(sd)
            _remember(key, bf16_verdict(passes["fp32"][1:], passes["bf16"][1:]))
        self.verdict = _VERDICTS[key]
        self.precision, self.reason = self.verdict
        self.amp_dtype = torch.bfloat16 if self.precision == "bf16" else None
        if self.precision != "bf16":
            log.warning("%s: %s", self.run_dir, self.reason)

    def _probe_pass(self, batch: Any, step_fn: Callable[[Any, int, "Trainer"], dict], precision: str) -> PassResult:
        self.amp_dtype, self._probe = (torch.bfloat16 if precision == "bf16" else None), []
        _seed_step(self.cfg.seed, self.step, self.rank)
        try:
            with poisoned_heap():
                t0 = time.perf_counter()
                out = step_fn(batch, self.step, self)
                seconds = time.perf_counter() - t0
        finally:
            grads, self._probe = self._probe, None
        return PassResult([float(v) for k, v in out.items() if "loss" in k], grads, seconds)

    def _batches(self, data: Dataset | DataLoader) -> Iterator[Any]:
        if self.dp:
            if not isinstance(data, DataLoader) or not hasattr(data, "sample_rate"):
                raise CardiolabError("DP-SGD needs the Poisson DataLoader of make_private (its sample_rate is "
                                     "the one the accountant uses)")
            n, chunk = len(data.dataset), self.cfg.physical_batch
            for step in range(self.step, self.cfg.steps):
                idx = poisson_indices(n, data.sample_rate, self.cfg.seed if self.cfg.dp_replayable else None, step)
                size = chunk or max(1, len(idx))
                yield _PoissonBatch(data.dataset, data.collate_fn, [idx[i:i + size] for i in range(0, len(idx), size)])
            return
        if isinstance(data, DataLoader):   # a given loader: replay to the step
            stream = _cycle(data)
            for _ in range(self.step):
                next(stream)
            yield from stream
            return
        sampler = StreamBatchSampler(len(data), self.cfg.batch_size, self.cfg.seed, self.step, self.cfg.steps,
                                     self.rank, self.world)
        yield from DataLoader(data, batch_sampler=sampler, num_workers=self.cfg.num_workers,
                              generator=torch.Generator().manual_seed(self.cfg.seed),
                              pin_memory=self.device.type == "cuda")

    def _dp_step(self, batch: "_PoissonBatch", step_fn: Callable[[Any, int, "Trainer"], dict]) -> dict:
        """One DP-SGD step over a Poisson batch: step_fn per chunk, noise + update after the last (as BatchMemoryManager).

        Returns {}: step_fn's losses and the batch size are statistics of the private batch outside the mechanism.
        """
        for opt in self.dp:   # replayable: from (seed, step); release: 64 fresh bits of the OS CSPRNG, never stored
            opt.generator.manual_seed(_step_seed(self.cfg.seed, self.step, _NOISE_SLOT) if self.cfg.dp_replayable
                                      else secrets.randbits(64))
        if not self.cfg.dp_replayable:    # step_fn's draws (t, noise, dropout) secret too; fit re-seeds next step
            _secret_reseed()
        if not batch.chunks:
            for opt in self.dp:
                _noise_only_step(opt)
            return {}
        for i, idx in enumerate(batch.chunks):
            if i < len(batch.chunks) - 1:       # accumulate clipped grads; no noise, no update yet
                for opt in self.dp:
                    opt.signal_skip_step(True)
            chunk = _to_device(batch.collate([batch.dataset[j] for j in idx]), self.device)
            step_fn(chunk, self.step, self)
        return {}

    def _set_lr(self) -> None:
        f = lr_factor(self.step, self.cfg)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * f

    def _lr(self) -> float:
        opt = next(iter(self.optimizers.values()), None)
        return float(opt.param_groups[0]["lr"]) if opt else 0.0

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not self.ema:
            return
        decay = min(self.cfg.ema_decay or 0.0, (1 + self.step) / (10 + self.step))  # warm-up: early EMA tracks fast
        for name, ema in self.ema.items():
            src = self.raw(name)
            for pe, p in zip(ema.parameters(), src.parameters()):
                pe.lerp_(p.detach(), 1 - decay)
            for be, b in zip(ema.buffers(), src.buffers()):
                be.copy_(b)

    def _machine_label(self) -> str:
        """Short form of self.machine for every metrics.jsonl record: GPU name, else the CPU capability."""
        return self.machine["gpu"] or f"cpu {self.machine['cpu_capability']}"

    # ---- checkpoints and logs ----------------------------------------------------------------
    def save(self) -> None:
        """Write run_dir/checkpoint.pt atomically (rank 0), then the state.json sidecar."""
        if self.rank == 0:
            state = {
                "step": self.step,
                "modules": {n: self.raw(n).state_dict() for n in self.modules},
                "ema": {n: m.state_dict() for n, m in self.ema.items()},
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "scaler": self.scaler.state_dict() if self.scaler else {},
                "accountant": self.accountant.state_dict() if self.accountant is not None else {},
                "precision": list(self.verdict or ()),    # amp=auto's measured choice: a resumed run keeps it
                "config": json.loads(json.dumps({"train": self.cfg.to_dict(), **self.config}, default=str)),
            }
            with atomic_path(self.run_dir / CHECKPOINT) as tmp:
                torch.save(state, tmp)
            if self._keep():
                with atomic_path(self.run_dir / kept_checkpoint(self.step)) as tmp:
                    torch.save(state, tmp)
            write_json(self.run_dir / STATE, {"step": self.step, "steps": self.cfg.steps,
                                              "finished": self.step >= self.cfg.steps, "config": state["config"]})
        if self.world > 1:
            dist.barrier()

    def _keep(self) -> bool:
        """Whether this step's checkpoint is also kept as checkpoint-<step>.pt (cfg.keep_every)."""
        k = self.cfg.keep_every
        return bool(k) and (self.step % k == 0 or self.step == self.cfg.steps)

    def _load(self, ckpt: dict) -> None:
        self.step = int(ckpt["step"])
        if ckpt.get("precision") and self.cfg.amp == "auto" and self.device.type == "cpu" and self.amp_dtype is not None:
            self.verdict = tuple(ckpt["precision"])
            self.precision, self.reason = self.verdict
            self.amp_dtype = torch.bfloat16 if self.precision == "bf16" else None
        for n, sd in ckpt["modules"].items():
            self.raw(n).load_state_dict(sd)
        for n, sd in ckpt["ema"].items():
            self.ema[n].load_state_dict(sd)
        for n, sd in ckpt["optimizers"].items():
            self.optimizers[n].load_state_dict(sd)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.accountant is not None:
            if not ckpt.get("accountant"):
                raise CardiolabError(f"{self.run_dir / CHECKPOINT}: no accountant state to resume DP-SGD from")
            self.accountant.load_state_dict(ckpt["accountant"])

    def _log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.run_dir / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _trim_metrics(self) -> None:
        """On resume, drop log lines written after the checkpoint (they will be written again)."""
        path = self.run_dir / METRICS
        if not path.exists():
            return
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= self.step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))


@dataclass
class _PoissonBatch:
    """One DP-SGD step's Poisson batch as index chunks (physical batches), fetched chunk by chunk."""
    dataset: Dataset
    collate: Callable[[list], Any]
    chunks: list[list[int]]


def _is_dp(opt: torch.optim.Optimizer) -> bool:
    return hasattr(opt, "noise_multiplier") and hasattr(opt, "signal_skip_step")   # Opacus DPOptimizer


def _check_dp_amp(dtype: torch.dtype | None) -> None:
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


def _plain_copy(module: nn.Module) -> nn.Module:
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


def _cycle(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def kept_checkpoint(step: int) -> str:
    """File name of the checkpoint kept at `step` (TrainConfig.keep_every)."""
    return f"checkpoint-{int(step)}.pt"


def kept_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """[(step, path)] of a run's kept checkpoints, by step."""
    found = []
    for path in Path(run_dir).glob("checkpoint-*.pt"):
        step = path.stem.partition("-")[2]
        if step.isdigit():
            found.append((int(step), path))
    return sorted(found)


def load_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load run_dir/checkpoint.pt (or a .pt path) with weights_only=True; clear error if missing or corrupt."""
    path = Path(run_dir)
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.exists():
        raise CardiolabError(f"{path}: no checkpoint (train the model first)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of a non-tensor object, ...
        raise CardiolabError(f"{path}: cannot load checkpoint ({type(e).__name__}: {e})") from None
    for part in ("modules", "ema"):
        for name, sd in (ckpt.get(part) or {}).items() if isinstance(ckpt, dict) else ():
            bad = [k for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
            if bad:
                raise CardiolabError(f"{path}: {len(bad)} weights of {part} '{name}' hold NaN or inf (first: {bad[0]});"
                                     " the run diverged, retrain it", exit_code=1)
    return ckpt


def run_status(run_dir: str | os.PathLike, steps: int, match: dict | None = None) -> str:
    """What `ensure_*` should do with run_dir: 'finished' (use it), 'partial' (resume it) or 'fresh' (train anew).

    match: config entries (e.g. {"shaping": ...}) the run must have been trained with, compared by the one
    staleness rule (`core.stale`); a run of another configuration is 'fresh', so a changed profile retrains
    instead of resuming incompatible weights.
    """
    return _run_state(run_dir, steps, match)[0]


def _run_state(run_dir: str | os.PathLike, steps: int, match: dict | None = None) -> tuple[str, str]:
    """(`run_status`, why: '' or what made the run stale)."""
    state = read_stamp(Path(run_dir) / STATE)
    if state is None or not (Path(run_dir) / CHECKPOINT).exists():
        return "fresh", "missing"
    if why := stale(state.get("config", {}), match or {}):
        return "fresh", why
    return ("finished" if state.get("finished") and state.get("step", 0) >= steps else "partial"), ""


def recorded_shaping(run_dir: str | os.PathLike) -> dict:
    """The shaping a run recorded with its last checkpoint (see `ensure_run`); {} for a run without one."""
    path = Path(run_dir) / STATE
    return json.loads(path.read_text()).get("config", {}).get("shaping", {}) if path.exists() else {}


def run_id(run_dir: str | os.PathLike) -> str:
    """Id of a trained run's weights: its recorded shaping and step (samples and latents record it)."""
    path = Path(run_dir) / STATE
    step = json.loads(path.read_text()).get("step") if path.exists() else None
    return fingerprint({"shaping": recorded_shaping(run_dir), "step": step})


def ensure_run(run_dir: str | os.PathLike, steps: int, shaping: dict, train: Callable[[bool], Any],
               require: tuple[str, ...] = ()) -> Path:
    """`train(resume)` unless run_dir finished with exactly this `shaping` (the one staleness rule, `core.stale`).

    shaping: the config fields that shape the run's weights (step counts included) plus the ids of the runs it was
    built from (each task's `shaping(profile)`); the run records it in its config as "shaping". Settings outside it
    (sampling, evaluation, precision) never retrain; a partial run (killed before its last step) is resumed.
    require: files a finished run also writes after training (e.g. "scores.json"); when one is missing (killed
    between the last checkpoint and writing it) the run is resumed, which redoes only that work.
    """
    status, why = _run_state(run_dir, steps, {"shaping": shaping})
    if status == "finished" and not all((Path(run_dir) / name).exists() for name in require):
        status = "partial"
    if status != "finished":
        what = ("partial run, resuming" if status == "partial" else "no run yet" if why == "missing"
                else f"stale ({why}), retraining")
        log.info("%s: %s", run_dir, what)
        train(status == "partial")
    return Path(run_dir)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of run_dir/metrics.jsonl."""
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def training_curves(run_dir: str | os.PathLike):
    """metrics.jsonl of a run as a pandas DataFrame indexed by step (for the training figures)."""
    import pandas as pd

    records = read_metrics(run_dir)
    if not records:
        raise CardiolabError(f"{Path(run_dir) / METRICS}: no training log")
    return pd.DataFrame.from_records(records).set_index("step")
