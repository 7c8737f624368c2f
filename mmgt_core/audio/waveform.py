"""The audio front end used by Stage I, Stage II, training data and the CLI: layouts, mono, resampling,
validation, the silence policy and the frame counts, each once.

* Layouts (torch or numpy): ``(samples,)``, ``(channels, samples)``, ComfyUI's ``(1, channels, samples)``; int16/int32/
  uint8 PCM is scaled to [-1, 1). Channels are averaged to mono (what ``librosa.load(mono=True)`` does).
* :func:`resample`: soxr at ``soxr_hq`` then librosa's length fix, sample-for-sample what ``librosa.load(path,
  sr=target)`` returns; the official MMGT code loads every waveform that way, which is why the features match it.
* :func:`validate_clip`: a positive rate, finite samples, at least one video frame (40 ms).
* Silence is accepted by both stages: an all-zero clip still gets every feature (WavLM and wav2vec2 see zeros after
  their whole-clip normalisation, the EDGE onset/beat columns are zero), so gestures and lips follow no speech;
  :mod:`mmgt_core.audio.notices` tells the user. :func:`is_silent` detects it.
* Two frame-count rules, on purpose: :func:`frame_count`, the official ``ceil``, gives the rows of the Stage-I and
  Stage-II features (the frames generated); :func:`video_frame_count`, round-to-nearest, gives the frames of the
  written video (:mod:`mmgt_core.timeline`), never more. :func:`conv_frames` counts the speech encoders' CNN frames.
"""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import torch

from mmgt_core.constants import ENCODER_SAMPLE_RATE, VIDEO_FPS
from mmgt_core.errors import InputError

SOXR_QUALITY = "soxr_hq"
"""librosa.load's default ``res_type``; the official features were computed through it."""

WaveformLike = Union[torch.Tensor, np.ndarray]

_INT_FULL_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}
_UINT8_MIDPOINT = 128.0


def frame_count(num_samples: int, sample_rate: float = ENCODER_SAMPLE_RATE, fps: float = VIDEO_FPS) -> int:
    """Feature rows (frames generated) for a clip, with the official float expression ``ceil(samples / sr * fps)``.

    The float expression (not exact integer arithmetic) is kept on purpose: at a few lengths it rounds up one more
    frame (e.g. 4480 samples at 16 kHz gives 8, not 7), and the official Stage-I and Stage-II code both use it.
    """
    return math.ceil(num_samples / sample_rate * fps)


def video_frame_count(num_samples: int, sample_rate: float, fps: float) -> int:
    """Frames of the written video for a clip: round-to-nearest of ``fps × duration`` (halves up, at least 1).

    At the same fps it is :func:`frame_count` or one less: the generated frames always cover the written video.
    """
    if fps <= 0 or not math.isfinite(fps):
        raise InputError("fps", f"the frame rate must be a positive number (got {fps}).")
    return max(1, _round_half_up(num_samples / sample_rate * fps))


def audio_sample_count(frames: int, fps: float, sample_rate: float) -> int:
    """Audio samples that last exactly as long as ``frames`` at ``fps`` (round-to-nearest)."""
    return _round_half_up(frames / fps * sample_rate)


def conv_geometry(config: Any) -> tuple[int, int]:
    """(receptive field, total stride) in samples of a speech encoder's CNN (400, 320 for WavLM and wav2vec2).

    ``config`` is the transformers config (``conv_kernel``, ``conv_stride``) of WavLM or wav2vec2.
    """
    field, stride = 1, 1
    for kernel, step in zip(config.conv_kernel, config.conv_stride, strict=True):
        field += (kernel - 1) * stride
        stride *= step
    return field, stride


def conv_frames(num_samples: int, config: Any) -> int:
    """Frames (50 Hz) a speech encoder's CNN yields for ``num_samples`` (0 when the clip is too short)."""
    length = num_samples
    for kernel, step in zip(config.conv_kernel, config.conv_stride, strict=True):
        length = (length - kernel) // step + 1
        if length <= 0:
            return 0
    return length


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5 + 1e-9)


def duration_seconds(num_samples: int, sample_rate: float) -> float:
    """Length of a clip in seconds."""
    return num_samples / float(sample_rate)


def is_silent(wave: WaveformLike) -> bool:
    """True when every sample is exactly zero."""
    return not bool(np.any(_to_numpy(wave)))


