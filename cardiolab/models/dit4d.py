"""CardioDiT: a diffusion transformer over whole 4D cine latents (arXiv 2603.25194).

The latent of one study, (C_z, D, H', W', T') = (channels, slices, height, width, frames), is cut into 4D
patches (default (1, 4, 4, 2)), so every token attends to every other token across slices, space and time
at once: no factorisation into 2D+t or 3D+t. Layout after facebookresearch/DiT `models.py`: a shared op,
small modules named for their job, the model, sin-cos helpers, size presets last.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from cardiolab.core import CardiolabError


@dataclass(frozen=True)
class DiT4DConfig:
    input_size: tuple[int, int, int, int] = (6, 64, 64, 8)  # latent (D, H', W', T'): 6 slices of 64x64x8 (paper)
    in_channels: int = 8                 # C_z of the VQ-GAN latent (paper: 8)
    patch: tuple[int, int, int, int] = (1, 4, 4, 2)  # (D, H, W, T) patch: 6144 tokens for the paper's latent
    hidden: int = 768                    # paper: 768 for S, B and L
    depth: int = 8                       # S 8, B 12, L 16
    heads: int = 12
    mlp_ratio: float = 4.0
    cond_cardinalities: tuple[int, ...] = ()  # classes per attribute field; () = unconditional (the paper)
    cond_dropout: float = 0.1            # label dropout in training, enables classifier-free guidance
    checkpointing: bool = False          # recompute each block in backward: ~depth x less activation memory

    def grid(self) -> tuple[int, int, int, int]:
        """Token grid (D, H, W, T) after padding the latent up to a multiple of the patch."""
        return tuple(-(-s // p) for s, p in zip(self.input_size, self.patch))

    @property
    def num_tokens(self) -> int:
        return int(np.prod(self.grid()))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, C) scaled and shifted per sample by (B, C) vectors."""
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


