"""Chunked VAE encode/decode for video latents (SD ``AutoencoderKL``, scale 0.18215 or the VAE config's own).

The official pipeline decodes one frame at a time (``chunk_frames=1``), then ``(x / 2 + 0.5).clamp(0, 1)``.
Decoding in chunks keeps memory flat for long videos: ``iter_decoded_chunks`` yields the frames chunk by chunk
(for streaming them into a file, memory independent of length); ``decode_latents`` writes them into one
preallocated output (for IMAGE batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import torch
from torch import nn

from mmgt_core.errors import InputError
from mmgt_core.types import CancelFn, ProgressFn

VAE_SCALING = 0.18215
"""SD1.5's latent scale (ComfyUI's SD1.5 latent format too); a VAE whose config has ``scaling_factor`` uses that."""
ALREADY_UNSCALED = 1.0
"""The ``scaling_factor`` to decode latents already in the VAE's own space (core LATENT's scale) with."""


def vae_scaling_factor(vae: Any) -> float:
    """The VAE config's ``scaling_factor`` (diffusers ``AutoencoderKL``), else SD1.5's :data:`VAE_SCALING`."""
    config = getattr(vae, "config", None)
    value = config.get("scaling_factor") if isinstance(config, Mapping) else getattr(config, "scaling_factor", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else VAE_SCALING


def module_dtype_device(module: Any, default_dtype: torch.dtype = torch.float32) -> tuple[torch.dtype, torch.device]:
    """dtype and device of a module's first parameter (float32/CPU for callables without parameters)."""
    if isinstance(module, nn.Module):
        for parameter in module.parameters():
            return parameter.dtype, parameter.device
    return default_dtype, torch.device("cpu")


def iter_decoded_chunks(
    vae: nn.Module | Callable[[torch.Tensor], Any],
    latents: torch.Tensor,
    chunk_frames: int = 1,
    scaling_factor: Optional[float] = None,
    check_cancel: Optional[CancelFn] = None,
    stop: Optional[int] = None,
) -> Iterator[torch.Tensor]:
    """Decode video latents (1, 4, T, h, w) or (T, 4, h, w) lazily: yields frames (n, H, W, 3) float32 CPU in
    [0, 1], ``chunk_frames`` at a time, in order, so a caller can stream them out in memory independent of T.

    ``stop`` decodes only the first ``stop`` frames. ``check_cancel`` is called before every chunk.
    """
    frames_latents = latents[0].transpose(0, 1) if latents.ndim == 5 else latents  # (T, 4, h, w)
    dtype, device = module_dtype_device(vae)
    total = frames_latents.shape[0] if stop is None else min(int(stop), frames_latents.shape[0])
    if total < 1 or frames_latents.ndim != 4:
        raise InputError("latents", f"expected (1, 4, T, h, w) or (T, 4, h, w) with T >= 1, got {tuple(latents.shape)}",
                         "pass the sampler's output latents.")
    chunk_frames = max(1, int(chunk_frames))
    scale = vae_scaling_factor(vae) if scaling_factor is None else scaling_factor
    for start in range(0, total, chunk_frames):
        if check_cancel is not None:
            check_cancel()
        chunk = frames_latents[start:min(start + chunk_frames, total)].to(device=device, dtype=dtype) / scale
        with torch.no_grad():
            images = _decoded(vae.decode(chunk) if hasattr(vae, "decode") else vae(chunk))
        yield (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def decode_latents(
    vae: nn.Module | Callable[[torch.Tensor], Any],
    latents: torch.Tensor,
    chunk_frames: int = 1,
    scaling_factor: Optional[float] = None,
    progress: Optional[ProgressFn] = None,
    check_cancel: Optional[CancelFn] = None,
) -> torch.Tensor:
    """Video latents (1, 4, T, h, w) or (T, 4, h, w) -> frames (T, H, W, 3) float32 CPU in [0, 1]."""
    total = latents.shape[2] if latents.ndim == 5 else latents.shape[0]
    output = torch.empty(0)
    done = 0
    for images in iter_decoded_chunks(vae, latents, chunk_frames, scaling_factor, check_cancel):
        if done == 0:
            output = torch.empty(total, *images.shape[1:], dtype=torch.float32)
        output[done:done + images.shape[0]] = images
        done += images.shape[0]
        if progress is not None:
            progress(done, total)
    return output


def encode_images(
    vae: nn.Module,
    pixels: torch.Tensor,
    chunk_frames: int = 8,
    scaling_factor: Optional[float] = None,
    sample_generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] -> latents (N, 4, H/8, W/8) scaled by the VAE's factor, in chunks.

    Uses ``latent_dist.mean`` (the official reference path); with ``sample_generator`` it samples instead.
    """
    dtype, device = module_dtype_device(vae)
    scale = vae_scaling_factor(vae) if scaling_factor is None else scaling_factor
    pieces = []
    for start in range(0, pixels.shape[0], max(1, int(chunk_frames))):
        chunk = pixels[start:start + chunk_frames].to(device=device, dtype=dtype)
        with torch.no_grad():
            encoded = vae.encode(chunk)
        dist = getattr(encoded, "latent_dist", encoded[0] if isinstance(encoded, (tuple, list)) else encoded)
        latent = dist.mean if sample_generator is None else dist.sample(sample_generator)
        pieces.append(latent * scale)
    return torch.cat(pieces)


def _decoded(result: Any) -> torch.Tensor:
    if hasattr(result, "sample"):
        return result.sample
    if isinstance(result, (tuple, list)):
        return result[0]
    return result
