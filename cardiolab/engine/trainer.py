"""The one training loop (`Trainer`) and its config; see `cardiolab.engine` for the contract."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cardiolab.core import (RUN_CONFIG, CardiolabError, atomic_path, explain_amp, machine_info, pick_device,
                            precision_name, to_device, write_json)
from cardiolab.engine.determinism import StreamBatchSampler, rng_state, seed_step, set_rng_state
from cardiolab.engine.dpsgd import PoissonBatch, check_dp_amp, dp_step, is_dp, poisson_indices
from cardiolab.engine.precision import settle_precision
from cardiolab.engine.runs import CHECKPOINT, METRICS, STATE, kept_checkpoint, load_checkpoint
from cardiolab.engine.wrappers import plain_copy, unwrap

log = logging.getLogger(__name__)


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


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to cfg.min_lr_ratio."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


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
        self.dp = [opt for opt in optimizers.values() if is_dp(opt)]
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
        self.ema = {name: plain_copy(self.raw(name)).eval().requires_grad_(False) for name in ema}
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
            check_dp_amp(self.amp_dtype)
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
        per_sample = is_dp(opt)  # Opacus DPOptimizer clips per sample itself
        if not per_sample and not math.isfinite(value := float(loss.detach())):
            self._diverged(f"the {name} loss is {value}")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
        else:
            loss.backward()
        norm = float("nan")
        if self.cfg.grad_clip and not per_sample:
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
        if per_sample and not all(torch.isfinite(p).all() for g in opt.param_groups for p in g["params"]):
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
        if first is not None and not isinstance(first[0], PoissonBatch):
            self._settle_precision(to_device(first[0], self.device), step_fn)
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
                set_rng_state(rng)      # as right after the fetch, whatever the precision check drew in between
                self._set_lr()
                for m in self.modules.values():
                    m.train()
                if isinstance(batch, PoissonBatch):
                    out = self._dp_step(batch, step_fn)
                else:
                    out = step_fn(to_device(batch, self.device), self.step, self)
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
        seed_step(self.cfg.seed, self.step, self.rank)
        return next(batches), rng_state()

    # ---- precision: bf16 where this CPU computes this model right and fast (`engine.precision`) ---------------
    def _settle_precision(self, batch: Any, step_fn: Callable[[Any, int, "Trainer"], dict]) -> None:
        settle_precision(self, batch, step_fn)

    def _batches(self, data: Dataset | DataLoader) -> Iterator[Any]:
        if self.dp:
            if not isinstance(data, DataLoader) or not hasattr(data, "sample_rate"):
                raise CardiolabError("DP-SGD needs the Poisson DataLoader of make_private (its sample_rate is "
                                     "the one the accountant uses)")
            n, chunk = len(data.dataset), self.cfg.physical_batch
            for step in range(self.step, self.cfg.steps):
                idx = poisson_indices(n, data.sample_rate, self.cfg.seed if self.cfg.dp_replayable else None, step)
                size = chunk or max(1, len(idx))
                yield PoissonBatch(data.dataset, data.collate_fn, [idx[i:i + size] for i in range(0, len(idx), size)])
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

    def _dp_step(self, batch: PoissonBatch, step_fn: Callable[[Any, int, "Trainer"], dict]) -> dict:
        return dp_step(self, batch, step_fn)

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


def _cycle(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader
