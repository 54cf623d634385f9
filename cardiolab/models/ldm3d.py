"""Latent 3D diffusion UNet for whole-heart volumes, after MedLoRD (arXiv 2503.13211): stage 2.

MONAI's DiffusionModelUNet with MedLoRD's shape (widths 64/128/256/512, self-attention only at the two
lowest-resolution levels, where the token count is small) plus what MONAI lacks for large volumes:
per-block gradient checkpointing. Attention runs through PyTorch's scaled_dot_product_attention
(MONAI's `use_flash_attention`), which never materialises the (N, N) attention matrix on GPUs that
support it. Called as `model(x_t, t)` like every cardiolab denoiser (cardiolab.diffusion); a ControlNet
adds its residuals through `down_residuals` / `mid_residual` (cardiolab.models.controlnet_slim).

Shapes: x (B, C_z, h, w, d) latent of a (B, 1, X, Y, Z) volume; t (B,) timesteps; output like x.
Each latent axis must be divisible by 2 ** (levels - 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn
from torch.utils.checkpoint import checkpoint

from cardiolab.core import CardiolabError


@dataclass(frozen=True)
class LDM3DConfig:
    in_channels: int = 8                         # C_z of the VQ-GAN latent (MedLoRD: 8)
    channels: tuple[int, ...] = (64, 128, 256, 512)     # MedLoRD's widths; one stride-2 level between each
    attention_levels: tuple[bool, ...] = (False, False, True, True)   # attention where tokens are few
    res_blocks: int = 2                          # residual blocks per level (MONAI default)
    head_channels: int = 32                      # channels per attention head
    norm_groups: int = 32                        # GroupNorm groups; every width must be a multiple
    flash_attention: bool = True                 # SDPA attention (memory-efficient kernels where available)
    checkpointing: bool = False                  # recompute each down/mid/up block in backward

    @property
    def downsample(self) -> int:
        """How much the UNet shrinks each latent axis: 2 ** (levels - 1)."""
        return 2 ** (len(self.channels) - 1)


class LatentUNet3D(DiffusionModelUNet):
    """MONAI DiffusionModelUNet (3D, unconditional) with a per-block gradient checkpointing switch.

    The state_dict is MONAI's, whatever `checkpointing` says: the switch only changes what the backward
    pass recomputes.
    """

    def __init__(self, cfg: LDM3DConfig):
        if len(cfg.channels) != len(cfg.attention_levels):
            raise CardiolabError(f"ldm3d: attention_levels {cfg.attention_levels} needs one entry per width "
                                 f"in channels {cfg.channels}")
        if any(c % cfg.norm_groups for c in cfg.channels):
            raise CardiolabError(f"ldm3d: channels {cfg.channels} must be multiples of norm_groups "
                                 f"{cfg.norm_groups}")
        super().__init__(
            spatial_dims=3, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
            num_res_blocks=cfg.res_blocks, channels=cfg.channels, attention_levels=cfg.attention_levels,
            norm_num_groups=cfg.norm_groups, num_head_channels=[min(cfg.head_channels, c) for c in cfg.channels],
            use_flash_attention=cfg.flash_attention,
        )
        self.cfg = cfg
        self.checkpointing = cfg.checkpointing

    def _run(self, block: nn.Module, *args, **kwargs):
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None = None,
                down_residuals: list[torch.Tensor] | None = None,
                mid_residual: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C_z, h, w, d), timesteps (B,) -> prediction (B, C_z, h, w, d).

        cond must be None (this UNet is unconditional; masks enter through a ControlNet's residuals).
        down_residuals / mid_residual: a ControlNet's outputs, added to the skip connections / mid block.
        """
        if cond is not None:
            raise CardiolabError("LatentUNet3D is unconditional: pass masks through a ControlNet (ControlledUNet)")
        _check_latent(x, self.cfg)
        t_emb = get_timestep_embedding(timesteps, self.block_out_channels[0]).to(dtype=x.dtype)
        emb = self.time_embed(t_emb)                                  # (B, 4 * channels[0])
        h = self.conv_in(x)                                           # (B, channels[0], h, w, d)
        skips = [h]
        for block in self.down_blocks:
            h, res = self._run(block, hidden_states=h, temb=emb)
            skips.extend(res)
        if down_residuals is not None:
            if len(down_residuals) != len(skips):
                raise CardiolabError(f"LatentUNet3D: {len(down_residuals)} ControlNet residuals for "
                                     f"{len(skips)} skip connections")
            skips = [s + r for s, r in zip(skips, down_residuals)]
        h = self._run(self.middle_block, hidden_states=h, temb=emb)  # (B, channels[-1], h/f, w/f, d/f)
        if mid_residual is not None:
            h = h + mid_residual
        for block in self.up_blocks:
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            h = self._run(block, hidden_states=h, res_hidden_states_list=res, temb=emb)
        return self.out(h)                                            # (B, C_z, h, w, d)


def _check_latent(x: torch.Tensor, cfg: LDM3DConfig) -> None:
    if x.ndim != 5 or x.shape[1] != cfg.in_channels:
        raise CardiolabError(f"LatentUNet3D input: expected (B, {cfg.in_channels}, h, w, d), got {tuple(x.shape)}")
    if any(s % cfg.downsample for s in x.shape[2:]):
        raise CardiolabError(f"LatentUNet3D input: latent size {tuple(x.shape[2:])} must be divisible by "
                             f"{cfg.downsample} ({len(cfg.channels)} levels)")
