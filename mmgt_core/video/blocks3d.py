"""Per-frame ("inflated") building blocks of the denoising 3D UNet.

The official 3D UNet applies its 2D layers to every frame (``InflatedConv3d``; ``InflatedGroupNorm`` normalizes
per frame). Here hidden states simply live as (b*f, C, H, W) frame batches, so the diffusers 2D layers
(``ResnetBlock2D``, ``Downsample2D``, ``Upsample2D``, ``BasicTransformerBlock``) are used unchanged; only the motion
modules look across frames. Everything one forward pass needs besides the hidden states travels in
:class:`StepInputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .reference_bank import ReferenceKV, self_attention_with_reference


@dataclass
class StepInputs:
    """Conditioning shared by every layer of one denoising-UNet forward (frames flattened as b*f)."""

    video_length: int
    temb: torch.Tensor  # (b*f, time_embed_dim)
    context: torch.Tensor  # (b, tokens, cross_attention_dim): CLIP image embedding (zeros for uncond)
    audio_tokens: torch.Tensor | None  # (b*f, tokens, audio_dim)
    level_masks: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # level -> (full, face, lips), (b*f, N)
    branch_weights: tuple[float, float, float] | None
    reference: ReferenceKV | None
    read_rows: torch.Tensor | None  # (b,) bool: batch rows that attend to the reference bank


def frames_to_tokens(frames: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) -> (n, H*W, C), row-major over (H, W) like the official reshape."""
    return rearrange(frames, "n c h w -> n (h w) c")


def tokens_to_frames(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, H*W, C) -> (n, C, H, W)."""
    return rearrange(tokens, "n (h w) c -> n c h w", h=height, w=width).contiguous()


class CheckpointedLayers(nn.Module):
    """Runs sub-layers through activation checkpointing when enabled and gradients are on (training only)."""

    gradient_checkpointing: bool = False

    def run(self, layer: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)


def cross_attention(attn: Attention, hidden: torch.Tensor, context: torch.Tensor, video_length: int) -> torch.Tensor:
    """attn2 of per-frame tokens (b*f, N, C) to a per-video context (b, T, C_ctx).

    With a single context token (the CLIP image embedding) softmax weights are exactly 1, so the output is
    ``to_out(to_v(context))`` for every token: computed once per video row instead of per token.
    """
    if context.shape[1] == 1:
        out = attn.to_out[1](attn.to_out[0](attn.to_v(context)))  # (b, 1, C)
        return out.repeat_interleave(video_length, dim=0)
    return attn(hidden, encoder_hidden_states=context.repeat_interleave(video_length, dim=0))


class ReferenceTransformerBlock(BasicTransformerBlock):
    """Spatial transformer block (attn1 self + reference, attn2 CLIP cross, GEGLU FF); diffusers names and weights.

    ``bank_key`` is this block's name inside the denoising UNet; it selects its entry of a :class:`ReferenceKV`.
    """

    bank_key: str = ""

    def forward(self, hidden: torch.Tensor, inputs: StepInputs) -> torch.Tensor:  # type: ignore[override]
        reference = inputs.reference.get(self.bank_key) if inputs.reference is not None else None
        normed = self.norm1(hidden)
        attended = self_attention_with_reference(self.attn1, normed, inputs.video_length, reference, inputs.read_rows)
        hidden = attended + hidden
        hidden = cross_attention(self.attn2, self.norm2(hidden), inputs.context, inputs.video_length) + hidden
        return self.ff(self.norm3(hidden)) + hidden


class SpatialTransformer(nn.Module):
    """Official ``Transformer3DModel`` (image branch): GroupNorm -> 1x1 conv -> block -> 1x1 conv, per frame."""

    def __init__(self, channels: int, heads: int, cross_attention_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [ReferenceTransformerBlock(channels, heads, channels // heads, cross_attention_dim=cross_attention_dim)]
        )
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, frames: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
        height, width = frames.shape[-2:]
        tokens = frames_to_tokens(self.proj_in(self.norm(frames)))
        for block in self.transformer_blocks:
            tokens = block(tokens, inputs)
        return self.proj_out(tokens_to_frames(tokens, height, width)) + frames
