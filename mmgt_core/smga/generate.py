"""Any-length Stage-I generation: audio features (T, 1059) + reference pose → poses (T, 402), normalised.

The released model works on 80-frame (3.2 s) windows. The official script only handles one window for real
(its slicing path crashes, MMGT_SPEC 1.9/Q5), so longer audio is our design:

* **Window 0** is the official assembly: sampled with the reference pose as condition frame; output frame 0 is
  the reference pose itself and output frame k is generated frame k−1 (the last one is dropped). For 80 frames
  and ``smooth="official"`` the result equals ``scripts/audio2vid.py`` exactly.
* **Later windows** keep the same alignment (window starting at audio frame a produces output frames a+1…a+80)
  and overlap the previous one by ``overlap`` frames. They are conditioned on the first overlap frame (the
  model is trained with x[0] = condition frame) and sampled with *inpainting by replacement*: after every DDIM
  step the overlap frames of x_t are replaced by the already generated poses noised to the same level, so the
  new window grows out of the old motion instead of being glued to it. The already written overlap frames are
  kept as they are. What is left of a mismatch is removed by shifting the new frames so that the first one
  continues the known motion (last known pose + its recent velocity) and fading that offset out linearly until
  the next overlap begins: no jump at the seam, only a slow drift. With a trained model the offset is small.
* ``best_of`` > 1 samples N continuations in one batch and keeps the one whose overlap positions and
  velocity directions best continue the previous motion (like the official ``find_best_slice``).
* The last window's features are padded by repeating the last frame; the output is trimmed to T.

Windows are processed one by one, so memory does not grow with the audio length beyond the (T, 402) output.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from torch import Tensor

from ..constants import SMGA_WINDOW_FRAMES
from ..errors import InputError
from ..keypoints import all_finite
from ..timeline import fit_length
from ..types import OptionalCancel, OptionalProgress
from .diffusion import GUIDANCE_WEIGHT, KnownFrames, cosine_schedule, ddim_sample
from .model import GestureDecoder

SMOOTH_CHOICES = ("none", "official")
OFFICIAL_SMOOTH_PERIOD = 60
DEFAULT_OVERLAP = 8


@dataclass(frozen=True)
class WindowPlan:
    """One sampling window: audio features [audio_start, audio_start+window) → output frames
    [audio_start+1, audio_start+window]; the first ``overlap`` of those are already generated."""

    audio_start: int
    overlap: int

    @property
    def first_output(self) -> int:
        return self.audio_start + 1


def plan_windows(total_frames: int, window: int, overlap: int) -> list[WindowPlan]:
    """Windows that cover output frames 1…T−1 (frame 0 is the reference pose), hopping window − overlap."""
    plans = [WindowPlan(0, 0)]
    while plans[-1].audio_start + window < total_frames - 1:
        plans.append(WindowPlan(plans[-1].audio_start + window - overlap, overlap))
    return plans


def total_diffusion_steps(total_frames: int, steps: int, window: int = SMGA_WINDOW_FRAMES,
                          overlap: int = DEFAULT_OVERLAP) -> int:
    """How many progress steps ``generate_pose_sequence`` reports: windows × DDIM steps."""
    return len(plan_windows(total_frames, window, overlap)) * steps


def window_features(features: Tensor, start: int, window: int) -> Tensor:
    """features[start:start+window], padded by repeating the last frame."""
    return fit_length(features[start:start + window], window)


def official_spline_smoothing(sequence: Tensor, period: int = OFFICIAL_SMOOTH_PERIOD) -> Tensor:
    """``scripts/audio2vid.py`` "interpolate": around every p in arange(period, T, period), fit a cubic spline on
    frames p−8…p−6 and p+5…p+7 and overwrite frames p−7…p+6. Points whose support runs past the end are skipped
    (the official code would fail there). Returns a smoothed copy."""
    smoothed = sequence.detach().cpu().numpy().copy()
    official_spline_smoothing_(smoothed, period)
    return torch.from_numpy(smoothed).to(sequence.device, sequence.dtype)


def official_spline_smoothing_(sequence: np.ndarray, period: int = OFFICIAL_SMOOTH_PERIOD) -> None:
    """:func:`official_spline_smoothing` in place on a (T, F) array (no full-length copy)."""
    total = sequence.shape[0]
    for point in range(period, total, period):
        start, end = max(0, point - 5), min(total, point + 5)
        support = list(range(start - 3, start)) + list(range(end, end + 3))
        if support[0] < 0 or support[-1] >= total:
            continue
        spline = CubicSpline(support, sequence[support], axis=0)
        sequence[start - 2:end + 2] = spline(np.arange(start - 2, end + 2))


def official_assembly(reference_pose: Tensor, generated: Tensor) -> Tensor:
    """[reference pose; generated[:-1]] — output frame 0 is the reference, frame k is generated frame k−1."""
    return torch.cat([reference_pose.reshape(1, -1).to(generated), generated[:-1]])


def continuation_score(candidate: Tensor, previous: Tensor, overlap: int) -> float:
    """Position + velocity-direction mismatch between a candidate window and the motion it continues.

    ``previous``: the already generated frames the candidate overlaps (overlap, F). Positions compare the
    overlap; velocities compare the mean xy velocity over the overlap with the candidate's right after it.
    """
    position = (candidate[:overlap] - previous).abs().sum()
    span = min(overlap + 5, candidate.shape[0])
    before = _mean_xy_velocity(previous)
    after = _mean_xy_velocity(candidate[overlap - 1:span])
    cosine = (before * after).sum(-1) / (before.norm(dim=-1) * after.norm(dim=-1)).clamp(min=1e-12)
    return float(position + torch.arccos(cosine.clamp(-1.0, 1.0)).mean())


def _mean_xy_velocity(frames: Tensor) -> Tensor:
    if frames.shape[0] < 2:
        return torch.zeros(frames.shape[-1] // 3, 2, device=frames.device)
    velocity = (frames[1:] - frames[:-1]).mean(dim=0)
    return velocity.reshape(-1, 3)[:, :2]


def fade_residual(generated: Tensor, known: Tensor) -> Tensor:
    """Frames after the overlap, shifted so the first one continues the known motion.

    ``known`` (K, F) are the output frames the window overlaps; ``generated`` (L, F) the new window. The first
    new frame is aligned with the known last frame plus its recent mean velocity; that offset fades linearly to
    0 over the frames before the next window's overlap (L − 2K). A well-trained model leaves a tiny offset.
    """
    overlap, length = known.shape[0], generated.shape[0]
    recent = known[-min(overlap, 4):]
    velocity = (recent[-1] - recent[0]) / max(recent.shape[0] - 1, 1)
    residual = known[-1] + velocity - generated[overlap]
    fade = max(1, length - 2 * overlap)
    distance = torch.arange(0, length - overlap, dtype=generated.dtype, device=generated.device)
    weights = (1 - distance / fade).clamp(min=0)
    return generated[overlap:] + weights[:, None] * residual


def _validate(model: GestureDecoder, features: Tensor, reference: Tensor, window: int, overlap: int,
              steps: int, best_of: int, smooth: str) -> None:
    config = model.config
    if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[1] != config.cond_feature_dim:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise InputError("audio_features", f"expected a (frames, {config.cond_feature_dim}) tensor, got {shape}.",
                         "Compute Stage-I features with the MMGT audio-feature node (WavLM ‖ 35 EDGE features).")
    if features.shape[0] == 0:
        raise InputError("audio_features", "the audio has 0 frames.", "Use audio of at least 1/25 s.")
    if not all_finite(features):
        raise InputError("audio_features", "contains NaN or infinite values.", "Check the audio and its features.")
    if reference.numel() != config.nfeats:
        raise InputError("reference_pose", f"expected {config.nfeats} values (134 keypoints × 3), "
                         f"got shape {tuple(reference.shape)}.", "Pass one normalised pose from the pose node.")
    if not all_finite(reference):
        raise InputError("reference_pose", "contains NaN or infinite values.",
                         "Detect the reference pose again or fill missing keypoints before generation.")
    if window != config.seq_len:
        raise InputError("window", f"the model works on {config.seq_len}-frame windows, got {window}.",
                         f"Use window={config.seq_len}.")
    if not 1 <= overlap <= window // 2:
        raise InputError("overlap", f"must be between 1 and {window // 2}, got {overlap}.", "Use e.g. 8.")
    if steps < 1 or best_of < 1:
        raise InputError("steps/best_of", f"must be ≥ 1, got steps={steps}, best_of={best_of}.")
    if smooth not in SMOOTH_CHOICES:
        raise InputError("smooth", f"unknown smoothing '{smooth}'.", f"Use one of {SMOOTH_CHOICES}.")


def _compute_context(model: GestureDecoder, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """Autocast when the requested dtype differs from the model's weights; inference mode always."""
    device = model.input_projection.weight.device
    weights_dtype = model.input_projection.weight.dtype
    if device.type == "cpu" and torch.float16 in (dtype, weights_dtype):
        raise InputError("dtype", "float16 is not supported on CPU (slow and inaccurate there).",
                         "Use bf16 or fp32 on CPU.")
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if dtype is not None and dtype != weights_dtype:
        stack.enter_context(torch.autocast(device_type=device.type, dtype=dtype))
    return stack