class TimestepEmbedder(nn.Module):
    """Diffusion step t (B,) -> (B, hidden): sinusoidal features, then an MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.freq_dim))


class AttributeEmbedder(nn.Module):
    """Attribute codes (B, A) -> (B, hidden): the sum of one embedding per field.

    Each field has one extra "null" class (index = its cardinality) used for dropped or unknown values,
    so one network learns both p(x | attributes) and p(x) for classifier-free guidance.
    """

    def __init__(self, cardinalities: tuple[int, ...], hidden: int):
        super().__init__()
        self.register_buffer("null", torch.tensor(cardinalities, dtype=torch.long), persistent=False)
        self.tables = nn.ModuleList(nn.Embedding(n + 1, hidden) for n in cardinalities)

    def forward(self, cond: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """cond: (B, A) int codes (negative = unknown); drop: (B,) bool, True -> all fields null."""
        cond = torch.where((cond < 0) | (cond > self.null), self.null, cond)
        if drop is not None:
            cond = torch.where(drop[:, None], self.null, cond)
        return sum(table(cond[:, i]) for i, table in enumerate(self.tables))  # (B, hidden)


class PatchEmbed4D(nn.Module):
    """(B, C, D, H, W, T) -> (B, N, hidden) tokens; pads each axis up to a multiple of the patch."""

    def __init__(self, patch: tuple[int, int, int, int], in_channels: int, hidden: int):
        super().__init__()
        self.patch = tuple(patch)
        self.proj = nn.Linear(in_channels * int(np.prod(patch)), hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(patchify(pad_to_patch(x, self.patch), self.patch))


class Attention(nn.Module):
    """Multi-head self-attention over all N tokens; one fused qkv matmul, SDPA (flash/memory-efficient) kernel."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)  # (B, h, N, d)
        x = F.scaled_dot_product_attention(q, k, v)                                               # (B, h, N, d)
        return self.proj(rearrange(x, "b h n d -> b n (h d)"))                                    # (B, N, C)


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero conditioning: gates start at 0, so the block starts as identity."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        # exact (erf) GELU as CardioDiT; DiT's tanh approximation is 2x slower in bf16 on AVX-512 CPUs
        self.mlp = nn.Sequential(nn.Linear(hidden, int(hidden * mlp_ratio)), nn.GELU(),
                                 nn.Linear(int(hidden * mlp_ratio), hidden))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 x (B, C)
        x = x + gate_a.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_a, scale_a))           # (B, N, C)
        x = x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))            # (B, N, C)
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated norm, then a linear map from each token back to its patch of latent values."""

    def __init__(self, hidden: int, patch_volume: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch_volume * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, C * pD * pH * pW * pT)


class DiT4D(nn.Module):
    """Denoiser for 4D latents. forward(x (B, C, D, H, W, T), t (B,), cond (B, A) | None) -> (B, C, D, H, W, T).

    The output is the v-prediction (the model knows nothing of schedules; see cardiolab.diffusion).
    """

    def __init__(self, config: DiT4DConfig):
        super().__init__()
        cfg = self.config = config
        if cfg.hidden % cfg.heads:
            raise CardiolabError(f"DiT4D config: hidden {cfg.hidden} is not divisible by heads {cfg.heads}")
        if cfg.hidden % 8:
            raise CardiolabError(f"DiT4D config: hidden {cfg.hidden} must be a multiple of 8 (4D sin-cos embedding)")
        self.x_embedder = PatchEmbed4D(cfg.patch, cfg.in_channels, cfg.hidden)
        self.t_embedder = TimestepEmbedder(cfg.hidden)
        self.y_embedder = AttributeEmbedder(cfg.cond_cardinalities, cfg.hidden) if cfg.cond_cardinalities else None
        # fixed, not learned: 4D sin-cos, a quarter of the channels per axis
        self.register_buffer("pos_embed", torch.zeros(1, cfg.num_tokens, cfg.hidden), persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(cfg.hidden, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(cfg.hidden, int(np.prod(cfg.patch)), cfg.in_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Every init choice, in one place (DiT): xavier linears (the patch embedding is a Linear on flattened
        patches, so this equals DiT's flattened-conv init), N(0, 0.02) embeddings, adaLN-Zero."""
        def _basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.apply(_basic)
        self.pos_embed.copy_(torch.from_numpy(get_4d_sincos_pos_embed(self.config.hidden, self.config.grid()))[None])
        if self.y_embedder is not None:
            for table in self.y_embedder.tables:
                nn.init.normal_(table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # zero modulation -> gates 0 -> every block is the identity at init; zero output -> prediction 0
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                force_drop: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, D, H, W, T) noisy latent; t: (B,) steps; cond: (B, A) codes or None (= unconditional).

        In training, attributes are dropped with p = cond_dropout; force_drop (B,) bool overrides that.
        """
        B, C, *size = x.shape
        if tuple(size) != tuple(self.config.input_size) or C != self.config.in_channels:
            raise CardiolabError(f"DiT4D: expected latents (B, {self.config.in_channels}, "
                                 f"{', '.join(map(str, self.config.input_size))}), got {tuple(x.shape)}")
        h = self.x_embedder(x) + self.pos_embed                       # (B, N, C)
        c = self.t_embedder(t)                                        # (B, C)
        if self.y_embedder is not None:
            if cond is None:                                          # no attributes: the null class
                cond = torch.full((B, len(self.config.cond_cardinalities)), -1, dtype=torch.long, device=x.device)
            if force_drop is None and self.training and self.config.cond_dropout > 0:
                force_drop = torch.rand(B, device=x.device) < self.config.cond_dropout
            c = c + self.y_embedder(cond, force_drop)                 # (B, C)
        for block in self.blocks:
            if self.config.checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, c, use_reentrant=False)
            else:
                h = block(h, c)                                       # (B, N, C)
        h = self.final_layer(h, c)                                    # (B, N, C_z * patch volume)
        out = unpatchify(h, self.config.patch, self.config.grid(), C)  # (B, C_z, D', H', W', T') padded
        return crop_to(out, size)                                     # (B, C_z, D, H, W, T)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                         guidance: float = 1.0) -> torch.Tensor:
        """Classifier-free guidance: uncond + s * (cond - uncond), both halves in one batched pass.

        guidance 1.0 (or no attributes) is the plain conditional prediction.
        """
        if self.y_embedder is None or cond is None or guidance == 1.0:
            return self(x, t, cond)
        B = x.shape[0]
        drop = torch.arange(2 * B, device=x.device) >= B
        out = self(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, cond]), force_drop=drop)  # (2B, ...)
        cond_out, uncond_out = out.chunk(2)
        return uncond_out + guidance * (cond_out - uncond_out)

    def compile_blocks(self) -> "DiT4D":
        """torch.compile each block in place (regional compilation: one graph, compiled once, reused depth times)."""
        for block in self.blocks:
            block.compile()
        return self


# ---- plain helpers: padding, (un)patchify, 4D sin-cos -------------------------------------------------

def pad_to_patch(x: torch.Tensor, patch: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero-pad (B, C, D, H, W, T) at the end of each axis up to a multiple of the patch."""
    pads = [(-s) % p for s, p in zip(x.shape[2:], patch)]
    if not any(pads):
        return x
    return F.pad(x, [v for p in reversed(pads) for v in (0, p)])  # F.pad lists the last axis first


