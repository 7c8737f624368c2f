"""Frame-rate and length changes that keep lip sync: the audio is the clock, frames are resampled onto it.

The one length rule of every output (CLI and nodes): a clip of ``d`` seconds becomes
``video_frame_count(d)`` = **round-to-nearest** of ``fps × d`` frames (halves round up, at least 1), and the
audio written beside it is cut or zero-padded to exactly that video's duration, ``audio_sample_count(frames)``
= round-to-nearest of ``frames / fps × rate`` samples. So video and audio durations differ by at most half a
frame before the cut, and by less than one audio sample after it. Both counts live in
:mod:`mmgt_core.audio.waveform`, beside the official ``ceil`` rule (``frame_count``) that sets how many frames are
*generated*; the written count never exceeds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch

from .audio.waveform import audio_sample_count, video_frame_count
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


Rows = TypeVar("Rows", torch.Tensor, np.ndarray)


def fit_length(rows: Rows, count: int) -> Rows:
    """Exactly ``count`` rows (first axis): the first ``count``, or all of them and the last repeated."""
    if rows.shape[0] >= count:
        return rows[:count]
    return rows[np.minimum(np.arange(count), rows.shape[0] - 1)]


def match_length(frames: torch.Tensor, count: int) -> tuple[torch.Tensor, str]:
    """Trim, or pad by repeating the last frame, to exactly ``count`` frames; says what it did."""
    have = frames.shape[0]
    if have == count:
        return frames, ""
    if have > count:
        return fit_length(frames, count), f"trimmed {have - count} frame(s) to match {count}"
    return fit_length(frames, count), f"padded {count - have} frame(s) (last frame repeated) to match {count}"


def output_frame_count(generated: int, audio_samples: int | None, sample_rate: int, fps: float) -> int:
    """Frames to write: the length rule's count for the driving audio, capped by what was generated.

    Without audio (pose-driven), every generated frame is written.
    """
    if audio_samples is None:
        return generated
    return min(generated, video_frame_count(audio_samples, sample_rate, fps))


def trim_audio(waveform: torch.Tensor, sample_rate: int, frames: int, fps: float) -> torch.Tensor:
    """Cut or zero-pad a (…, samples) waveform to exactly the duration of ``frames`` at ``fps``."""
    samples = audio_sample_count(frames, fps, sample_rate)
    have = waveform.shape[-1]
    if have >= samples:
        return waveform[..., :samples]
    return torch.nn.functional.pad(waveform, (0, samples - have))


def resample_stream(chunks: Iterable[torch.Tensor], total: int, fps_in: float, fps_out: float, count: int
                    ) -> Iterator[torch.Tensor]:
    """:func:`resample_frames` for frames that arrive in chunks (first axis): yields the ``count`` output frames
    at ``fps_out`` as their source frames arrive, holding one chunk at a time."""
    wanted = source_indices(total, fps_in, fps_out, count)
    start = 0
    position = 0
    for chunk in chunks:
        stop = start + chunk.shape[0]
        end = position
        while end < count and int(wanted[end]) < stop:
            end += 1
        if end > position:
            yield chunk[wanted[position:end] - start]
        position, start = end, stop
        if position >= count:
            return
