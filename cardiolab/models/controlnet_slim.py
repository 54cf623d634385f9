"""A slim ControlNet that steers a frozen latent UNet with anatomy masks, after MedLoRD (arXiv 2503.13211).

MONAI's ControlNet copies the UNet encoder at full width and embeds the mask with a first conv at full image
resolution; for 512x512x256 volumes both cost more memory than the UNet itself. MedLoRD's slim variant
(`src/models/controlnet.py`), rebuilt here on MONAI's blocks:

- the encoder copy runs at a fraction `r` of the UNet's widths (0.5: about a quarter of the parameters);
- zero-initialised 1x1 convolutions project each of its skip outputs (and the mid block) up to the frozen
  UNet's width, so at initialisation the controlled UNet is exactly the unconditional one;
- the mask embedding's first conv has stride `initial_stride`, so no activation lives at full resolution;
  then stride-2 convs bring the masks down to the latent grid (initial_stride * 2 ** (len(embed) - 1) must
  equal the VQ-GAN's downsampling);
- control dropout (training) zeroes a sample's masks with probability `control_dropout`, and the residuals
  are multiplied by `conditioning_scale` at sampling (0: the unconditional UNet).

Shapes: x (B, C_z, h, w, d) latent; masks (B, M, X, Y, Z) one channel per structure at image resolution,
X = f * h with f the VQ-GAN factor (4); M = 6 (aorta, LA, RA, myocardium, LV, RV).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets.diffusion_model_unet import get_down_block, get_mid_block, get_timestep_embedding
from torch import nn

from cardiolab.core import CardiolabError
from cardiolab.models.ldm3d import LatentUNet3D, LDM3DConfig

STRUCTURES = 6                  # mask channels: labels 1-6 of cardiolab.io.volume (background dropped)


@dataclass(frozen=True)
class ControlNetConfig:
    r: float = 0.5                               # width ratio of the encoder copy (MedLoRD: 0.5)
    mask_channels: int = STRUCTURES
    embed_channels: tuple[int, ...] = (16, 32)   # mask embedding widths; one stride-2 conv between each
    initial_stride: int = 2                      # first mask conv's stride (MedLoRD: 2; MONAI: 1)
    image_downsample: int = 4                    # VQ-GAN factor: masks are this much larger than the latent
    control_dropout: float = 0.1                 # training: drop a sample's masks (MedLoRD: 0.1)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _proj(cin: int, cout: int) -> nn.Module:
    """Zero-initialised 1x1x1 conv: no effect on the UNet until training moves it."""
    return zero_module(nn.Conv3d(cin, cout, kernel_size=1))


class MaskEmbedding(nn.Module):
    """masks (B, M, X, Y, Z) -> (B, width, X/f, Y/f, Z/f), f = initial_stride * 2 ** (len(channels) - 1)."""

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...], initial_stride: int):
        super().__init__()
        conv = dict(spatial_dims=3, kernel_size=3, padding=1, adn_ordering="A", act="SWISH")
        self.conv_in = Convolution(in_channels=in_channels, out_channels=channels[0], strides=initial_stride, **conv)
        self.blocks = nn.Sequential(*[
            layer for cin, cout in zip(channels[:-1], channels[1:])
            for layer in (Convolution(in_channels=cin, out_channels=cin, strides=1, **conv),
                          Convolution(in_channels=cin, out_channels=cout, strides=2, **conv))])
        self.conv_out = zero_module(nn.Conv3d(channels[-1], out_channels, kernel_size=3, padding=1))

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.blocks(self.conv_in(masks)))


class SlimControlNet(nn.Module):
    """Encoder copy of a LatentUNet3D at width ratio r; returns residuals at the UNet's widths."""

    def __init__(self, unet_cfg: LDM3DConfig, cfg: ControlNetConfig = ControlNetConfig()):
        super().__init__()
        if not 0 < cfg.r <= 1:
            raise CardiolabError(f"controlnet: r must be in (0, 1], got {cfg.r}")
        if cfg.initial_stride < 1 or cfg.initial_stride * 2 ** (len(cfg.embed_channels) - 1) != cfg.image_downsample:
            raise CardiolabError(
                f"controlnet: initial_stride {cfg.initial_stride} x 2^{len(cfg.embed_channels) - 1} (embed_channels "
                f"{cfg.embed_channels}) must equal the VQ-GAN downsampling {cfg.image_downsample}")
        if not 0 <= cfg.control_dropout < 1:
            raise CardiolabError(f"controlnet: control_dropout must be in [0, 1), got {cfg.control_dropout}")
        self.cfg, self.unet_cfg = cfg, unet_cfg
        widths = [max(1, int(c * cfg.r)) for c in unet_cfg.channels]
        # GroupNorm needs widths divisible by the groups; halved widths may not be, so take the common divisor
        groups = math.gcd(unet_cfg.norm_groups, *widths)
        self.widths = widths
        temb = widths[0] * 4
        self.conv_in = nn.Conv3d(unet_cfg.in_channels, widths[0], kernel_size=3, padding=1)
        self.time_embed = nn.Sequential(nn.Linear(widths[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.mask_embed = MaskEmbedding(cfg.mask_channels, widths[0], cfg.embed_channels, cfg.initial_stride)
        self.down_blocks = nn.ModuleList()
        self.projections = nn.ModuleList([_proj(widths[0], unet_cfg.channels[0])])
        cin = widths[0]
        for i, (w, full, attn) in enumerate(zip(widths, unet_cfg.channels, unet_cfg.attention_levels)):
            last = i == len(widths) - 1
            self.down_blocks.append(get_down_block(
                spatial_dims=3, in_channels=cin, out_channels=w, temb_channels=temb,
                num_res_blocks=unet_cfg.res_blocks, norm_num_groups=groups, norm_eps=1e-6,
                add_downsample=not last, resblock_updown=False, with_attn=attn, with_cross_attn=False,
                num_head_channels=min(unet_cfg.head_channels, w), transformer_num_layers=1,
                cross_attention_dim=None, use_flash_attention=unet_cfg.flash_attention))
            # one projection per skip output of this level: each resnet, plus the downsampler
            self.projections.extend(_proj(w, full) for _ in range(unet_cfg.res_blocks + (not last)))
            cin = w
        self.middle_block = get_mid_block(
            spatial_dims=3, in_channels=widths[-1], temb_channels=temb, norm_num_groups=groups, norm_eps=1e-6,
            with_conditioning=False, num_head_channels=min(unet_cfg.head_channels, widths[-1]),
            transformer_num_layers=1, cross_attention_dim=None, use_flash_attention=unet_cfg.flash_attention)
        self.mid_projection = _proj(widths[-1], unet_cfg.channels[-1])

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, masks: torch.Tensor,
                conditioning_scale: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x (B, C_z, h, w, d), timesteps (B,), masks (B, M, fh, fw, fd) -> (skip residuals, mid residual).

        Residuals have the frozen UNet's widths and resolutions, times conditioning_scale.
        """
        f = self.cfg.image_downsample
        if masks.shape[2:] != tuple(s * f for s in x.shape[2:]) or masks.shape[1] != self.cfg.mask_channels:
            raise CardiolabError(f"controlnet: masks {tuple(masks.shape)} must be (B, {self.cfg.mask_channels}, "
                                 f"{f}h, {f}w, {f}d) for the latent {tuple(x.shape)}")
        if self.training and self.cfg.control_dropout > 0:
            keep = torch.rand(masks.shape[0], device=masks.device) >= self.cfg.control_dropout   # (B,)
            masks = masks * keep.to(masks.dtype).view(-1, 1, 1, 1, 1)
        emb = self.time_embed(get_timestep_embedding(timesteps, self.widths[0]).to(dtype=x.dtype))
        h = self.conv_in(x) + self.mask_embed(masks.to(x.dtype))    # (B, r*c0, h, w, d)
        skips = [h]
        for block in self.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            skips.extend(res)
        h = self.middle_block(hidden_states=h, temb=emb)             # (B, r*c_last, h/F, w/F, d/F)
        down = [proj(s) * conditioning_scale for proj, s in zip(self.projections, skips)]
        return down, self.mid_projection(h) * conditioning_scale


class ControlledUNet(nn.Module):
    """A frozen LatentUNet3D steered by a SlimControlNet; a cardiolab denoiser `model(x_t, t, masks)`.

    conditioning_scale: multiplies the ControlNet's residuals (set it before sampling; 0 = unconditional).
    masks None also gives the unconditional UNet.
    """

    def __init__(self, unet: LatentUNet3D, controlnet: SlimControlNet, conditioning_scale: float = 1.0):
        super().__init__()
        self.unet = unet.requires_grad_(False)
        self.controlnet = controlnet
        self.conditioning_scale = conditioning_scale

    @property
    def conditioning_scale(self) -> float:
        return self._scale

    @conditioning_scale.setter
    def conditioning_scale(self, value: float) -> None:
        if not value >= 0:
            raise CardiolabError(f"--conditioning-scale must be >= 0, got {value}")
        self._scale = float(value)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C_z, h, w, d), timesteps (B,), masks (B, M, 4h, 4w, 4d) -> UNet prediction (B, C_z, h, w, d)."""
        if masks is None or self._scale == 0:
            return self.unet(x, timesteps)
        down, mid = self.controlnet(x, timesteps, masks, self._scale)
        return self.unet(x, timesteps, down_residuals=down, mid_residual=mid)


def masks_to_channels(mask: torch.Tensor, structures: int = STRUCTURES) -> torch.Tensor:
    """Label map (B, X, Y, Z), values 0..structures -> float one-hot (B, structures, X, Y, Z); background dropped."""
    return F.one_hot(mask.long(), structures + 1)[..., 1:].movedim(-1, 1).float()
