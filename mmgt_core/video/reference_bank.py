"""Reference banks: the ReferenceNet's self-attention inputs, read by the denoising UNet (mutual self-attention).

Official behaviour (``src/models/mutual_self_attention.py``, spec 3.4):
* **write**: every ReferenceNet transformer block stores ``norm1(h)``; the ReferenceNet runs once per video at t = 0.
* **pair**: writer and reader blocks are each stable-sorted by ``-channels`` (from module/DFS order) and zipped.
* **round**: ``update()`` casts the banks to float16, even in an fp32 run.
* **read**: ``attn1(q=norm1(h), kv=cat([norm1(h), bank repeated over frames]))``; rows of the unconditional CFG half
  use plain self-attention instead (no reference).

Here the bank is plain data passed as an argument; nothing is monkey-patched. Because the bank never changes
during a video, :class:`ReferenceKV` holds its ``to_k``/``to_v`` projections, computed once per video and shared by
every frame, window and step (broadcast, never repeated per frame in storage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from einops import rearrange


@dataclass
class ReferenceBank:
    """``norm1`` inputs of the ReferenceNet's transformer blocks, in the ReferenceNet's module order.

    ``features[i]`` has shape (B_ref, tokens, channels). B_ref is 1 (the conditional reference, what the
    pipeline needs) or equals the denoiser batch (as in the official code, where row i serves batch row i).
    """

    names: list[str]
    features: list[torch.Tensor]

    def sorted_entries(self) -> list[tuple[str, torch.Tensor]]:
        """Entries in the official pairing order: stable sort by decreasing channel count."""
        entries = list(zip(self.names, self.features, strict=True))
        return sorted(entries, key=lambda entry: -entry[1].shape[-1])


@dataclass
class ReferenceKV:
    """Per reader block name: the bank's attn1 keys and values, head-split to (B_ref, heads, tokens, head_dim)."""

    keys: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    def conditional_row(self, row: int = -1) -> ReferenceKV:
        """Keep one bank row (default the last: the conditional row of an official [uncond; cond] bank)."""
        pick = slice(row, None if row == -1 else row + 1)
        return ReferenceKV({name: key[pick] for name, key in self.keys.items()},
                           {name: value[pick] for name, value in self.values.items()})

    def get(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if name not in self.keys:
            return None
        return self.keys[name], self.values[name]


def round_through_fp16(features: torch.Tensor) -> torch.Tensor:
    """Round to float16 and back, as the official ``ReferenceAttentionControl.update`` does (spec 3.4)."""
    return features.to(torch.float16).to(features.dtype)


def pair_blocks(writers: Sequence[tuple[str, int]], readers: Sequence[tuple[str, int]]) -> list[tuple[str, str]]:
    """Official writer/reader pairing: stable sort each (name, channels) list by -channels, then zip."""
    if len(writers) != len(readers):
        raise ValueError(f"ReferenceNet has {len(writers)} transformer blocks but the denoiser has {len(readers)}.")
    ordered_writers = sorted(writers, key=lambda entry: -entry[1])
    ordered_readers = sorted(readers, key=lambda entry: -entry[1])
    for (writer, w_dim), (reader, r_dim) in zip(ordered_writers, ordered_readers, strict=True):
        if w_dim != r_dim:
            raise ValueError(f"Reference block {writer} ({w_dim} ch) cannot feed {reader} ({r_dim} ch).")
    return [(writer, reader) for (writer, _), (reader, _) in zip(ordered_writers, ordered_readers, strict=True)]


def split_heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, heads * d) -> (batch, heads, tokens, d)."""
    return rearrange(tokens, "b n (h d) -> b h n d", h=heads)


def merge_heads(tokens: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, d) -> (batch, tokens, heads * d)."""
    return rearrange(tokens, "b h n d -> b n (h d)")


def project_bank(attn: Attention, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank's keys and values through a reader's attn1, head-split (computed once per video)."""
    return split_heads(attn.to_k(features), attn.heads), split_heads(attn.to_v(features), attn.heads)


def _output_projection(attn: Attention, tokens: torch.Tensor) -> torch.Tensor:
    return attn.to_out[1](attn.to_out[0](tokens))


def self_attention_with_reference(
    attn: Attention,
    hidden: torch.Tensor,
    video_length: int,
    reference: tuple[torch.Tensor, torch.Tensor] | None,
    read_rows: torch.Tensor | None,
) -> torch.Tensor:
    """attn1 on per-frame tokens ``hidden`` (b*f, N, C); rows with ``read_rows[b]`` also attend to the bank.

    Equals the official ``attn1(norm1(h), cat([norm1(h), bank]))`` (to_k/to_v act per token, so projecting the
    bank once is exact up to float rounding) with the unconditional rows recomputed without reference.
    """
    query = split_heads(attn.to_q(hidden), attn.heads)
    key = split_heads(attn.to_k(hidden), attn.heads)
    value = split_heads(attn.to_v(hidden), attn.heads)
    if reference is None or read_rows is None or not bool(read_rows.any()):
        return _output_projection(attn, merge_heads(F.scaled_dot_product_attention(query, key, value)))

    batch = hidden.shape[0] // video_length
    query, key, value = (t.view(batch, video_length, *t.shape[1:]) for t in (query, key, value))  # (b, f, h, N, d)
    out = torch.empty_like(query)
    plain_rows = ~read_rows
    if bool(plain_rows.any()):
        out[plain_rows] = _attend_frames(query[plain_rows], key[plain_rows], value[plain_rows])
    ref_key, ref_value = (_rows_for(t, read_rows) for t in reference)
    out[read_rows] = _attend_frames(
        query[read_rows], _with_bank(key[read_rows], ref_key), _with_bank(value[read_rows], ref_value)
    )
    return _output_projection(attn, merge_heads(out.flatten(0, 1)))


def _rows_for(bank: torch.Tensor, read_rows: torch.Tensor) -> torch.Tensor:
    """Bank rows for the reading batch rows: a single bank row serves all of them."""
    if bank.shape[0] == 1:
        return bank
    if bank.shape[0] != read_rows.shape[0]:
        raise ValueError(f"Reference bank has {bank.shape[0]} rows; expected 1 or the batch size {read_rows.shape[0]}.")
    return bank[read_rows]


def _with_bank(per_frame: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """cat([(R, f, h, N, d), bank (R|1, h, M, d) broadcast over frames], tokens) -> (R, f, h, N + M, d)."""
    rows, frames = per_frame.shape[:2]
    shared = bank.unsqueeze(1).expand(rows, frames, *bank.shape[1:])
    return torch.cat([per_frame, shared], dim=3)


def _attend_frames(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """SDPA over (R, f, heads, tokens, d) tensors, keeping that layout."""
    out = F.scaled_dot_product_attention(query.flatten(0, 1), key.flatten(0, 1), value.flatten(0, 1))
    return out.view(query.shape)