def crop_to(x: torch.Tensor, size) -> torch.Tensor:
    """Undo pad_to_patch: (B, C, D', H', W', T') -> (B, C, *size)."""
    D, H, W, T = size
    return x[:, :, :D, :H, :W, :T]


def patchify(x: torch.Tensor, patch: tuple[int, int, int, int]) -> torch.Tensor:
    """(B, C, D, H, W, T) with each axis a multiple of the patch -> (B, N, C * pD * pH * pW * pT); tokens in (d, h, w, t) order."""
    pd, ph, pw, pt = patch
    return rearrange(x, "b c (d pd) (h ph) (w pw) (t pt) -> b (d h w t) (c pd ph pw pt)", pd=pd, ph=ph, pw=pw, pt=pt)


def unpatchify(x: torch.Tensor, patch: tuple[int, int, int, int], grid: tuple[int, int, int, int],
               channels: int) -> torch.Tensor:
    """Inverse of patchify: (B, N, C * patch volume) -> (B, C, gD*pD, gH*pH, gW*pW, gT*pT)."""
    pd, ph, pw, pt = patch
    d, h, w, t = grid
    return rearrange(x, "b (d h w t) (c pd ph pw pt) -> b c (d pd) (h ph) (w pw) (t pt)",
                     d=d, h=h, w=w, t=t, c=channels, pd=pd, ph=ph, pw=pw, pt=pt)


def get_1d_sincos_pos_embed(dim: int, pos: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim): sin of dim/2 geometric frequencies, then cos."""
    omega = 1.0 / 10_000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_4d_sincos_pos_embed(dim: int, grid: tuple[int, int, int, int]) -> np.ndarray:
    """(N, dim) embedding of the (D, H, W, T) token grid, in patchify's token order: dim/4 channels per axis."""
    axes = np.meshgrid(*[np.arange(g, dtype=np.float64) for g in grid], indexing="ij")
    emb = [get_1d_sincos_pos_embed(dim // 4, a) for a in axes]
    return np.concatenate(emb, axis=1).astype(np.float32)


# ---- sizes (paper: hidden 768, 12 heads; depth 8 / 12 / 16) --------------------------------------------

DIT_SIZES: dict[str, dict[str, int]] = {
    "S": dict(hidden=768, depth=8, heads=12),
    "B": dict(hidden=768, depth=12, heads=12),
    "L": dict(hidden=768, depth=16, heads=12),
}


# ---- baseline variants of one config (the factorized 2D+t and channel-merged 3D+t comparisons) ---------

def factorized_config(cfg: DiT4DConfig) -> DiT4DConfig:
    """The same DiT over ONE slice latent (C_z, 1, h, w, t), told its slice index as one more attribute field.

    Slices are denoised (and sampled) independently and stacked, so nothing couples them but the label.
    cond for this config: (B, A + 1), the attribute codes and then the slice index 0..D-1.
    """
    D, H, W, T = cfg.input_size
    return replace(cfg, input_size=(1, H, W, T), patch=(1, *cfg.patch[1:]),
                   cond_cardinalities=(*cfg.cond_cardinalities, D))


def channel_merged_config(cfg: DiT4DConfig) -> DiT4DConfig:
    """The same DiT over (D * C_z, 1, h, w, t): slices merged into channels (3D+t instead of joint 4D tokens).

    The patch embedding and output layer grow D-fold; the MLP hidden width shrinks (in steps of hidden / 8)
    by the same number of parameters, so the comparison is at (about) equal parameter count.
    """
    D, H, W, T = cfg.input_size
    patch = (1, *cfg.patch[1:])
    extra_in = (D - 1) * cfg.in_channels * int(np.prod(patch))        # extra inputs of x_embedder / outputs of final
    extra = extra_in * cfg.hidden * 2 + extra_in                       # two weight matrices + the output bias
    mlp = int(cfg.hidden * cfg.mlp_ratio) - extra / (cfg.depth * (2 * cfg.hidden + 1))  # each MLP unit: 2h + 1
    ratio = max(1, round(8 * mlp / cfg.hidden)) / 8                     # hidden * k / 8 is exact (hidden % 8 == 0)
    return replace(cfg, input_size=(1, H, W, T), patch=patch, in_channels=D * cfg.in_channels, mlp_ratio=ratio)
