"""Frame-rate and length changes that keep lip sync: the audio is the clock, frames are resampled onto it."""

from __future__ import annotations

import math

import torch

from .errors import InputError
from .keypoints import PoseSequence


def resampled_frame_count(frames: int, fps_in: float, fps_out: float) -> int:
    """Frames needed at ``fps_out`` to cover the same duration as ``frames`` at ``fps_in`` (rounded)."""
    return max(1, round(frames * fps_out / fps_in))


def source_indices(frames: int, fps_in: float, fps_out: float, count: int | None = None) -> torch.Tensor:
    """For each output frame, the input frame shown at that moment (nearest earlier-or-equal in time)."""
    if fps_in <= 0 or fps_out <= 0:
        raise InputError("fps", f"frame rates must be positive (got {fps_in} → {fps_out}).")
    count = resampled_frame_count(frames, fps_in, fps_out) if count is None else count
    times = torch.arange(count, dtype=torch.float64) / fps_out
    return torch.clamp(torch.floor(times * fps_in + 1e-6).long(), 0, frames - 1)


def resample_frames(frames: torch.Tensor, fps_in: float, fps_out: float, count: int | None = None) -> torch.Tensor:
    """Nearest-in-time resampling of a frame batch (first axis) to another frame rate (and optional length)."""
    if frames.shape[0] == 0:
        raise InputError("frames", "the batch is empty.")
    return frames[source_indices(frames.shape[0], fps_in, fps_out, count)]


def resample_keypoints(sequence: PoseSequence, fps_out: float, count: int | None = None) -> PoseSequence:
    """Linear interpolation of keypoints onto an ``fps_out`` timeline (scores take the lower neighbour's)."""
    frames = sequence.num_frames
    count = resampled_frame_count(frames, sequence.fps, fps_out) if count is None else count
    position = torch.arange(count, dtype=torch.float64) / fps_out * sequence.fps
    lower = torch.clamp(torch.floor(position).long(), 0, frames - 1)
    upper = torch.clamp(lower + 1, 0, frames - 1)
    weight = (position - lower).clamp(0, 1).float()[:, None, None]
    kp = sequence.keypoints.float()
    out = kp[lower].clone()
    out[..., :2] = (1 - weight) * kp[lower, :, :2] + weight * kp[upper, :, :2]
    out[..., 2] = torch.minimum(kp[lower, :, 2], kp[upper, :, 2])
    return PoseSequence(out, sequence.width, sequence.height, fps_out)


def match_length(frames: torch.Tensor, count: int) -> tuple[torch.Tensor, str]:
    """Trim, or pad by repeating the last frame, to exactly ``count`` frames; says what it did."""
    have = frames.shape[0]
    if have == count:
        return frames, ""
    if have > count:
        return frames[:count], f"trimmed {have - count} frame(s) to match {count}"
    padding = frames[-1:].expand(count - have, *frames.shape[1:])
    return torch.cat([frames, padding]), f"padded {count - have} frame(s) (last frame repeated) to match {count}"


def audio_frames(num_samples: int, sample_rate: int, fps: float = 25.0) -> int:
    """Video frames that cover an audio clip at ``fps`` (the official ``ceil(samples / sr · fps)``)."""
    return math.ceil(num_samples / sample_rate * fps)


def trim_audio(waveform: torch.Tensor, sample_rate: int, frames: int, fps: float) -> torch.Tensor:
    """Cut or zero-pad a (…, samples) waveform to exactly the duration of ``frames`` at ``fps``."""
    samples = round(frames / fps * sample_rate)
    have = waveform.shape[-1]
    if have >= samples:
        return waveform[..., :samples]
    return torch.nn.functional.pad(waveform, (0, samples - have))
