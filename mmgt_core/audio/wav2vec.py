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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmgt_core.errors import InputError

WAV2VEC_SAMPLE_RATE = 16000
VIDEO_FPS = 25.0
NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
SAMPLES_PER_CNN_FRAME = 320  # product of the wav2vec2 CNN strides (5*2*2*2*2*2*2)

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
    return (waveform - waveform.mean()) / np.sqrt(waveform.var() + NORMALIZE_EPS)


def frame_count(num_samples: int, sample_rate: int = WAV2VEC_SAMPLE_RATE, fps: float = VIDEO_FPS) -> int:
    """Number of video frames the official code derives from a clip: ``ceil(samples / sr * fps)``."""
    return math.ceil(num_samples / sample_rate * fps)


def prepare_waveform(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    separator: Optional[VocalSeparator] = None,
) -> np.ndarray:
    """Mono float waveform at any rate -> optional vocal separation -> 16 kHz float32 numpy array."""
    wave = torch.as_tensor(waveform, dtype=torch.float32)
    if wave.ndim == 2:  # (channels, samples): average to mono
        wave = wave.mean(dim=0)
    if wave.ndim != 1:
        raise InputError("audio", f"expected a mono waveform (samples,) or (channels, samples), got "
                         f"{tuple(wave.shape)}", "pass a 1-D waveform.")
    if separator is not None:
        wave = torch.as_tensor(separator(wave, sample_rate), dtype=torch.float32).reshape(-1)
    array = wave.numpy()
    if sample_rate != WAV2VEC_SAMPLE_RATE:
        import librosa  # same resampler (soxr_hq) as the official librosa.load(sr=16000)

        array = librosa.resample(array, orig_sr=sample_rate, target_sr=WAV2VEC_SAMPLE_RATE, res_type="soxr_hq")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.size < 400 or not np.isfinite(array).all():
        raise InputError("audio", f"the clip is too short or not finite ({array.size} samples at 16 kHz)",
                         "give at least 0.04 s of finite audio.")
    if float(np.abs(array).max()) == 0.0:
        raise InputError("audio", "the clip is silent (all samples are zero)", "give a recording with speech in it.")
    return array


def wav2vec2_features(
    model: nn.Module,
    waveform: torch.Tensor | np.ndarray,
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
    chunking = chunking or Wav2VecChunking()
    wave = normalize_waveform(prepare_waveform(waveform, sample_rate, separator))
    seq_len = frame_count(wave.size, WAV2VEC_SAMPLE_RATE, fps)
    audio_frames = seq_len
    if clip_length > 0 and seq_len % clip_length != 0:
        pad_frames = clip_length - seq_len % clip_length
        samples_per_frame = int(WAV2VEC_SAMPLE_RATE // fps)
        wave = np.concatenate([wave, np.zeros(pad_frames * samples_per_frame, dtype=np.float32)])
        seq_len += pad_frames
    device = next(model.parameters()).device
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the HF encoder draws LayerDrop dice from the global RNG
        cnn = cnn_features(model, torch.from_numpy(wave).to(device), chunking.cnn_chunk_frames)  # (1, T50, C)
        cnn = F.interpolate(cnn.transpose(1, 2), size=seq_len, mode="linear", align_corners=True).transpose(1, 2)
        hidden, _ = model.feature_projection(cnn)
        layers = encode_all_layers(model, hidden, chunking)
    return layers.float().cpu(), audio_frames


def cnn_features(model: nn.Module, wave: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """wav2vec2 CNN features ``(1, T50, C)`` of a 1-D normalised waveform, computed in exact chunks."""
    encoder = model.feature_extractor
    total = _cnn_output_length(model, wave.numel())
    if total <= 0:
        raise InputError("audio", "the clip is shorter than one wav2vec2 frame", "give at least 0.03 s of audio.")
    if total <= chunk_frames:
        return encoder(wave[None]).transpose(1, 2)
    first = encoder.conv_layers[0]
    stats = _first_layer_stats(first, wave, chunk_frames) if isinstance(_norm_of(first), nn.GroupNorm) else None
    receptive = _receptive_field(model)
    pieces = []
    for start in range(0, total, chunk_frames):
        stop = min(start + chunk_frames, total)
        segment = wave[start * SAMPLES_PER_CNN_FRAME: (stop - 1) * SAMPLES_PER_CNN_FRAME + receptive]
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


def _norm_of(layer: nn.Module) -> Optional[nn.Module]:
    return getattr(layer, "layer_norm", None)


def _conv_layers_geometry(model: nn.Module) -> list[tuple[int, int]]:
    layers = model.feature_extractor.conv_layers
    return [(int(layer.conv.kernel_size[0]), int(layer.conv.stride[0])) for layer in layers]


def _cnn_output_length(model: nn.Module, samples: int) -> int:
    length = samples
    for kernel, stride in _conv_layers_geometry(model):
        length = (length - kernel) // stride + 1
    return length


def _receptive_field(model: nn.Module) -> int:
    """Input samples one CNN output frame depends on (400 for the standard wav2vec2 CNN)."""
    field, jump = 1, 1
    for kernel, stride in _conv_layers_geometry(model):
        field += (kernel - 1) * jump
        jump *= stride
    return field


def _first_layer_stats(first: nn.Module, wave: torch.Tensor, chunk_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance of the first conv's output over the whole clip (GroupNorm, 1 channel/group)."""
    kernel, stride = int(first.conv.kernel_size[0]), int(first.conv.stride[0])
    out_len = (wave.numel() - kernel) // stride + 1
    step = chunk_frames * SAMPLES_PER_CNN_FRAME // stride  # first-layer frames per chunk
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
