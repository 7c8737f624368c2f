"""MM-HAA: mask-gated hierarchical audio attention (official ``Transformer3DModel(use_audio_module=True)``).

Per frame: GroupNorm -> 1x1 conv (C_in -> D) -> :class:`AudioBranchBlock` -> 1x1 conv (D -> C_in) + residual.
The block is self-attention, then three audio cross-attention branches, each multiplied by its motion mask
and passed through a 1x1 "zero conv" adapter, then summed with branch weights (spec 3.6):

    h = w0 * zero_conv_full(attn2_0(n, audio) * full_mask) + w1 * zero_conv_face(attn2_1(...) * face_mask)
        + w2 * zero_conv_lip(attn2_2(...) * lips_mask) + h

The official code reshapes tokens to int(sqrt(N))^2 for the 1x1 convs; a 1x1 conv acts per token, so it is
applied to the tokens directly and any H x W works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from ..errors import InputError
from .blocks3d import frames_to_tokens, tokens_to_frames

MASK_BRANCHES = ("full", "face", "lips")


class BranchMaskLevels(Protocol):
    """Motion masks gating the three MM-HAA branches; one tensor per UNet level (level i <-> down_blocks.i).

    ``full`` feeds attn2_0 (released inference: 1 + lips), ``face`` attn2_1 (face + hands), ``lips`` attn2_2
    (named ``body_mask`` in the official code). Each level tensor is (F, h_l*w_l) or (F, h_l, w_l),
    shared by all batch rows (both CFG halves use the same masks), or (B, F, ...) per batch row. Levels 0..2
    are used; further levels are ignored. ``mmgt_core.video.conditioning.BranchMasks`` satisfies this.
    """

    @property
    def full(self) -> Sequence[torch.Tensor]: ...

    @property
    def face(self) -> Sequence[torch.Tensor]: ...

    @property
    def lips(self) -> Sequence[torch.Tensor]: ...


def level_masks(
    masks: BranchMaskLevels, level: int, batch: int, frames: int, height: int, width: int, dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (full, face, lips) masks of one level as (b*f, h*w) tensors matching the frame-batch token layout."""
    full, face, lips = (
        _flatten_level(getattr(masks, branch), branch, level, (batch, frames, height, width)).to(device, dtype)
        for branch in MASK_BRANCHES
    )
    return full, face, lips


def _flatten_level(levels: Sequence[torch.Tensor], branch: str, level: int,
                   sizes: tuple[int, int, int, int]) -> torch.Tensor:
    """Accept (F, N), (F, h, w), (B, F, N) or (B, F, h, w); return (B*F, N) with N = h*w."""
    batch, frames, height, width = sizes
    if len(levels) <= level:
        raise InputError("masks", f"the {branch} mask has {len(levels)} levels; level {level} is needed.",
                         "Give one mask tensor per UNet level (at least 3).")
    mask = levels[level]
    tokens = height * width
    shape = tuple(mask.shape)
    if shape in ((frames, tokens), (frames, height, width)):
        return mask.reshape(frames, tokens).repeat(batch, 1)
    if shape in ((batch, frames, tokens), (batch, frames, height, width)):
        return mask.reshape(batch * frames, tokens)
    raise InputError(
        "masks", f"the level-{level} {branch} mask has shape {shape}; expected ({frames}, {height}, {width}) or "
        f"({frames}, {tokens}), optionally with a leading batch of {batch}.",
        "Resize the masks to the latent size of each level and slice them to the frames being denoised.",
    )


class AudioBranchBlock(nn.Module):
    """Official ``AudioTemporalBasicTransformerBlock`` in its three-branch form (all MMGT audio modules)."""

    def __init__(self, dim: int, heads: int, audio_dim: int, zero_init: bool = True) -> None:
        super().__init__()
        self.zero_conv_full = nn.Conv2d(dim, dim, kernel_size=1)
        self.zero_conv_face = nn.Conv2d(dim, dim, kernel_size=1)
        self.zero_conv_lip = nn.Conv2d(dim, dim, kernel_size=1)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim // heads)
        self.norm1 = nn.LayerNorm(dim)
        self.attn2_0 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim // heads)
        self.attn2_1 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim // heads)
        self.attn2_2 = Attention(query_dim=dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)
        if zero_init:  # the adapters start at zero in training; loaded weights overwrite this
            for conv in (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, tokens: torch.Tensor, audio: torch.Tensor, masks: tuple[torch.Tensor, ...],
                branch_weights: Sequence[float] | None) -> torch.Tensor:
        """tokens (b*f, N, D), audio (b*f, T, A), masks 3 x (b*f, N) -> (b*f, N, D)."""
        tokens = self.attn1(self.norm1(tokens)) + tokens
        normed = self.norm2(tokens)
        branches = [
            _adapter(conv, attn(normed, encoder_hidden_states=audio) * mask[:, :, None])
            for attn, conv, mask in zip(
                (self.attn2_0, self.attn2_1, self.attn2_2),
                (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip),
                masks,
                strict=True,
            )
        ]
        if branch_weights is None:  # official eval path: unweighted sum
            tokens = branches[0] + branches[1] + branches[2] + tokens
        else:
            w0, w1, w2 = branch_weights
            tokens = w0 * branches[0] + w1 * branches[1] + w2 * branches[2] + tokens
        return self.ff(self.norm3(tokens)) + tokens


def _adapter(conv: nn.Conv2d, tokens: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv applied per token (identical to the official reshape -> conv -> reshape)."""
    return F.linear(tokens, conv.weight.flatten(1), conv.bias)


class AudioTransformer(nn.Module):
    """One MM-HAA module: (b*f, C_in, H, W) frames + audio tokens + masks -> same-shape frames.

    ``dim`` may differ from ``in_channels`` (Hallo head-dim quirk, spec Q13: the first audio module of
    down_blocks.1/2 has D = C_in / 2).
    """

    def __init__(self, in_channels: int, dim: int, heads: int, audio_dim: int, groups: int,
                 zero_init: bool = True) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([AudioBranchBlock(dim, heads, audio_dim, zero_init)])
        self.proj_out = nn.Conv2d(dim, in_channels, kernel_size=1)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor, masks: tuple[torch.Tensor, ...],
                branch_weights: Sequence[float] | None) -> torch.Tensor:
        height, width = frames.shape[-2:]
        tokens = frames_to_tokens(self.proj_in(self.norm(frames)))
        for block in self.transformer_blocks:
            tokens = block(tokens, audio, masks, branch_weights)
        return self.proj_out(tokens_to_frames(tokens, height, width)) + frames
