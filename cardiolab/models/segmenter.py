"""The cardiac segmenter: a 2D MONAI UNet applied to every frame of every short-axis slice.

Per-frame 2D is what ACDC-style segmenters do (real labels exist at ED and ES only), and it lets one network
segment cines of any slice count and frame count. Training, `segment` and loading live in
`cardiolab.tasks.segmenter`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import UNet
from torch import nn

from cardiolab.io.cohort import LABELS


@dataclass(frozen=True)
class SegmenterConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)  # UNet widths; len - 1 stride-2 levels, so H, W % 2**(len-1) == 0
    num_classes: int = len(LABELS)                 # background, RV, MYO, LV
    res_units: int = 1                             # residual units per level (MONAI UNet num_res_units)
    dropout: float = 0.0
    norm: str = "instance"                         # instance norm: insensitive to the intensity scale of a cohort

    def to_dict(self) -> dict:
        return asdict(self)


class Segmenter(nn.Module):
    """Frame-wise segmenter: logits for each pixel of a batch of 2D frames."""

    def __init__(self, config: SegmenterConfig = SegmenterConfig()):
        super().__init__()
        self.config = config
        self.net = UNet(spatial_dims=2, in_channels=1, out_channels=config.num_classes,
                        channels=tuple(config.channels), strides=(2,) * (len(config.channels) - 1),
                        num_res_units=config.res_units, norm=config.norm, dropout=config.dropout)

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (len(self.config.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, H, W) frames in [-1, 1] -> (N, num_classes, H, W) logits."""
        return self.net(x)
