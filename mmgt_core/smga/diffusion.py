"""SMGA diffusion (official ``GestureDiffusion``): cosine schedule, DDIM (eta = 1) with CFG, training loss.

Numbers follow ``src/audio2pose_model/diffusion.py`` exactly: betas are computed in float64 and stored as
float32, everything after that is float32; the sampler evaluates the model at
``reversed(linspace(-1, T-1, steps+1).int())`` = 999, 979, …, 19 and the last pair returns the clamped x0.
The model predicts x0 (``predict_epsilon=False``). Random draws come from a caller's ``torch.Generator`` in the
official order: the initial noise, then one draw per step except the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor

from ..types import OptionalCancel, OptionalProgress
from .model import FACE_DIMS, GestureDecoder, draw_keep_mask

N_TIMESTEP = 1000
COND_DROP_PROB = 0.25
GUIDANCE_WEIGHT = 2.0
FACE_LOSS_WEIGHT = 3.0


@dataclass(frozen=True)
class DiffusionSchedule:
    """All schedule arrays of the official ``GestureDiffusion`` (float32, length n_timestep)."""

    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    log_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
    p2_loss_weight: Tensor

    @property
    def n_timestep(self) -> int:
        return int(self.betas.shape[0])

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device: torch.device | str) -> DiffusionSchedule:
        return DiffusionSchedule(**{name: value.to(device) for name, value in self.as_dict().items()})


def cosine_betas(n_timestep: int = N_TIMESTEP, cosine_s: float = 8e-3) -> Tensor:
    """Cosine betas in float64: ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2)/ᾱ(0), β = 1 − ᾱ_t/ᾱ_{t−1}, clipped to 0.999."""
    steps = torch.arange(n_timestep + 1, dtype=torch.float64) / n_timestep + cosine_s
    alphas = torch.cos(steps / (1 + cosine_s) * math.pi / 2).pow(2)
    alphas = alphas / alphas[0]
    return (1 - alphas[1:] / alphas[:-1]).clamp(0, 0.999)


def cosine_schedule(n_timestep: int = N_TIMESTEP) -> DiffusionSchedule:
    """The official schedule: float64 betas → float32, then every derived array in float32."""
    betas = cosine_betas(n_timestep).float()
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return DiffusionSchedule(
        betas=betas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=torch.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=torch.sqrt(1.0 - alphas_cumprod),
        log_one_minus_alphas_cumprod=torch.log(1.0 - alphas_cumprod),
        sqrt_recip_alphas_cumprod=torch.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=torch.sqrt(1.0 / alphas_cumprod - 1),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=torch.log(torch.clamp(posterior_variance, min=1e-20)),
        posterior_mean_coef1=betas * torch.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * torch.sqrt(alphas) / (1.0 - alphas_cumprod),
        p2_loss_weight=torch.ones(n_timestep),  # use_p2=False: (k + snr) ** -0
    )


def ddim_timesteps(steps: int = 50, n_timestep: int = N_TIMESTEP) -> list[int]:
    """[T−1, …, −1]: reversed(linspace(−1, T−1, steps+1).int()), as the official sampler builds it."""
    return list(reversed(torch.linspace(-1, n_timestep - 1, steps=steps + 1).int().tolist()))


def q_sample(schedule: DiffusionSchedule, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Forward diffusion x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε, per row t (B,)."""
    shape = (-1,) + (1,) * (x_start.ndim - 1)
    return (schedule.sqrt_alphas_cumprod[t].view(shape) * x_start
            + schedule.sqrt_one_minus_alphas_cumprod[t].view(shape) * noise)


def predict_noise_from_start(schedule: DiffusionSchedule, x_t: Tensor, t: int, x0: Tensor) -> Tensor:
    """ε̂ = (√(1/ᾱ_t)·x_t − x0)/√(1/ᾱ_t − 1)."""
    return (schedule.sqrt_recip_alphas_cumprod[t] * x_t - x0) / schedule.sqrt_recipm1_alphas_cumprod[t]


