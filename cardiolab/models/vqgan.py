"""Spatiotemporal VQ-GAN: stage 1 of CardioDiT (arXiv 2603.25194).

One 2D+t short-axis slice (B, 1, H, W, T) is encoded to a discrete latent (B, C_z, H/4, W/4, T/4) by MONAI's
VQVAE run as a 3D network over (H, W, T). The codebook learns by EMA updates (decay `cfg.ema_decay`), and codes
left unused for a while are restarted from encoder outputs so the codebook does not collapse. The 3D PatchGAN
discriminator that makes it a VQ-GAN is built here too; losses and training live in `cardiolab.tasks.vqgan`.
Being a 3D network, it takes a whole-heart volume (B, 1, X, Y, Z) the same way (high resolution, after MedLoRD).

Memory switches for large volumes (none changes the weights or the state_dict): `code_chunk` searches the
codebook N vectors at a time (the (N, K) distance matrix is the largest tensor of a 512x512x256 encode),
`checkpointing` recomputes encoder/decoder activations in the backward pass (MONAI VQVAE's own switch), and
`decode_sliding` decodes a latent volume window by window.

Shapes: x (B, 1, H, W, T) in [-1, 1]; z (B, C_z, h, w, t) with h, w, t = H/4, W/4, T/4; codes (B, h, w, t).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.distributed as dist
from monai.inferers import SlidingWindowInferer
from monai.networks.layers.vector_quantizer import EMAQuantizer
from monai.networks.nets import VQVAE, PatchDiscriminator
from torch import nn

from cardiolab.core import CardiolabError

LEVELS = 2                 # two stride-2 levels: H, W, T shrink by 4 (paper: 256x256x32 -> 64x64x8)
COMMITMENT = 0.25          # VQ-VAE commitment cost (van den Oord et al. 2017)
DEAD_AFTER = 10            # a code unused for this many training batches is restarted: early on the encoder
                           # drifts faster than the EMA codebook follows, and a long window lets usage collapse


@dataclass(frozen=True)
class VQConfig:
    """The network's own settings (what its weights' shapes and codebook depend on); the profile's vqgan section
    adds the training ones (steps, lr, crops, ...) and gives these through `VQConfig.pick`."""
    channels: tuple[int, ...] = (32, 64)   # encoder widths, one per stride-2 level
    res_blocks: int = 1
    codes: int = 1024                      # codebook size
    code_dim: int = 8                      # latent channels C_z
    ema_decay: float = 0.99                # codebook EMA decay

    @classmethod
    def pick(cls, source: Any) -> "VQConfig":
        """The network fields of a profile section, a run's recorded section (dict) or any object holding them."""
        get = source.get if isinstance(source, dict) else lambda k, d: getattr(source, k, d)
        values = {f.name: get(f.name, f.default) for f in fields(cls)}
        return cls(**{**values, "channels": tuple(values["channels"])})


