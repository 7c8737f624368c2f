"""The Stage-II DDIM scheduler with the released inference configuration (spec 3.1, quirk Q15).

Inference uses **linear** betas (training used ``scaled_linear``; the released script builds the scheduler from the
inference config), v-prediction, zero-terminal-SNR rescaling, trailing spacing and eta 0. For 30 steps that gives
timesteps 999, 966, ..., 32 with ``prev_t = t - 33``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler

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


def make_scheduler(**overrides: Any) -> DDIMScheduler:
    """A fresh ``DDIMScheduler`` with the released inference config; ``overrides`` replace single entries."""
    config = {**RELEASED_SCHEDULER_CONFIG, **overrides}
    return DDIMScheduler(**config)


def inference_timesteps(scheduler: DDIMScheduler, steps: int) -> torch.Tensor:
    """Set ``steps`` inference steps on ``scheduler`` and return its timesteps (int64, descending)."""
    scheduler.set_timesteps(steps, device="cpu")
    return scheduler.timesteps.clone()


def ddim_step(scheduler: DDIMScheduler, model_output: torch.Tensor, timestep: int | torch.Tensor,
              latents: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM update (eta 0) from ``timestep`` to the previous one; returns the new latents."""
    return scheduler.step(model_output, timestep, latents, eta=0.0, return_dict=False)[0]
