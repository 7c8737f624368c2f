"""The Stage-II scheduler with the released inference configuration (spec 3.1, quirk Q15), and two faster solvers.

Inference uses **linear** betas (training used ``scaled_linear``; the released script builds the scheduler from the
inference config), v-prediction, zero-terminal-SNR rescaling, trailing spacing and eta 0. For 30 steps that gives
timesteps 999, 966, ..., 32 with ``prev_t = t - 33``.

``"ddim"`` is the released behaviour and the parity path. ``"dpmpp_2m"`` (DPM-Solver++ 2M) and ``"unipc"`` (UniPC,
2nd order) are diffusers' multistep solvers built from the same config (same betas, v-prediction, zero-SNR,
trailing spacing), ending at sigma 0; they let a user trade steps for time (e.g. 15 instead of 30). Their quality on
the real weights has not been measured here.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from ..errors import InputError

SCHEDULERS: tuple[str, ...] = ("ddim", "dpmpp_2m", "unipc")
_SCHEDULER_CLASSES = {"ddim": DDIMScheduler, "dpmpp_2m": DPMSolverMultistepScheduler,
                      "unipc": UniPCMultistepScheduler}
_SOLVER_SETTINGS: dict[str, dict[str, Any]] = {
    "ddim": {},
    "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2, "final_sigmas_type": "zero",
                 "lower_order_final": True},
    "unipc": {"solver_order": 2, "final_sigmas_type": "zero", "lower_order_final": True},
}

RELEASED_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}

DEFAULT_STEPS = 30


def make_scheduler(name: str = "ddim", **overrides: Any) -> Any:
    """A fresh scheduler (``name`` in SCHEDULERS) with the released inference config; ``overrides`` replace single
    entries. Entries a solver does not take (DDIM's ``clip_sample``, ``set_alpha_to_one``) are left out for it."""
    if name not in _SCHEDULER_CLASSES:
        raise InputError("scheduler", f"unknown scheduler {name!r}.", f"Use one of {', '.join(SCHEDULERS)}.")
    cls = _SCHEDULER_CLASSES[name]
    config = {**RELEASED_SCHEDULER_CONFIG, **_SOLVER_SETTINGS[name], **overrides}
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls(**{key: value for key, value in config.items() if key in accepted})


DDIM_CHUNK_FRAMES = 64
"""Latent frames a DDIM update handles at a time: its temporaries stay this size, not the video's."""


def scheduler_step(scheduler: Any, model_output: torch.Tensor, timestep: int | torch.Tensor,
                   latents: torch.Tensor) -> torch.Tensor:
    """One update from ``timestep`` to the next: deterministic DDIM (eta 0), or the multistep solver's step.

    DDIM writes the new latents into ``model_output`` (the caller's guided prediction, not used afterwards), a
    chunk of frames at a time: the update is elementwise, so the result is bit for bit diffusers', and a long
    video needs no full-length temporaries (at 512x512 each is 65 kB a frame). The multistep solvers keep their
    history of whole predictions and run on the whole video.
    """
    if not isinstance(scheduler, DDIMScheduler):
        return scheduler.step(model_output, timestep, latents, return_dict=False)[0]
    if not updates_frames_independently(scheduler):
        return ddim_step(scheduler, model_output, timestep, latents)
    for start in range(0, latents.shape[2], DDIM_CHUNK_FRAMES):
        frames = slice(start, start + DDIM_CHUNK_FRAMES)
        model_output[:, :, frames] = ddim_step(scheduler, model_output[:, :, frames], timestep, latents[:, :, frames])
    return model_output


def updates_frames_independently(scheduler: Any) -> bool:
    """Whether one update of a frame needs only that frame's latents and prediction: DDIM (eta 0) without dynamic
    thresholding (which takes quantiles over the whole video), not the multistep solvers (which keep a history of
    whole predictions)."""
    return isinstance(scheduler, DDIMScheduler) and not scheduler.config.thresholding


def inference_timesteps(scheduler: Any, steps: int) -> torch.Tensor:
    """Set ``steps`` inference steps on ``scheduler`` and return its timesteps (int64, descending)."""
    scheduler.set_timesteps(steps, device="cpu")
    return scheduler.timesteps.clone()


def ddim_step(scheduler: DDIMScheduler, model_output: torch.Tensor, timestep: int | torch.Tensor,
              latents: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM update (eta 0) from ``timestep`` to the previous one; returns the new latents."""
    return scheduler.step(model_output, timestep, latents, eta=0.0, return_dict=False)[0]
