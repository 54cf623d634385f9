"""A slice-wise 3D UNet denoiser (MONAI `DiffusionModelUNet`) for the pixel / latent diffusion and flow baselines.

The baselines of CardioDiT's comparison denoise one short-axis slice at a time: a 3D UNet over the slice's
(H, W, T) (height, width, frames), told which slice it is by a class label (num_class_embeds), so space
and time are coupled but slices are not. For the two-stage mask-to-image model, mask channels are
concatenated to the noisy input (average-pooled first when the input is a latent of smaller size).
The network comes from MONAI; this module only adapts it to cardiolab's `model(x_t, t, cond)` protocol
(cardiolab.diffusion) and pads odd sizes, as DiT4D does.

The UNet sees the frame axis first, (B, C, T, H, W). The axis order means nothing to the isotropic network, but
on CPUs with native bf16 (torch 2.13, oneDNN) a strided bf16 Conv3d whose *last* axis is 1 or 2 long returns
garbage or inf; with T last, the tiny latent's 4 frames reach 2 at the second level and ldm / flow turned NaN
within 20 steps (tests/test_baseline_models.py checks bf16 against fp32).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from cardiolab.core import CardiolabError


@dataclass(frozen=True)
class SliceUNetConfig:
    size: tuple[int, int, int] = (64, 64, 16)   # one slice's (H, W, T): pixels (tiny profile) or a latent
    in_channels: int = 1                 # 1 for images, C_z for VQ-GAN latents
    mask_channels: int = 0               # one-hot mask channels concatenated to the input (0: none)
    channels: tuple[int, ...] = (32, 64, 64)  # widths per level; len - 1 stride-2 steps in H, W and T
    attention: tuple[bool, ...] = (False, False, True)  # self-attention only at the coarsest level (cost)
    res_blocks: int = 1                  # MONAI's default 2 doubles the cost for little gain at these sizes
    head_channels: int = 32
    norm_groups: int = 8                 # GroupNorm groups; must divide every width
    slices: int = 6                      # class labels = slice index 0..slices-1; 0 = no slice label
    time_first: bool = True              # UNet over (T, H, W) (module docstring); False: runs from before

    @property
    def multiple(self) -> int:
        """Each of H, W, T is padded up to a multiple of this (the UNet halves them len(channels) - 1 times)."""
        return 2 ** (len(self.channels) - 1)


class SliceUNet(nn.Module):
    """forward(x (B, C, H, W, T), t (B,), cond) -> (B, C, H, W, T): the prediction the scheduler asks for.

    cond: None or a dict {"slice": (B,) int slice index, "mask": (B, M, H_m, W_m, T_m) float}; "slice" is
    required when config.slices > 0, "mask" when config.mask_channels > 0.
    """

    def __init__(self, config: SliceUNetConfig):
        super().__init__()
        cfg = self.config = config
        if len(cfg.attention) != len(cfg.channels):
            raise CardiolabError(f"SliceUNet config: attention {cfg.attention} needs one flag per level of {cfg.channels}")
        if any(c % cfg.norm_groups for c in cfg.channels):
            raise CardiolabError(f"SliceUNet config: norm_groups {cfg.norm_groups} must divide channels {cfg.channels}")
        self.unet = DiffusionModelUNet(
            spatial_dims=3, in_channels=cfg.in_channels + cfg.mask_channels, out_channels=cfg.in_channels,
            num_res_blocks=cfg.res_blocks, channels=tuple(cfg.channels), attention_levels=tuple(cfg.attention),
            norm_num_groups=cfg.norm_groups, num_head_channels=cfg.head_channels,
            num_class_embeds=cfg.slices or None)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        B, C, *size = x.shape
        cfg = self.config
        if tuple(size) != tuple(cfg.size) or C != cfg.in_channels:
            raise CardiolabError(f"SliceUNet: expected (B, {cfg.in_channels}, {', '.join(map(str, cfg.size))}), "
                                 f"got {tuple(x.shape)}")
        cond = cond or {}
        if cfg.mask_channels:
            if "mask" not in cond:
                raise CardiolabError("SliceUNet: this model is mask-conditioned; pass cond={'mask': ...}")
            mask = cond["mask"].to(x.dtype)
            if tuple(mask.shape[2:]) != tuple(size):
                mask = F.adaptive_avg_pool3d(mask, size)             # (B, M, H, W, T): label fractions per latent voxel
            x = torch.cat([x, mask], dim=1)                          # (B, C + M, H, W, T)
        labels = None
        if cfg.slices:
            if "slice" not in cond:
                raise CardiolabError("SliceUNet: this model is slice-conditioned; pass cond={'slice': ...}")
            labels = cond["slice"].reshape(B).long()                 # (B,)
        pads = [(-s) % cfg.multiple for s in size]
        x = F.pad(x, [v for p in reversed(pads) for v in (0, p)])   # (B, C', H', W', T') multiples of 2^levels
        if cfg.time_first:
            out = self.unet(x.permute(0, 1, 4, 2, 3).contiguous(), t, class_labels=labels).permute(0, 1, 3, 4, 2)
        else:
            out = self.unet(x, t, class_labels=labels)               # (B, C, H', W', T')
        H, W, T = size
        return out[:, :, :H, :W, :T]                                 # (B, C, H, W, T)