def ddim_update(schedule: DiffusionSchedule, x_t: Tensor, x0: Tensor, t: int, t_next: int, noise: Tensor,
                eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """One DDIM step from t to t_next ≥ 0 given the (clamped) x0; returns (x_next, predicted noise)."""
    pred_noise = predict_noise_from_start(schedule, x_t, t, x0)
    alpha, alpha_next = schedule.alphas_cumprod[t], schedule.alphas_cumprod[t_next]
    sigma = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
    # c² = (1−ᾱ')·ᾱ(1/ᾱ' − 1)/(1−ᾱ) ≥ 0 in exact math; with few steps float32 can round it below 0 (NaN)
    c = (1 - alpha_next - sigma**2).clamp(min=0).sqrt()
    return x0 * alpha_next.sqrt() + c * pred_noise + sigma * noise, pred_noise


@dataclass
class KnownFrames:
    """Frames to hold fixed while sampling (inpainting by replacement): ``values`` (N, L, F), ``mask`` (L,) bool."""

    values: Tensor
    mask: Tensor

    def impose(self, schedule: DiffusionSchedule, x: Tensor, t: int, noise: Tensor) -> Tensor:
        """Replace the known frames of x (at noise level t) by the known values noised to level t."""
        noised = q_sample(schedule, self.values, torch.full((x.shape[0],), t, device=x.device), noise)
        return torch.where(self.mask.view(1, -1, 1), noised, x)


def draw_noise(shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """Standard normal noise from the generator (on its own device), moved to ``device``."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=source).to(device)


def ddim_sample(
    model: GestureDecoder,
    cond_frame: Tensor,
    cond: Tensor,
    generator: Optional[torch.Generator],
    *,
    batch: int = 1,
    steps: int = 50,
    guidance_weight: float = GUIDANCE_WEIGHT,
    eta: float = 1.0,
    schedule: Optional[DiffusionSchedule] = None,
    known: Optional[KnownFrames] = None,
    progress: OptionalProgress = None,
    check_cancel: OptionalCancel = None,
) -> Tensor:
    """Sample ``batch`` windows (N, L, nfeats), float32, like the official ``ddim_sample`` with CFG.

    cond_frame: (N or 1, nfeats) normalised pose; cond: (N or 1, L, cond_dim) audio features. The audio
    encoding is computed once; each step runs both guidance passes in one batch.
    """
    device = model.input_projection.weight.device
    schedule = (schedule or cosine_schedule()).to(device)
    config = model.config
    times = ddim_timesteps(steps, schedule.n_timestep)
    context = model.prepare_guidance(cond_frame.to(device), cond.to(device), guidance_weight, batch=batch)
    x = draw_noise((batch, config.seq_len, config.nfeats), generator, device)
    if known is not None:
        x = known.impose(schedule, x, times[0], x)
    for index, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        if check_cancel is not None:
            check_cancel()
        t_batch = torch.full((batch,), t, device=device, dtype=torch.long)
        x0 = model.guided_x0(context, x, t_batch).float().clamp(-1.0, 1.0)
        if t_next < 0:
            x = x0
        else:
            noise = draw_noise(x.shape, generator, device)
            x, _ = ddim_update(schedule, x, x0, t, t_next, noise, eta)
            if known is not None:
                x = known.impose(schedule, x, t_next, noise)
        if progress is not None:
            progress(index + 1, steps)
    return x


def motion_losses(prediction: Tensor, target: Tensor) -> Tensor:
    """The six official loss terms: MSE of positions, velocities, accelerations, on all dims and on the face."""
    def position_velocity_acceleration(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        velocity = a[:, 1:] - a[:, :-1]
        return a, velocity, velocity[:, 1:] - velocity[:, :-1]

    terms = []
    for weight, dims in ((1.0, slice(None)), (FACE_LOSS_WEIGHT, FACE_DIMS)):
        predicted = position_velocity_acceleration(prediction[..., dims])
        wanted = position_velocity_acceleration(target[..., dims])
        terms += [weight * torch.mean((p - w) ** 2) for p, w in zip(predicted, wanted)]
    return torch.stack(terms)


def p_losses(
    model: GestureDecoder,
    schedule: DiffusionSchedule,
    x_start: Tensor,
    cond_frame: Tensor,
    cond: Tensor,
    t: Tensor,
    *,
    noise: Optional[Tensor] = None,
    cond_keep: Optional[Tensor] = None,
    cond_drop_prob: float = COND_DROP_PROB,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """Official training loss: returns (total, parts) with parts = [loss, v, a, 3·head, 3·v_head, 3·a_head].

    ``noise`` and ``cond_keep`` replace the two random draws (otherwise drawn from ``generator``).
    """
    if noise is None:
        noise = draw_noise(tuple(x_start.shape), generator, x_start.device)
    if cond_keep is None:
        cond_keep = draw_keep_mask(x_start.shape[0], cond_drop_prob, x_start.device, generator)
    x_noisy = q_sample(schedule, x_start, t, noise)
    prediction = model(x_noisy, cond_frame, cond, t, cond_keep=cond_keep)
    parts = motion_losses(prediction.float(), x_start.float())  # target = x0 (predict_epsilon=False)
    return parts.sum(), parts
