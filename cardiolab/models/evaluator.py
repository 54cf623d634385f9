"""cardiolab's own feature evaluator: a small 3D conv encoder over 2D+t slabs of adjacent short-axis slices.

No ImageNet/Inception weights can be downloaded here, so FD/KID are computed on features of this encoder,
trained self-supervised (SimCLR, see `cardiolab.metrics.features`) and then frozen. Its input is a slab of
`in_slices` adjacent slices stacked as channels, (B, S, H, W, T), so the features see motion (T) and
inter-slice continuity (S) as well as appearance. Motion is also given explicitly: the circular frame
difference x[..., t+1] - x[..., t] of every slice is stacked as S more channels, so a jumbled frame order
(large frame-to-frame jumps) shows in every layer although the features are pooled over T at the end.
With `degradations` on, a linear head regresses the strength of four degradations (noise, blur, frame and
slice shuffling) from the features, so the features FD/KID are computed on are trained to move with exactly
what a fidelity metric must detect, instead of only being left untrained on them. With `statistics` on,
`embed` (the features FD/KID use) appends three image statistics that no training can make invariant:
the log energies of the in-plane Laplacian (noise raises it, blur lowers it), of the circular frame
difference (frame order) and of the difference between adjacent slices (slice order).
The metrics built on it are named FD-cardiolab and KID-cardiolab, never FID.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import reduce
from monai.networks.blocks import Convolution
from torch import nn

DEGRADATION_KINDS = 4   # noise, blur, temporal shuffle, slice shuffle (`cardiolab.metrics.features.DEGRADATIONS`)
STATISTICS = 3          # `image_statistics`: Laplacian, frame-difference and slice-difference log energies


@dataclass(frozen=True)
class EvaluatorConfig:
    in_slices: int = 2                     # adjacent slices per slab: 2 is the least that sees slice order
    motion: bool = True                    # add the circular frame differences as in_slices more input channels
    widths: tuple[int, ...] = (16, 32, 64)  # one stride-2 level each over (H, W, T)
    feature_dim: int = 64                  # F: the features FD/KID are computed on
    proj_dim: int = 64                     # SimCLR projection head output (discarded after training)
    groups: int = 8                        # GroupNorm groups: batch-size independent, deterministic at eval
    stem_stride: tuple[int, int, int] = (2, 2, 1)  # (H, W, T): keep every frame in the stem so frame order shows
    degradations: bool = False             # a head regressing noise / blur / frame / slice shuffle strength
                                           # (the evaluator's task turns it on; the copy detector has none)
    statistics: bool = False               # `embed` appends `image_statistics` (3 log energies) to the features


class CineEncoder(nn.Module):
    """Slab (B, S, H, W, T) in [-1, 1] -> features (B, F); `proj`, `order_head` and `degradation_head` are
    training heads."""

    def __init__(self, cfg: EvaluatorConfig = EvaluatorConfig()):
        super().__init__()
        self.cfg = cfg
        norm = lambda c: ("group", {"num_groups": min(cfg.groups, c)})  # noqa: E731
        # a stride-2 stem still sees pixel-level texture (noise, blur) but keeps no full-resolution activations
        # (those made CPU training 8x slower); the stride-2 levels then see shape, motion and inter-slice change
        c_in = cfg.in_slices * (2 if cfg.motion else 1)  # slices (+ their frame differences) as channels
        layers = [Convolution(3, c_in, cfg.widths[0], strides=cfg.stem_stride, kernel_size=3, act="SWISH",
                              norm=norm(cfg.widths[0]))]
        c_in = cfg.widths[0]
        for c in cfg.widths:
            layers.append(Convolution(3, c_in, c, strides=2, kernel_size=3, act="SWISH", norm=norm(c)))
            layers.append(Convolution(3, c, c, kernel_size=3, act="SWISH", norm=norm(c)))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, cfg.feature_dim)
        self.proj = nn.Sequential(nn.Linear(cfg.feature_dim, cfg.feature_dim), nn.SiLU(),
                                  nn.Linear(cfg.feature_dim, cfg.proj_dim))
        # "shuffle and learn" (Misra et al. 2016): classify a slab as ordered / frames shuffled / slices
        # swapped, so the features keep the temporal and base-to-apex order that SimCLR's roll invariance drops
        self.order_head = nn.Linear(cfg.feature_dim, 3)
        # one output per `metrics.features.DEGRADATIONS` kind: its strength as a fraction of the strongest level
        self.degradation_head = nn.Linear(cfg.feature_dim, DEGRADATION_KINDS) if cfg.degradations else None
        if cfg.statistics:   # their mean on the training data (set by the task), so they sit near 0 like features
            self.register_buffer("statistics_centre", torch.zeros(STATISTICS))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, H, W, T) -> (B, 2S, H, W, T): the slices and their circular frame differences
        x[..., t+1] - x[..., t] (wrap-around: a cine is one periodic beat, so a temporal roll of x stays a
        roll of the inputs). Unchanged (B, S, H, W, T) when cfg.motion is off."""
        return torch.cat([x, x.roll(-1, dims=-1) - x], dim=1) if self.cfg.motion else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, H, W, T) -> (B, F)."""
        h = self.body(self.inputs(x))                                  # (B, C, H', W', T')
        h = reduce(h, "b c h w t -> b c", "mean")         # global average pool over space and time
        return self.head(h)                               # (B, F)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, H, W, T) -> the features FD/KID are computed on: (B, F), or (B, F + 3) with statistics."""
        f = self(x)
        if not self.cfg.statistics:
            return f
        return torch.cat([f, (image_statistics(x) - self.statistics_centre).to(f.dtype)], 1)   # (B, F + 3)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, H, W, T) -> SimCLR projections (B, P)."""
        return self.proj(self(x))

    def order_logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, H, W, T) -> logits (B, 3): ordered, frames shuffled, slices swapped."""
        return self.order_head(self(x))


def image_statistics(x: torch.Tensor) -> torch.Tensor:
    """x: (B, S, H, W, T) slabs -> (B, 3): the log mean squared in-plane Laplacian, circular frame difference and
    adjacent-slice difference (S >= 2; 0 for one slice). Logs, so a statistic that doubles moves by 0.69 whatever
    the cohort's contrast; measured on the tiny phantom (10-cine cohorts, 5 v 5 halves) FD on these three alone
    rises with every noise and blur level, but not with slice shuffling of one cine in five: the learned
    features carry that."""
    eps = 1e-8   # a constant image has zero energies
    lap = (4 * x[:, :, 1:-1, 1:-1] - x[:, :, :-2, 1:-1] - x[:, :, 2:, 1:-1]
           - x[:, :, 1:-1, :-2] - x[:, :, 1:-1, 2:])                       # (B, S, H-2, W-2, T)
    frames = x.roll(-1, dims=-1) - x                                       # (B, S, H, W, T)
    slices = x[:, 1:] - x[:, :-1] if x.shape[1] > 1 else torch.zeros_like(x[:, :1])
    return torch.stack([v.square().mean(dim=(1, 2, 3, 4)).add(eps).log() for v in (lap, frames, slices)], 1)