class VQGAN(nn.Module):
    """VQ autoencoder for one 2D+t slice or one 3D volume.

    code_chunk: codebook search in chunks of this many latent vectors in `snap` (0: all at once).
    checkpointing: activation checkpointing of the encoder and decoder (training memory for compute).
    """

    def __init__(self, cfg: VQConfig, dead_after: int = DEAD_AFTER, code_chunk: int = 0,
                 checkpointing: bool = False):
        super().__init__()
        if len(cfg.channels) != LEVELS:
            raise CardiolabError(f"profiles.py: vqgan.channels needs {LEVELS} widths (one per /2 level), "
                                 f"got {cfg.channels}")
        if code_chunk < 0:
            raise CardiolabError(f"VQGAN: code_chunk must be >= 0 (0: no chunking), got {code_chunk}")
        self.cfg = cfg
        self.dead_after = dead_after
        self.code_chunk = code_chunk
        self.vqvae = VQVAE(
            spatial_dims=3, in_channels=1, out_channels=1,
            channels=cfg.channels, num_res_layers=cfg.res_blocks, num_res_channels=cfg.channels,
            downsample_parameters=((2, 4, 1, 1),) * LEVELS,       # stride 2, kernel 4: exact halving
            upsample_parameters=((2, 4, 1, 1, 0),) * LEVELS,
            num_embeddings=cfg.codes, embedding_dim=cfg.code_dim,
            commitment_cost=COMMITMENT, decay=cfg.ema_decay, use_checkpointing=checkpointing,
        )
        # Batches since each code was last chosen; a buffer so it survives checkpoints and resume. Codes start
        # out dead, so the first training batch initialises the codebook from encoder outputs (no collapse onto
        # the one random code nearest the small initial encodings).
        self.register_buffer("idle", torch.full((cfg.codes,), dead_after, dtype=torch.long))

    @property
    def quantizer(self) -> EMAQuantizer:
        return self.vqvae.quantizer.quantizer

    @property
    def codebook(self) -> torch.Tensor:
        """(K, C_z) code vectors."""
        return self.quantizer.embedding.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, H, W, T) -> continuous encoder output z_e: (B, C_z, H/4, W/4, T/4)."""
        _check_divisible(x)
        return self.vqvae.encode(x)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_e (B, C_z, h, w, t) -> (z_q straight-through (B, C_z, h, w, t), commitment loss, codes (B, h, w, t)).

        In training mode this also moves the codebook by EMA and updates the idle counters.
        """
        # MONAI only switches autocast off for CUDA; distances in bf16 would pick wrong codes on CPU too.
        with torch.autocast(z_e.device.type, enabled=False):
            z_q, loss, codes = self.quantizer(z_e.float())
        if self.training:
            with torch.no_grad():
                used = torch.bincount(codes.flatten(), minlength=self.cfg.codes) > 0
                self.idle.add_(1).masked_fill_(used, 0)
        return z_q, loss, codes

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q (B, C_z, h, w, t) -> x_hat (B, 1, 4h, 4w, 4t), unclamped."""
        return self.vqvae.decode(z_q)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 1, H, W, T) -> (x_hat (B, 1, H, W, T), commitment loss, codes (B, h, w, t), z_e)."""
        z_e = self.encode(x)                                  # (B, C_z, h, w, t)
        z_q, loss, codes = self.quantize(z_e)
        return self.decode(z_q), loss, codes, z_e

    @torch.no_grad()
    def snap(self, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Nearest code for each latent vector, with no codebook update: z (B, C_z, h, w, t) -> codes (B, h, w, t).

        chunk: search this many vectors at a time (None: self.code_chunk; 0: all at once). Rows are
        independent, so the codes are the same either way; only the peak memory differs.
        """
        chunk = self.code_chunk if chunk is None else chunk
        with torch.autocast(z.device.type, enabled=False):
            if not chunk or z[:, 0].numel() <= chunk:
                return self.quantizer.quantize(z.float())[2]
            B, C, *spatial = z.shape
            flat = z.float().movedim(1, -1).reshape(-1, C)                  # (B*h*w*t, C_z)
            codes = [self.quantizer.quantize(part.T[None, :, :, None, None])[2].flatten()   # (1, C_z, n, 1, 1)
                     for part in flat.split(chunk)]
            return torch.cat(codes).view(B, *spatial)                        # (B, h, w, t)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w, t) int64 -> code vectors (B, C_z, h, w, t)."""
        return self.quantizer.embed(codes)

    @torch.no_grad()
    def restart_dead_codes(self, z_e: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Re-initialise codes idle for `dead_after` batches from random encoder outputs z_e (B, C_z, h, w, t).

        Only the dead codes' vectors, EMA statistics and idle counters change. Returns how many were restarted.
        """
        ddp = dist.is_available() and dist.is_initialized()
        if ddp:  # one codebook for all ranks: a code used on any rank is alive, rank 0's batch refills
            dist.all_reduce(self.idle, op=dist.ReduceOp.MIN)
        dead = torch.nonzero(self.idle >= self.dead_after).flatten()
        if dead.numel() == 0:
            return 0
        flat = z_e.detach().float().transpose(0, 1).flatten(1).T           # (B*h*w*t, C_z)
        pick = torch.randint(flat.shape[0], (dead.numel(),), generator=generator).to(flat.device)
        fresh = flat[pick].contiguous()                                     # (n_dead, C_z)
        if ddp:
            dist.broadcast(fresh, src=0)
        q = self.quantizer
        q.embedding.weight.data[dead] = fresh
        # EMA keeps weight = ema_w / cluster_size, so restart both with a cluster of size one.
        q.ema_cluster_size.data[dead] = 1.0
        q.ema_w.data[dead] = fresh
        self.idle[dead] = 0
        return int(dead.numel())

    def dead_fraction(self) -> float:
        return float((self.idle >= self.dead_after).float().mean())


@torch.no_grad()
def decode_sliding(model: VQGAN, z_q: torch.Tensor, window: tuple[int, int, int], overlap: float = 0.5,
                   mode: str = "gaussian") -> torch.Tensor:
    """Decode a latent volume window by window: z_q (B, C_z, h, w, t) -> x_hat (B, 1, 4h, 4w, 4t).

    window: latent window (h', w', t'); each decodes to a 4x larger patch (MONAI's SlidingWindowInferer
    infers the zoom from the output), blended with `mode` weights. Peak memory is that of one window.
    Not in MedLoRD (which decodes a whole volume at once); the seams differ from a full decode only
    within the decoder's receptive field of a window edge, which the overlap blends away.
    """
    if z_q.ndim != 5 or z_q.shape[1] != model.cfg.code_dim:
        raise CardiolabError(f"decode_sliding: expected (B, {model.cfg.code_dim}, h, w, t), got {tuple(z_q.shape)}")
    inferer = SlidingWindowInferer(roi_size=tuple(window), sw_batch_size=1, overlap=overlap, mode=mode,
                                   padding_mode="replicate", progress=False)
    return inferer(z_q, model.decode)


def perplexity(codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(entropy) of the code histogram: the effective number of codes in use (1 .. num_codes)."""
    p = torch.bincount(codes.flatten(), minlength=num_codes).float()
    p = p / p.sum()
    return torch.exp(-(p * torch.log(p + 1e-10)).sum())


def latent_shape(cfg: VQConfig, size: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(H, W, T) of a slice -> (C_z, h, w, t) of its latent, without running the model."""
    _check_size(size)
    return (cfg.code_dim, *(s // 2 ** LEVELS for s in size))


def discriminator_layers(size: tuple[int, int, int]) -> int:
    """How many stride-2 PatchGAN layers the smallest of (H, W, T) allows (1..3), leaving >= 2 patches per axis."""
    return int(max(1, min(3, math.log2(min(size)) - 2)))


def build_discriminator(cfg: VQConfig, size: tuple[int, int, int]) -> PatchDiscriminator:
    """3D PatchGAN over (H, W, T); returns a list of features, the last (B, 1, h', w', t') being the patch logits."""
    # kernel 3 (as CardioDiT's config): stride-1 layers keep the size, so short T=8 cines still give patches
    return PatchDiscriminator(spatial_dims=3, channels=cfg.channels[0], in_channels=1, out_channels=1,
                              num_layers_d=discriminator_layers(size), kernel_size=3, norm="BATCH")


def _check_divisible(x: torch.Tensor) -> None:
    if x.ndim != 5 or x.shape[1] != 1:
        raise CardiolabError(f"VQGAN input: expected (B, 1, H, W, T) or (B, 1, X, Y, Z), got {tuple(x.shape)}")
    _check_size(tuple(x.shape[2:]))


def _check_size(size: tuple[int, ...]) -> None:
    if any(s % 2 ** LEVELS for s in size):
        raise CardiolabError(f"slice size {tuple(size)}: H, W and T must be divisible by {2 ** LEVELS} "
                             "(profiles.py: data.image_size, data.frames)")
