"""Stage-II audio features: wav2vec2 hidden states of every transformer layer at the video frame rate.

Reproduces the official Hallo-style ``AudioProcessor`` (spec 3.9) without the vocal separator:

1. waveform at 16 kHz, normalised to zero mean / unit variance over the whole clip (the wav2vec2 feature
   extractor, ``(x - mean) / sqrt(var + 1e-7)``);
2. ``seq_len = ceil(samples / 16000 * fps)``, optionally padded up to a multiple of ``clip_length`` frames
   (zeros appended to the *normalised* waveform, 640 samples per frame);
3. CNN features (50 Hz) linearly interpolated (``align_corners=True``) to ``seq_len`` **before** the feature
   projection and the transformer;
4. the outputs of all transformer layers stacked -> ``(seq_len, n_layers, hidden)``.

Long audio keeps memory bounded: the CNN always runs in exact chunks (the first layer's per-channel GroupNorm
statistics are gathered over the whole clip in a first pass), and the transformer runs on the whole sequence up
to ``max_whole_frames`` (60 s by default, as the official does for any length) and in overlapping windows with a
linear cross-fade beyond that. Only that last part is an approximation of the official whole-clip run.

The waveform comes from the shared front end (:mod:`mmgt_core.audio.waveform`): mono, validated, resampled as
``librosa.load`` does; a silent clip is accepted (its features are those of zeros).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmgt_core.audio.waveform import (
    WaveformLike,
    conv_frames,
    conv_geometry,
    frame_count,
    prepare_audio,
    to_mono,
)
from mmgt_core.constants import ENCODER_SAMPLE_RATE, VIDEO_FPS
from mmgt_core.errors import InputError

NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm

VocalSeparator = Callable[[torch.Tensor, int], torch.Tensor]
"""Optional user hook: (mono waveform, sample_rate) -> separated vocals at the same sample rate."""


@dataclass
class Wav2VecChunking:
    """Memory bounds for long audio.

    cnn_chunk_frames: CNN output frames (50 Hz) per chunk; the chunked CNN is exact.
    max_whole_frames: longest sequence (video frames) the transformer sees at once, 1500 = 60 s at 25 fps.
    window_overlap_frames: frames shared by neighbouring transformer windows (cross-faded linearly).
    """

    cnn_chunk_frames: int = 1000
    max_whole_frames: int = 1500
    window_overlap_frames: int = 250


def load_wav2vec2(model_dir: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load a local Hugging Face wav2vec2 folder (e.g. ``wav2vec2-base-960h``) as ``Wav2Vec2Model`` in eval mode.

    Works for base-model and ``Wav2Vec2ForCTC`` checkpoints (the ``wav2vec2.`` prefix and ``lm_head`` are
    handled by transformers) and for the old ``weight_g``/``weight_v`` positional-conv layout.
    """
    from transformers import Wav2Vec2Model

    from mmgt_core.pretrained import load_pretrained

    model = load_pretrained(Wav2Vec2Model, model_dir, "wav2vec2 model", kind="wav2vec2",
                            fix="Re-download 'facebook/wav2vec2-base-960h'.",
                            may_lack=lambda key: "masked_spec_embed" in key)  # SpecAugment, training only
    return model.to(device).eval()


def normalize_waveform(waveform: np.ndarray) -> np.ndarray:
    """Zero mean / unit variance over the whole clip, in float32 like the wav2vec2 feature extractor."""
    waveform = np.asarray(waveform, dtype=np.float32)
    scale = np.sqrt(waveform.var() + NORMALIZE_EPS)
    normalized = waveform - waveform.mean()
    normalized /= scale  # in place: one waveform-sized copy, not two (10 min at 16 kHz: 38 MB each)
    return normalized


def prepare_waveform(waveform: WaveformLike, sample_rate: int, separator: Optional[VocalSeparator] = None
                     ) -> np.ndarray:
    """One clip at any rate -> mono -> optional vocal separation -> validated 16 kHz float32 numpy array."""
    mono = to_mono(waveform)
    if separator is not None:
        mono = to_mono(separator(mono, sample_rate))
    wave16k, _ = prepare_audio(mono, sample_rate, ENCODER_SAMPLE_RATE)
    return wave16k.numpy()


