"""Context windows: which frames the video UNet denoises together, and how overlapping results are blended.

Two schedules:

* ``"open"`` (default): sliding windows over ``0..L-1`` that never wrap around. The first window starts at frame
  0, the last one ends at frame ``L-1``, starts are spread evenly so every overlap is at least ``overlap`` frames.
  Predictions are blended with weights that ramp up/down across each overlap (``"linear"`` or ``"cosine"``; the
  two ramps of an overlap add up to 1) or with flat weights (``"flat"``).
* ``"closed_loop"``: the official ``uniform`` schedule (spec 3.11, quirk Q16) with ``context_stride=1``: one
  window if ``L <= frames``, else windows starting at 0, ``frames-overlap``, ... ``< L``, each ``frames`` long, with
  indices taken modulo ``L`` (for L = 80 the last window is 72..79, 0..3). Flat weights, i.e. a plain average,
  like the official pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mmgt_core.errors import InputError

SCHEDULES = ("open", "closed_loop")
BLENDS = ("linear", "cosine", "flat")


@dataclass(frozen=True)
class ContextWindow:
    """One window: frame indices (1-D int64) and the blend weight of each of its frames (1-D float32, > 0)."""

    frames: torch.Tensor
    weights: torch.Tensor


def context_windows(
    num_frames: int,
    context_frames: int = 12,
    overlap: int = 4,
    schedule: str = "open",
    blend: str = "linear",
) -> list[ContextWindow]:
    """The windows covering ``num_frames`` frames for the given schedule (see the module docstring)."""
    _check_arguments(num_frames, context_frames, overlap, schedule, blend)
    if schedule == "closed_loop":
        return [_flat(frames) for frames in closed_loop_indices(num_frames, context_frames, overlap)]
    starts = open_window_starts(num_frames, context_frames, overlap)
    size = min(context_frames, num_frames)
    return [_open_window(index, starts, size, blend) for index in range(len(starts))]


def closed_loop_indices(num_frames: int, context_frames: int = 12, overlap: int = 4) -> list[list[int]]:
    """The official ``uniform`` schedule (step 0, stride 1, closed loop) as lists of frame indices."""
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    step = context_frames - overlap
    return [[frame % num_frames for frame in range(start, start + context_frames)]
            for start in range(0, num_frames, step)]


def open_window_starts(num_frames: int, context_frames: int = 12, overlap: int = 4) -> list[int]:
    """Evenly spread window starts from 0 to ``num_frames - context_frames`` with overlaps >= ``overlap``."""
    if num_frames <= context_frames:
        return [0]
    count = math.ceil((num_frames - overlap) / (context_frames - overlap))
    count = max(count, 2)
    span = num_frames - context_frames
    return [round(index * span / (count - 1)) for index in range(count)]


def blend_ramp(length: int, blend: str) -> torch.Tensor:
    """Rising weights for an overlap of ``length`` frames; ``ramp + ramp.flip(0) == 1`` for linear and cosine."""
    position = torch.arange(1, length + 1, dtype=torch.float64) / (length + 1)
    if blend == "cosine":
        position = 0.5 - 0.5 * torch.cos(math.pi * position)
    elif blend == "flat":
        position = torch.ones_like(position)
    return position.float()


def window_count(num_frames: int, context_frames: int = 12, overlap: int = 4, schedule: str = "open") -> int:
    """How many windows one denoising step runs (for progress totals)."""
    return len(context_windows(num_frames, context_frames, overlap, schedule, "flat"))


def _open_window(index: int, starts: list[int], size: int, blend: str) -> ContextWindow:
    start = starts[index]
    weights = torch.ones(size)
    if index > 0:
        shared = starts[index - 1] + size - start
        weights[:shared] = torch.minimum(weights[:shared], blend_ramp(shared, blend))
    if index + 1 < len(starts):
        shared = start + size - starts[index + 1]
        weights[size - shared:] = torch.minimum(weights[size - shared:], blend_ramp(shared, blend).flip(0))
    return ContextWindow(torch.arange(start, start + size), weights)


def _flat(frames: list[int]) -> ContextWindow:
    return ContextWindow(torch.tensor(frames, dtype=torch.long), torch.ones(len(frames)))


def _check_arguments(num_frames: int, context_frames: int, overlap: int, schedule: str, blend: str) -> None:
    if num_frames < 1:
        raise InputError("frames", f"need at least one frame, got {num_frames}", "give a pose sequence with frames.")
    if context_frames < 1:
        raise InputError("context_frames", f"must be >= 1, got {context_frames}", "use 12 (the trained window).")
    if not 0 <= overlap < context_frames:
        raise InputError("context_overlap", f"must be in [0, context_frames), got {overlap}", "use 4 (the default).")
    if schedule not in SCHEDULES:
        raise InputError("context_schedule", f"unknown schedule '{schedule}'", f"use one of {SCHEDULES}.")
    if blend not in BLENDS:
        raise InputError("context_blend", f"unknown blend '{blend}'", f"use one of {BLENDS}.")
