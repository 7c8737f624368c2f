"""Helpers shared by the node modules: readable errors and ComfyUI <-> core conversions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from mmgt_core.errors import MMGTError


class MMGTNodeError(RuntimeError):
    """An error shown in ComfyUI as one readable line: which node, which input, what to do.

    ComfyUI prints an exception's type as ``module.qualname`` unless the module is ``builtins``; a custom node's
    module is a file path, so the class presents itself as plain ``MMGTError``.
    """


MMGTNodeError.__module__ = "builtins"
MMGTNodeError.__qualname__ = "MMGTError"


@contextmanager
def node_errors(display_name: str) -> Iterator[None]:
    """Re-raise MMGT errors from the core as ``[<node>] <message>`` without a wall of traceback."""
    try:
        yield
    except MMGTError as exc:
        raise MMGTNodeError(f"[{display_name}] {exc}") from None


def uint8_frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 → ComfyUI IMAGE (T, H, W, 3) float32 in [0, 1]."""
    return frames.float().div(255.0)


def image_to_uint8_frames(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) float → (B, H, W, 3) uint8; alpha is dropped, grey is repeated to RGB."""
    if image.ndim == 3:
        image = image[None]
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return (image[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8)