def generate_pose_sequence(
    model: GestureDecoder,
    audio_features: Tensor,
    reference_pose_feature: Tensor,
    generator: Optional[torch.Generator],
    *,
    steps: int = 50,
    guidance: float = GUIDANCE_WEIGHT,
    window: int = SMGA_WINDOW_FRAMES,
    overlap: int = DEFAULT_OVERLAP,
    best_of: int = 1,
    smooth: str = "none",
    progress: OptionalProgress = None,
    check_cancel: OptionalCancel = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """Generate (T, 402) normalised poses for T frames of Stage-I audio features (25 fps).

    reference_pose_feature: (402,) normalised (legs already masked as the official script does). The result is
    deterministic for a given generator state; ``progress(step, total)`` counts diffusion steps over all windows.
    Memory: the (T, 402) float32 output is the one full-length tensor made (windows are written into it, features
    are converted to float32 a window at a time, the smoothing works in place).
    """
    reference = reference_pose_feature.reshape(-1) if isinstance(reference_pose_feature, Tensor) else None
    if reference is None:
        raise InputError("reference_pose", "expected a tensor of 402 values.")
    _validate(model, audio_features, reference, window, overlap, steps, best_of, smooth)
    device = model.input_projection.weight.device
    total = audio_features.shape[0]
    plans = plan_windows(total, window, overlap)
    output = torch.empty(total, reference.numel())
    output[0] = reference.float().cpu()
    schedule = cosine_schedule().to(device)
    total_steps = total_diffusion_steps(total, steps, window, overlap)
    with _compute_context(model, dtype):
        for number, plan in enumerate(plans):
            def window_progress(step: int, _: int, done: int = number * steps) -> None:
                if progress is not None:
                    progress(done + step, total_steps)

            generated = _sample_window(model, audio_features, output, plan, generator, steps, guidance, window,
                                       best_of, schedule, window_progress, check_cancel, device)
            _write_window(output, generated, plan)
    if smooth == "official":
        official_spline_smoothing_(output.numpy())
    return output


def _sample_window(model: GestureDecoder, features: Tensor, output: Tensor, plan: WindowPlan,
                   generator: Optional[torch.Generator], steps: int, guidance: float, window: int, best_of: int,
                   schedule, progress, check_cancel: OptionalCancel, device: torch.device) -> Tensor:
    """Sample one window (window, F) on CPU float32; continuation windows inpaint their overlap."""
    cond = window_features(features, plan.audio_start, window).float().unsqueeze(0).to(device)
    if plan.overlap == 0:
        batch, known = 1, None
        cond_frame = output[0:1].to(device)
    else:
        batch = best_of
        previous = output[plan.first_output:plan.first_output + plan.overlap]
        cond_frame = previous[0:1].to(device)
        values = torch.zeros(batch, window, output.shape[1], device=device)
        values[:, :plan.overlap] = previous.to(device)
        mask = torch.zeros(window, dtype=torch.bool, device=device)
        mask[:plan.overlap] = True
        known = KnownFrames(values, mask)
    samples = ddim_sample(model, cond_frame, cond, generator, batch=batch, steps=steps, guidance_weight=guidance,
                          schedule=schedule, known=known, progress=progress, check_cancel=check_cancel).float().cpu()
    if batch == 1:
        return samples[0]
    scores = [continuation_score(sample, previous, plan.overlap) for sample in samples]
    return samples[int(np.argmin(scores))]


def _write_window(output: Tensor, generated: Tensor, plan: WindowPlan) -> None:
    """Place generated frame k at output frame audio_start+1+k (trimmed to T); overlap frames stay as written."""
    first = plan.first_output
    if plan.overlap:
        generated = fade_residual(generated, output[first:first + plan.overlap])
        first += plan.overlap
    count = min(generated.shape[0], output.shape[0] - first)
    if count > 0:
        output[first:first + count] = generated[:count]
