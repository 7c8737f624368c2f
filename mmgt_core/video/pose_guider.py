"""PoseGuider: pose frames in [0, 1] -> features added to the denoising UNet after ``conv_in`` (spec 3.7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .config import PoseGuiderConfig


class PoseGuider(nn.Module):
    """Per-frame conv stack: conv_in, (conv, strided conv) per stage with SiLU after each, conv_out (x1/8)."""

    def __init__(self, config: PoseGuiderConfig | None = None, zero_init: bool = True) -> None:
        super().__init__()
        config = config or PoseGuiderConfig()
        channels = config.block_out_channels
        self.conv_in = nn.Conv2d(config.conditioning_channels, channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for channel_in, channel_out in zip(channels[:-1], channels[1:], strict=True):
            self.blocks.append(nn.Conv2d(channel_in, channel_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(channel_in, channel_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(channels[-1], config.embedding_channels, kernel_size=3, padding=1)
        if zero_init:  # training starts with no pose influence; loaded weights overwrite this
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (b, 3, f, H, W) in [0, 1] -> (b, C, f, H/8, W/8)."""
        if pose.dim() != 5 or pose.shape[1] != self.conv_in.in_channels:
            raise InputError("pose", f"expected (batch, {self.conv_in.in_channels}, frames, H, W), got "
                             f"{tuple(pose.shape)}.", "Pass pose frames as a 5-D RGB video tensor in [0, 1].")
        batch, _, frames = pose.shape[:3]
        features = F.silu(self.conv_in(pose.transpose(1, 2).flatten(0, 1)))
        for block in self.blocks:
            features = F.silu(block(features))
        features = self.conv_out(features)
        return features.unflatten(0, (batch, frames)).transpose(1, 2)