def pad_to_whole_clips(wave: np.ndarray, frames: int, clip_length: int, fps: float = VIDEO_FPS
                       ) -> tuple[np.ndarray, int]:
    """The official padding: zeros appended to the normalised 16 kHz waveform up to a multiple of ``clip_length``
    frames (``16000 // fps`` samples a frame); returns ``(waveform, padded frame count)``. ``clip_length <= 0``: as is.
    """
    if clip_length <= 0 or frames % clip_length == 0:
        return wave, frames
    pad_frames = clip_length - frames % clip_length
    padding = np.zeros(pad_frames * int(ENCODER_SAMPLE_RATE // fps), dtype=np.float32)
    return np.concatenate([wave, padding]), frames + pad_frames


def wav2vec2_features(
    model: nn.Module,
    waveform: WaveformLike,
    sample_rate: int,
    clip_length: int = -1,
    fps: float = VIDEO_FPS,
    separator: Optional[VocalSeparator] = None,
    chunking: Optional[Wav2VecChunking] = None,
) -> tuple[torch.Tensor, int]:
    """Official ``AudioProcessor.preprocess`` features: ``((seq_len, n_layers, hidden) float32 CPU, audio_frames)``.

    ``audio_frames`` is the unpadded frame count; ``seq_len`` is rounded up to a multiple of ``clip_length`` when
    ``clip_length > 0`` (the official pads with zeros after normalisation).
    """
    wave = normalize_waveform(prepare_waveform(waveform, sample_rate, separator))
    audio_frames = frame_count(wave.size, ENCODER_SAMPLE_RATE, fps)
    wave, seq_len = pad_to_whole_clips(wave, audio_frames, clip_length, fps)
    return encode_frames(model, wave, seq_len, chunking or Wav2VecChunking()), audio_frames


def encode_frames(model: nn.Module, wave: np.ndarray, seq_len: int, chunking: Wav2VecChunking) -> torch.Tensor:
    """Steps 3-4 of the module docstring on a normalised 16 kHz waveform: ``(seq_len, n_layers, hidden)`` on CPU."""
    device = next(model.parameters()).device
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the HF encoder draws LayerDrop dice from the global RNG
        cnn = cnn_features(model, torch.from_numpy(wave).to(device), chunking.cnn_chunk_frames)  # (1, T50, C)
        cnn = F.interpolate(cnn.transpose(1, 2), size=seq_len, mode="linear", align_corners=True).transpose(1, 2)
        hidden, _ = model.feature_projection(cnn)
        return encode_all_layers(model, hidden, chunking).float().cpu()


def cnn_features(model: nn.Module, wave: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """wav2vec2 CNN features ``(1, T50, C)`` of a 1-D normalised waveform, computed in exact chunks."""
    encoder = model.feature_extractor
    total = conv_frames(wave.numel(), model.config)
    if total <= 0:
        raise InputError("audio", "the clip is shorter than one wav2vec2 frame", "give at least 0.03 s of audio.")
    if total <= chunk_frames:
        return encoder(wave[None]).transpose(1, 2)
    receptive, hop = conv_geometry(model.config)
    first = encoder.conv_layers[0]
    group_norm = isinstance(getattr(first, "layer_norm", None), nn.GroupNorm)  # normalises over time: whole-clip stats
    stats = _first_layer_stats(first, wave, chunk_frames * hop) if group_norm else None
    pieces = []
    for start in range(0, total, chunk_frames):
        stop = min(start + chunk_frames, total)
        segment = wave[start * hop: (stop - 1) * hop + receptive]
        pieces.append(_run_cnn(encoder, segment, stats).transpose(1, 2))
    return torch.cat(pieces, dim=1)


def encode_all_layers(model: nn.Module, hidden: torch.Tensor, chunking: Wav2VecChunking) -> torch.Tensor:
    """Transformer outputs of every layer, ``(T, n_layers, hidden)``; windowed beyond ``max_whole_frames``."""
    total = hidden.shape[1]
    if total <= chunking.max_whole_frames:
        return _encode_window(model, hidden)
    size, overlap = chunking.max_whole_frames, min(chunking.window_overlap_frames, chunking.max_whole_frames // 2)
    output: Optional[torch.Tensor] = None
    weight = torch.zeros(total, 1, 1, dtype=hidden.dtype, device=hidden.device)
    for start in _window_starts(total, size, overlap):
        layers = _encode_window(model, hidden[:, start:start + size])
        if output is None:
            output = torch.zeros(total, *layers.shape[1:], dtype=layers.dtype, device=layers.device)
        ramp = _crossfade_ramp(layers.shape[0], overlap, first=start == 0, last=start + size >= total).to(hidden)
        output[start:start + size] += layers * ramp[:, None, None]
        weight[start:start + size] += ramp[:, None, None]
    return output / weight  # type: ignore[operator]  # at least one window ran


def audio_context_windows(features: torch.Tensor, margin: int = 2,
                          frames: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per frame, the features of frames i-margin..i+margin clamped to the clip: ``(T, 2*margin+1, ...)``.

    ``frames`` (1-D indices) limits the output to those frames, so a sampler can build one window at a time.
    """
    count = features.shape[0]
    centers = torch.arange(count) if frames is None else torch.as_tensor(frames, dtype=torch.long)
    offsets = torch.arange(-margin, margin + 1)
    index = (centers[:, None] + offsets[None, :]).clamp(0, count - 1)
    return features[index]


def _encode_window(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Every transformer layer's output (the official ``hidden_states[1:]``), stacked as (T, layers, hidden).

    Collected with forward hooks on the layers: transformers 5 no longer returns ``hidden_states`` from the bare
    encoder, and hooks give the same tensors on every version.
    """
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: object) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(keep) for layer in model.encoder.layers]
    try:
        model.encoder(hidden)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(captured, dim=2)[0]


def _window_starts(total: int, size: int, overlap: int) -> list[int]:
    """Window starts every ``size - overlap`` frames; the last window is aligned to the end (no wrap)."""
    step = size - overlap
    starts = list(range(0, max(total - size, 0) + 1, step))
    if starts[-1] + size < total:
        starts.append(total - size)
    return starts


def _crossfade_ramp(length: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    ramp = torch.ones(length)
    if overlap > 0:
        rise = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
        if not first:
            ramp[:overlap] = rise
        if not last:
            ramp[length - overlap:] = rise.flip(0)
    return ramp


def _first_layer_stats(first: nn.Module, wave: torch.Tensor, chunk_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance of the first conv's output over the whole clip (GroupNorm, 1 channel/group),
    gathered ``chunk_samples`` of input at a time."""
    kernel, stride = int(first.conv.kernel_size[0]), int(first.conv.stride[0])
    out_len = (wave.numel() - kernel) // stride + 1
    step = chunk_samples // stride  # first-layer frames per chunk
    total_sum = torch.zeros(first.conv.out_channels, dtype=torch.float64, device=wave.device)
    total_sq = torch.zeros_like(total_sum)
    for start in range(0, out_len, step):
        stop = min(start + step, out_len)
        conv = first.conv(wave[start * stride: (stop - 1) * stride + kernel][None, None])[0].double()
        total_sum += conv.sum(dim=1)
        total_sq += (conv * conv).sum(dim=1)
    mean = total_sum / out_len
    var = (total_sq / out_len - mean * mean).clamp_min(0.0)
    return mean, var


def _run_cnn(encoder: nn.Module, segment: torch.Tensor,
             stats: Optional[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The CNN on one waveform segment; with ``stats`` the first GroupNorm uses the whole-clip statistics."""
    hidden = segment[None, None]
    for index, layer in enumerate(encoder.conv_layers):
        if index == 0 and stats is not None:
            norm = layer.layer_norm
            conv = layer.conv(hidden)
            mean, var = (s.to(conv.dtype)[None, :, None] for s in stats)
            normed = (conv - mean) / torch.sqrt(var + norm.eps) * norm.weight[None, :, None] + norm.bias[None, :, None]
            hidden = layer.activation(normed)
        else:
            hidden = layer(hidden)
    return hidden
