"""Diffusion for latent generators: MONAI schedulers underneath, v-prediction loss, DDPM/DDIM samplers.

One scheduler API everywhere (MONAI's, like diffusers'): `set_timesteps(n)`, `add_noise(x0, noise, t)`,
`get_velocity(x0, noise, t)` and `step(model_out, t, x_t) -> (x_prev, x0_pred)`. Samplers loop over
`scheduler.timesteps` and never touch alphas. CardioDiT's choice (arXiv 2603.25194): cosine schedule,
300 training steps, v-prediction, smooth-L1 loss, DDIM sampling.

The denoiser is any module called as `model(x_t, t, cond)` (and `model.forward_with_cfg(x_t, t, cond, s)`
for guidance); it knows nothing of schedules.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, Scheduler
from torch import nn
from tqdm import tqdm

from cardiolab.core import CardiolabError

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


def create_scheduler(cfg: DiffusionConfig = DiffusionConfig(), sampler: str = "ddpm") -> Scheduler:
    """The one factory: a MONAI 'ddpm' (training, ancestral sampling) or 'ddim' scheduler for cfg."""
    kinds = {"ddpm": DDPMScheduler, "ddim": EvenDDIMScheduler}
    if sampler not in kinds:
        raise CardiolabError(f"unknown sampler {sampler!r}: choose one of {', '.join(kinds)}")
    return kinds[sampler](num_train_timesteps=cfg.train_timesteps, schedule=cfg.schedule,
                          prediction_type=cfg.prediction_type, clip_sample=cfg.clip_sample)


def training_target(scheduler: Scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network regresses: v (scheduler.get_velocity), eps or x0, per the scheduler's prediction_type."""
    kind = scheduler.prediction_type
    if kind == "v_prediction":
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
    t = torch.randint(0, scheduler.num_train_timesteps, (B,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    target = training_target(scheduler, x0, noise, t)
    pred = model(x_t, t, cond).float()
    if loss == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if loss == "mse":
        return F.mse_loss(pred, target)
    raise CardiolabError(f"unknown diffusion loss {loss!r}: choose smooth_l1 or mse")


@torch.no_grad()
def sample(model: nn.Module, scheduler: Scheduler, shape: tuple[int, ...], steps: int = 50,
           cond: torch.Tensor | None = None, guidance: float = 1.0, eta: float = 0.0,
           generator: torch.Generator | None = None, device: torch.device | str = "cpu",
           autocast: bool = False, progress: bool = False) -> torch.Tensor:
    """Draw latents by running the reverse process from pure noise over `steps` of scheduler.timesteps.

    shape: (B, C, D, H, W, T); cond: (B, A) or None; guidance: classifier-free guidance scale (1 = off);
    eta: DDIM stochasticity (0 = deterministic given the initial noise). The initial noise and any step
    noise come from `generator` (made on the CPU so that a seed gives the same samples on any device).
    Returns (B, C, D, H, W, T) fp32 latents in the model's (scaled) space.
    """
    if steps < 1 or steps > scheduler.num_train_timesteps:
        raise CardiolabError(f"sampling steps must be in 1..{scheduler.num_train_timesteps}, got {steps}")
    if isinstance(scheduler, DDPMScheduler) and steps != scheduler.num_train_timesteps:
        # MONAI's DDPM step always goes t -> t-1: it is only correct over the full chain
        raise CardiolabError(f"the DDPM sampler runs all {scheduler.num_train_timesteps} steps; use DDIM for {steps}")
    device = torch.device(device)
    scheduler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator).to(device)
    if cond is not None:
        cond = cond.to(device)
    step_kwargs = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
    was_training = model.training
    model.eval()
    for t in tqdm(scheduler.timesteps, desc="sampling", disable=not progress, leave=False):
        tt = torch.full((shape[0],), int(t), dtype=torch.long, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if guidance != 1.0 and cond is not None:
                out = model.forward_with_cfg(x, tt, cond, guidance)
            else:
                out = model(x, tt, cond)
        noise_gen = generator if eta > 0 or not isinstance(scheduler, DDIMScheduler) else None
        x, _ = scheduler.step(out.float().cpu(), int(t), x.cpu(), generator=noise_gen, **step_kwargs)
        x = x.to(device)
    model.train(was_training)
    return x.cpu()
