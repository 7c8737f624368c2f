"""The one Stage-II settings type; its field defaults are the released inference settings.

Node widgets (``nodes/stage2.py``), CLI flags (``cli_generate``), training validation and the benchmarks read their
defaults from :data:`RELEASED` instead of typing the numbers again.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmgt_core.errors import InputError
from mmgt_core.video.scheduler import DEFAULT_STEPS, SCHEDULERS


@dataclass
class VideoSettings:
    """Everything about how a video is rendered (size, noise, sampler, guidance, masks, windows, decode)."""

    width: int = 512
    height: int = 512
    seed: int = 42
    steps: int = DEFAULT_STEPS
    scheduler: str = "ddim"  # "ddim" (released), "dpmpp_2m" or "unipc" (video/scheduler.py SCHEDULERS)
    guidance_scale: float = 3.5
    branch_weights: tuple[float, float, float] = (1.0, 1.0, 2.0)  # MM-HAA full / face+hands / lips
    mask_mode: str = "released"  # "released", "paper" or "training" (see conditioning.py)
    context_frames: int = 12
    context_overlap: int = 4
    context_schedule: str = "open"  # "closed_loop" = the official wrap-around schedule
    context_blend: str = "linear"  # open schedule only: "linear", "cosine" or "flat"
    decode_chunk: int = 4  # frames per VAE decode call
    round_reference_to_fp16: bool = True  # the official casts the reference banks to fp16


RELEASED = VideoSettings()
"""The released settings, read by node widgets and CLI flags."""


def check_scheduler(name: str) -> None:
    """Raise InputError for a scheduler this build cannot run."""
    if name not in SCHEDULERS:
        raise InputError("scheduler", f"unknown scheduler '{name}'", f"use one of {', '.join(SCHEDULERS)}.")
