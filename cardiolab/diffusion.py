"""Diffusion for latent and pixel generators: MONAI schedulers underneath, v-prediction loss, DDPM/DDIM
samplers, and rectified flow (flow matching) with an Euler ODE sampler behind the same two calls.

One scheduler API everywhere (MONAI's, like diffusers'): `set_timesteps(n)`, `add_noise(x0, noise, t)`,
`get_velocity(x0, noise, t)` and `step(model_out, t, x_t) -> (x_prev, x0_pred)`. Samplers loop over
`scheduler.timesteps` and never touch alphas. CardioDiT's choice (arXiv 2603.25194): cosine schedule,
300 training steps, v-prediction, smooth-L1 loss, DDIM sampling. `create_scheduler(cfg, "rflow")` gives a
`RectifiedFlowScheduler`; `diffusion_loss`, `per_sample_loss` and `sample` work with it unchanged.

The denoiser is any module called as `model(x_t, t, cond)` (and `model.forward_with_cfg(x_t, t, cond, s)`
for guidance); it knows nothing of schedules.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, Scheduler
from torch import nn
from tqdm import tqdm

from cardiolab.core import RUN_CONFIG, CardiolabError, cpu_features, resolve_amp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiffusionConfig:
    train_timesteps: int = 300            # CardioDiT: 300 steps suffice for a cosine schedule on unit-variance latents
    schedule: str = "cosine"              # MONAI NoiseSchedules name (Nichol & Dhariwal 2021)
    prediction_type: str = "v_prediction"  # v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)
    loss: str = "smooth_l1"               # CardioDiT: robust to the heavy tails of VQ latents
    # Scaled latents have unit variance, so MONAI's default x0 clip to [-1, 1] would cut real values off.
    clip_sample: bool = False


class EvenDDIMScheduler(DDIMScheduler):
    """MONAI's DDIM with evenly spaced ("leading") timesteps t_k = k * (T // n), as in the DDIM paper.

    MONAI's DDIM step always jumps to t - T // n, but its set_timesteps uses linspace(T - 1, 0, n); for n not
    dividing T - 1 the two drift apart (n = 5 of 300: the step lands on t - 60 while the next model call is
    at t - 75), so the model is asked to denoise at the wrong noise level. Here they agree exactly.
    """

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        super().set_timesteps(num_inference_steps, device)
        stride = self.num_train_timesteps // num_inference_steps
        self.timesteps = (torch.arange(num_inference_steps - 1, -1, -1, device=device) * stride
                          + self.steps_offset).long()


class RectifiedFlowScheduler:
    """Rectified flow (Liu et al. 2022; flow matching, Lipman et al. 2022) in the scheduler API, any tensor rank.

    Why not MONAI's RFlowScheduler: it needs monai>=1.5 (pyproject allows 1.4), its add_noise accepts only
    4D/5D tensors (cine latents are 6D), its step takes an extra next_timestep and it has no get_velocity.
    The convention is MONAI's, so a model trained with either scheduler samples with the other:

        s = t / T in [0, 1]                          (t = T: pure noise, t = 0: data)
        x_t = (1 - s) x0 + s eps                     (add_noise: a straight line from data to noise)
        v = dx/d(-s) = x0 - eps                      (get_velocity: the regression target, constant along the line)
        x_{t'} = x_t + (s - s') v                    (step: one Euler step of the ODE towards the data)

    Training draws integer t in 1..T (`draw_timesteps`), so the model also sees pure noise (s = 1), where
    sampling starts; sampling runs `n` Euler steps over the integer grid round(linspace(T, 0, n + 1)).
    """

    prediction_type = "flow"

    def __init__(self, num_train_timesteps: int = 1000):
        if num_train_timesteps < 1:
            raise CardiolabError(f"rflow: num_train_timesteps must be >= 1, got {num_train_timesteps}")
        self.num_train_timesteps = num_train_timesteps
        self.set_timesteps(num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        T = self.num_train_timesteps
        if not 1 <= num_inference_steps <= T:
            raise CardiolabError(f"sampling steps must be in 1..{T}, got {num_inference_steps}")
        grid = torch.linspace(T, 0, num_inference_steps + 1, dtype=torch.float64).round().long()
        self._next = dict(zip(grid[:-1].tolist(), grid[1:].tolist()))  # distinct as n <= T
        self.timesteps = grid[:-1].to(device)

    def draw_timesteps(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch,) training steps t ~ U{1..T}."""
        return torch.randint(1, self.num_train_timesteps + 1, (batch,), generator=generator)

    def _s(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """t (B,) -> s = t / T shaped (B, 1, ..., 1) to broadcast over a sample of any rank."""
        s = t.to(like.device, torch.float32) / self.num_train_timesteps
        return s.view(-1, *[1] * (like.ndim - 1))

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        s = self._s(timesteps, original_samples)
        return (1 - s) * original_samples + s * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return sample - noise

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One Euler step from t to the next grid step; returns (x_next, x0_pred). `generator` is unused (an ODE).

        Key: v = model_output (predicted x0 - eps), s = t / T, s' = next t / T.
        """
        T, t = self.num_train_timesteps, int(timestep)
        if t not in self._next:
            raise CardiolabError(f"rflow: step {t} is not on the sampling grid; call set_timesteps first")
        s, s_next = t / T, self._next[t] / T
        # 1. the clean sample this velocity points at: x0 = x_t + s v
        x0_pred = sample + s * model_output
        # 2. Euler step along the (straight, if v is exact) path
        return sample + (s - s_next) * model_output, x0_pred


def create_scheduler(cfg: DiffusionConfig = DiffusionConfig(), sampler: str = "ddpm") -> Scheduler | RectifiedFlowScheduler:
    """The one factory: a MONAI 'ddpm' (training, ancestral sampling) or 'ddim' scheduler for cfg, or 'rflow'
    (rectified flow over cfg.train_timesteps; its target is x0 - eps whatever cfg.prediction_type says)."""
    kinds = {"ddpm": DDPMScheduler, "ddim": EvenDDIMScheduler, "rflow": RectifiedFlowScheduler}
    if sampler not in kinds:
        raise CardiolabError(f"unknown sampler {sampler!r}: choose one of {', '.join(kinds)}")
    if sampler == "rflow":
        return RectifiedFlowScheduler(cfg.train_timesteps)
    return kinds[sampler](num_train_timesteps=cfg.train_timesteps, schedule=cfg.schedule,
                          prediction_type=cfg.prediction_type, clip_sample=cfg.clip_sample)


def training_target(scheduler: Scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network regresses: v (scheduler.get_velocity), eps or x0, per the scheduler's prediction_type;
    for rectified flow ("flow") the velocity x0 - eps."""
    kind = scheduler.prediction_type
    if kind in ("v_prediction", "flow"):
        return scheduler.get_velocity(x0, noise, t)
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    raise CardiolabError(f"unsupported prediction_type {kind!r}")


def diffusion_loss(model: nn.Module | Callable, scheduler: Scheduler, x0: torch.Tensor,
                   cond: torch.Tensor | None = None, loss: str = "smooth_l1",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """One Monte-Carlo term of the diffusion loss for a batch of clean (scaled) latents.

    x0: (B, C, D, H, W, T); cond: (B, A) attribute codes or None. Draws t ~ U{0..T-1} and eps ~ N(0, I)
    (from `generator`, else torch's global RNG, which the engine reseeds every step). Returns a scalar.
    Call under the trainer's autocast: the network runs in bf16, the noise and the loss stay in fp32.
    """
    B = x0.shape[0]
    x0 = x0.float()
    if isinstance(scheduler, RectifiedFlowScheduler):
        t = scheduler.draw_timesteps(B, generator).to(x0.device)
    else:
        t = torch.randint(0, scheduler.num_train_timesteps, (B,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    target = training_target(scheduler, x0, noise, t)
    pred = model(x_t, t, cond).float()
    return _loss_fn(loss)(pred, target)


def _loss_fn(loss: str) -> Callable:
    kinds = {"smooth_l1": F.smooth_l1_loss, "mse": F.mse_loss}
    if loss not in kinds:
        raise CardiolabError(f"unknown diffusion loss {loss!r}: choose smooth_l1 or mse")
    return kinds[loss]


def per_sample_loss(model: nn.Module | Callable, scheduler: Scheduler | RectifiedFlowScheduler, x0: torch.Tensor,
                    t: torch.Tensor, noise: torch.Tensor, cond: torch.Tensor | None = None,
                    loss: str = "smooth_l1") -> torch.Tensor:
    """The diffusion loss of each sample at given steps and noise: (B,), for membership-inference audits.

    x0, noise: (B, C, ...) (5D or 6D); t: (B,) steps; cond: (B, A) or None. Fixing (t, noise) makes the
    number comparable between members and non-members. The mean over the batch equals diffusion_loss's
    value for the same draws. Runs the model as it is (call model.eval() first to switch label dropout off).
    """
    x0, noise = x0.float(), noise.float().to(x0.device)
    t = t.to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    target = training_target(scheduler, x0, noise, t)
    pred = model(x_t, t, cond).float()
    return _loss_fn(loss)(pred, target, reduction="none").flatten(1).mean(1)  # (B,)


def sampling_precision(amp: str, device: torch.device | str, run_dir: str | os.PathLike | None = None) -> str:
    """What `sample` should run a model trained with `amp` in on `device`: "bf16" where amp resolves to bf16 (native
    only: `core.resolve_amp`), else "fp32" (sampling never uses fp16). Pass autocast=(result == "bf16").

    run_dir: the run; where its training measured bf16 wrong or slow on this very CPU kind (config.json,
    `engine.precision.settle_precision`), sampling keeps fp32 too.
    """
    if resolve_amp(amp, device, "amp") != "bf16":
        return "fp32"
    config = Path(run_dir) / RUN_CONFIG if run_dir is not None else None
    if amp == "auto" and torch.device(device).type == "cpu" and config is not None and config.exists():
        recorded = json.loads(config.read_text())
        if recorded.get("precision") == "fp32" and recorded.get("machine", {}).get("cpu_kind") == cpu_features()["cpu_kind"]:
            return "fp32"
    return "bf16"


@torch.no_grad()
def sample(model: nn.Module, scheduler: Scheduler | RectifiedFlowScheduler, shape: tuple[int, ...], steps: int = 50,
           cond: torch.Tensor | dict[str, torch.Tensor] | None = None, guidance: float = 1.0, eta: float = 0.0,
           generator: torch.Generator | None = None, device: torch.device | str = "cpu",
           autocast: bool = False, progress: bool = False,
           callback: Callable[[int, torch.Tensor], None] | None = None, callback_every: int = 1) -> torch.Tensor:
    """Draw latents by running the reverse process from pure noise over `steps` of scheduler.timesteps.

    shape: (B, C, D, H, W, T) or (B, C, H, W, T); cond: (B, A), a dict of tensors or None; guidance: classifier-free guidance
    scale (1 = off); eta: DDIM stochasticity (0 = deterministic given the initial noise). The initial noise
    and any step noise come from `generator` (made on the CPU so that a seed gives the same samples on any
    device). With a RectifiedFlowScheduler the loop is an Euler ODE solver (eta has no effect).
    callback(i, x0_pred) is called after steps i = k-1, 2k-1, ... (k = callback_every) and after the last
    step, with the CPU fp32 x0 prediction of that step: a denoising trajectory for figures.
    Returns (B, C, D, H, W, T) fp32 latents in the model's (scaled) space.
    """
    if callback_every < 1:
        raise CardiolabError(f"callback_every must be >= 1, got {callback_every}")
    if steps < 1 or steps > scheduler.num_train_timesteps:
        raise CardiolabError(f"sampling steps must be in 1..{scheduler.num_train_timesteps}, got {steps}")
    if isinstance(scheduler, DDPMScheduler) and steps != scheduler.num_train_timesteps:
        # MONAI's DDPM step always goes t -> t-1: it is only correct over the full chain
        raise CardiolabError(f"the DDPM sampler runs all {scheduler.num_train_timesteps} steps; use DDIM for {steps}")
    device = torch.device(device)
    scheduler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator).to(device)
    if isinstance(cond, dict):                     # networks with several inputs (models.unet: slice, mask)
        cond = {k: v.to(device) for k, v in cond.items()}
    elif cond is not None:
        cond = cond.to(device)
    step_kwargs = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
    was_training = model.training
    model.eval()
    for i, t in enumerate(tqdm(scheduler.timesteps, desc="sampling", disable=not progress, leave=False)):
        tt = torch.full((shape[0],), int(t), dtype=torch.long, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if guidance != 1.0 and cond is not None:
                out = model.forward_with_cfg(x, tt, cond, guidance)
            else:
                out = model(x, tt, cond)
        noise_gen = generator if eta > 0 or not isinstance(scheduler, DDIMScheduler) else None
        x, x0_pred = scheduler.step(out.float().cpu(), int(t), x.cpu(), generator=noise_gen, **step_kwargs)
        x = x.to(device)
        if callback is not None and ((i + 1) % callback_every == 0 or i == steps - 1):
            callback(i, x0_pred)
    model.train(was_training)
    return x.cpu()


def v_to_epsilon(v: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """The noise a v-prediction implies: eps = sqrt(abar) v + sqrt(1 - abar) x_t (Salimans & Ho 2022).

    v, x_t: (B, ...) of one shape; alpha_bar: a float or (B,), the scheduler's alphas_cumprod[t], broadcast over
    the sample's remaining axes. Needed by the PIA attack, which compares predicted noises.
    """
    abar = torch.as_tensor(alpha_bar, dtype=v.dtype, device=v.device)
    abar = abar.reshape(abar.shape + (1,) * (v.ndim - abar.ndim)) if abar.ndim else abar
    return abar.sqrt() * v + (1.0 - abar).sqrt() * x_t