def to_mono(waveform: WaveformLike) -> torch.Tensor:
    """Average the channels of one clip to a 1-D float32 CPU tensor (integer PCM is scaled to [-1, 1))."""
    array = _to_numpy(waveform)
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise InputError(
                "audio", f"got a batch of {array.shape[0]} clips; only one clip is supported.",
                "pass a single clip (batch size 1), e.g. split the batch first.",
            )
        array = array[0]
    if array.ndim == 2:
        if array.shape[0] > array.shape[1]:
            raise InputError(
                "audio", f"shape {tuple(array.shape)} looks like (samples, channels); channels-first is expected.",
                "transpose it to (channels, samples).",
            )
        # float32 mean over channels, as librosa.to_mono does
        array = np.mean(array, axis=0) if array.shape[0] > 1 else array[0]
    if array.ndim != 1:
        raise InputError(
            "audio", f"expected (samples,), (channels, samples) or (1, channels, samples); got {tuple(array.shape)}.",
            "pass one mono or multi-channel clip.",
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def resample(wave: WaveformLike, sr_in: float, sr_out: float) -> torch.Tensor:
    """Resample a 1-D waveform exactly like ``librosa.resample(res_type="soxr_hq")`` (soxr, then length fix)."""
    import soxr  # lazy: only needed when the rate changes

    array = np.ascontiguousarray(_to_numpy(wave), dtype=np.float32)
    if array.ndim != 1:
        raise InputError("audio", f"resample expects a 1-D waveform, got shape {tuple(array.shape)}.",
                         "downmix with to_mono() first.")
    if sr_in == sr_out:
        return torch.from_numpy(array)  # no copy (10 min at 16 kHz is 38 MB); callers never write into it
    # librosa's output length: ceil(n * out/in), then zero-pad or trim soxr's result to it
    target_len = int(np.ceil(array.shape[0] * (float(sr_out) / sr_in)))
    out = soxr.resample(array, sr_in, sr_out, quality=SOXR_QUALITY)
    if out.shape[0] > target_len:
        out = out[:target_len]
    elif out.shape[0] < target_len:
        out = np.pad(out, (0, target_len - out.shape[0]))
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def validate_clip(waveform: WaveformLike, sample_rate: float, fps: float = VIDEO_FPS) -> None:
    """Raise InputError for a bad rate, non-finite samples, or a clip shorter than one video frame."""
    if not sample_rate or not math.isfinite(float(sample_rate)) or float(sample_rate) <= 0:
        raise InputError("sample_rate", f"must be a positive number of samples per second, got {sample_rate!r}.",
                         "pass the rate the waveform was recorded at (e.g. 16000 or 44100).")
    array = _to_numpy(waveform)
    if array.size == 0:
        raise InputError("audio", "the clip is empty (0 samples).", "connect a recording with speech in it.")
    if array.dtype.kind == "f" and not all_finite(array):
        raise InputError("audio", "the waveform contains NaN or infinite samples.",
                         "re-export or re-decode the audio; check any node that processed it before.")
    num_samples = array.shape[-1]
    if num_samples < float(sample_rate) / fps:
        raise InputError(
            "audio", f"the clip is {duration_seconds(num_samples, sample_rate) * 1000:.1f} ms long, shorter than "
            f"one video frame ({1000 / fps:.0f} ms).", "use a longer recording.",
        )


def all_finite(array: np.ndarray, block: int = 1 << 20) -> bool:
    """True when no sample is NaN or infinite; checked a block at a time (no clip-sized mask)."""
    flat = array.reshape(-1)
    return all(np.isfinite(flat[start:start + block]).all() for start in range(0, flat.size, block))


def prepare_audio(waveform: WaveformLike, sample_rate: float, target_rate: float) -> tuple[torch.Tensor, float]:
    """Validate one clip, downmix it to mono and resample it: returns ``(mono float32 (T,), target_rate)``."""
    mono = to_mono(waveform)
    validate_clip(mono, sample_rate)
    return resample(mono, sample_rate, target_rate), target_rate


def _to_numpy(waveform: WaveformLike) -> np.ndarray:
    """CPU numpy view of a tensor/array; integer PCM becomes float32 in [-1, 1)."""
    if isinstance(waveform, torch.Tensor):
        tensor = waveform.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        array = tensor.numpy()
    else:
        array = np.asarray(waveform)
    if array.dtype.kind == "f":
        return array
    if array.dtype in _INT_FULL_SCALE:
        scaled = array.astype(np.float32)
        scaled /= np.float32(_INT_FULL_SCALE[array.dtype])  # in place: one clip-sized copy, not two
        return scaled
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32)
        scaled -= _UINT8_MIDPOINT
        scaled /= _UINT8_MIDPOINT
        return scaled
    raise InputError("audio", f"unsupported sample type {array.dtype}.", "pass float, int16, int32 or uint8 samples.")
