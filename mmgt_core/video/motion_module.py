"""AnimateDiff-v2 motion modules ("Vanilla" temporal transformer), key-compatible with ``mm_sd_v15_v2`` and MMGT.

Each module mixes information across the frames of a window, separately for every spatial position:
``out = x + proj_out(block(proj_in(GroupNorm(x))))``; the block runs two temporal self-attentions (sinusoidal
positions from a persistent ``pe`` buffer of shape (1, max_frames, C), added before q/k/v) and a GEGLU FF.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn

from ..constants import MOTION_MODULE_MAX_FRAMES
from ..errors import InputError
from .blocks3d import frames_to_tokens, tokens_to_frames


def sinusoidal_table(max_len: int, channels: int) -> torch.Tensor:
    """(1, max_len, channels): sin on even, cos on odd channels (AnimateDiff ``PositionalEncoding``)."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, channels, 2) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, max_len, channels)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


class PositionalEncoding(nn.Module):
    """Holds the ``pe`` buffer; it is persistent because the official checkpoints store it."""

    def __init__(self, channels: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, channels))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        frames = tokens.shape[1]
        if frames > self.pe.shape[1]:
            raise InputError(
                "context_frames", f"{frames} frames per window exceed the motion modules' {self.pe.shape[1]}.",
                f"Use at most {self.pe.shape[1]} frames per context window.",
            )
        return tokens + self.pe[:, :frames].to(tokens.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention over the frames of each spatial position (official ``VersatileAttention``, Temporal_Self)."""

    def __init__(self, channels: int, heads: int, max_frames: int) -> None:
        super().__init__(query_dim=channels, heads=heads, dim_head=channels // heads, bias=False)
        self.pos_encoder = PositionalEncoding(channels, max_frames)

    def forward(self, tokens: torch.Tensor, video_length: int) -> torch.Tensor:  # type: ignore[override]
        """tokens (b*f, N, C) -> same shape; attention runs over f for each of the b*N positions."""
        per_position = rearrange(tokens, "(b f) n c -> (b n) f c", f=video_length)
        out = super().forward(self.pos_encoder(per_position))
        return rearrange(out, "(b n) f c -> (b f) n c", n=tokens.shape[1])


class TemporalTransformerBlock(nn.Module):
    """Temporal_Self x N (pre-LayerNorm, residual) then a GEGLU feed-forward."""

    def __init__(self, channels: int, heads: int, max_frames: int, num_attention_blocks: int = 2) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(channels, heads, max_frames) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(channels) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(channels, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, tokens: torch.Tensor, video_length: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            tokens = attention(norm(tokens), video_length) + tokens
        return self.ff(self.ff_norm(tokens)) + tokens


class TemporalTransformer(nn.Module):
    """GroupNorm (per frame) -> Linear -> temporal blocks -> Linear, with a residual around it all."""

    def __init__(self, channels: int, heads: int, max_frames: int, num_blocks: int, num_attention_blocks: int,
                 groups: int = 32) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, heads, max_frames, num_attention_blocks) for _ in range(num_blocks)]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, frames: torch.Tensor, video_length: int) -> torch.Tensor:
        height, width = frames.shape[-2:]
        tokens = self.proj_in(frames_to_tokens(self.norm(frames)))
        for block in self.transformer_blocks:
            tokens = block(tokens, video_length)
        return tokens_to_frames(self.proj_out(tokens), height, width) + frames


class MotionModule(nn.Module):
    """Official ``VanillaTemporalModule``: (b*f, C, H, W) frames in, same shape out."""

    def __init__(self, channels: int, heads: int = 8, max_frames: int = MOTION_MODULE_MAX_FRAMES, num_blocks: int = 1,
                 num_attention_blocks: int = 2, zero_init: bool = True) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, max_frames, num_blocks, num_attention_blocks)
        if zero_init:  # training starts as an identity (AnimateDiff); loaded weights overwrite this
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, frames: torch.Tensor, video_length: int) -> torch.Tensor:
        return self.temporal_transformer(frames, video_length)
