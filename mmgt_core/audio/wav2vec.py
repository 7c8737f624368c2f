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

Besides the output and the caller's waveform, the clip-length tensors are the 50 Hz CNN features, their 25 fps
interpolation and the projected transformer input (for wav2vec2-base at most a sixth of the output at a time): the
waveform is normalised and padded span by span as the CNN reads it (:class:`NormalizedClip`), the CNN chunks and the
layer outputs are written straight into preallocated tensors, and the windows are cross-faded in a window-sized
accumulator whose finished frames go straight into the output.

The waveform comes from the shared front end (:mod:`mmgt_core.audio.waveform`): mono, validated, resampled as
``librosa.load`` does; a silent clip is accepted (its features are those of zeros).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class NormalizedClip:
    """A clip normalised like the wav2vec2 feature extractor and zero-padded to ``length`` samples, read span by span.

    Sample for sample what :func:`normalize_waveform` plus the official zero padding give, without a clip-sized copy.
    """

    samples: np.ndarray  # the float32 clip as given (not normalised)
    mean: np.floating
    scale: np.floating
    length: int  # >= samples.size; the samples past the clip are zeros (the official padding)

    @classmethod
    def of(cls, waveform: np.ndarray) -> NormalizedClip:
        """Zero mean / unit variance over the whole clip, in float32 like the wav2vec2 feature extractor."""
        samples = np.asarray(waveform, dtype=np.float32)
        scale = np.sqrt(samples.var() + NORMALIZE_EPS)  # numpy's one clip-sized temporary, freed at once
        return cls(samples, samples.mean(), scale, samples.shape[0])

    def span(self, start: int, stop: int) -> np.ndarray:
        """Normalised samples ``start:stop`` (zeros past the clip) as a new float32 array."""
        stop = min(stop, self.length)
        end = min(stop, self.samples.shape[0])
        if end <= start:
            return np.zeros(max(stop - start, 0), dtype=np.float32)
        normalized = self.samples[start:end] - self.mean
        normalized /= self.scale
        if end == stop:
            return normalized
        return np.concatenate([normalized, np.zeros(stop - end, dtype=np.float32)])

    def tensor(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """:meth:`span` as a 1-D tensor on ``device``."""
        return torch.from_numpy(self.span(start, stop)).to(device)


def normalize_waveform(waveform: np.ndarray) -> np.ndarray:
    """Zero mean / unit variance over the whole clip, in float32 like the wav2vec2 feature extractor."""
    clip = NormalizedClip.of(waveform)
    return clip.span(0, clip.length)


def prepare_waveform(waveform: WaveformLike, sample_rate: int, separator: Optional[VocalSeparator] = None
                     ) -> np.ndarray:
    """One clip at any rate -> mono -> optional vocal separation -> validated 16 kHz float32 numpy array."""
    mono = to_mono(waveform)
    if separator is not None:
        mono = to_mono(separator(mono, sample_rate))
    wave16k, _ = prepare_audio(mono, sample_rate, ENCODER_SAMPLE_RATE)
    return wave16k.numpy()


def pad_to_whole_clips(clip: NormalizedClip, frames: int, clip_length: int, fps: float = VIDEO_FPS
                       ) -> tuple[NormalizedClip, int]:
    """The official padding: zeros appended to the normalised 16 kHz waveform up to a multiple of ``clip_length``
    frames (``16000 // fps`` samples a frame); returns ``(clip, padded frame count)``. ``clip_length <= 0``: as is.
    """
    if clip_length <= 0 or frames % clip_length == 0:
        return clip, frames
    pad_frames = clip_length - frames % clip_length
    padded = replace(clip, length=clip.length + pad_frames * int(ENCODER_SAMPLE_RATE // fps))
    return padded, frames + pad_frames


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
    clip = NormalizedClip.of(prepare_waveform(waveform, sample_rate, separator))
    audio_frames = frame_count(clip.length, ENCODER_SAMPLE_RATE, fps)
    clip, seq_len = pad_to_whole_clips(clip, audio_frames, clip_length, fps)
    return encode_frames(model, clip, seq_len, chunking or Wav2VecChunking()), audio_frames


def encode_frames(model: nn.Module, clip: NormalizedClip, seq_len: int, chunking: Wav2VecChunking) -> torch.Tensor:
    """Steps 3-4 of the module docstring on a normalised 16 kHz clip: ``(seq_len, n_layers, hidden)`` float32 on CPU."""
    device = next(model.parameters()).device
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the HF encoder draws LayerDrop dice from the global RNG
        cnn = cnn_features(model, clip, chunking.cnn_chunk_frames, device).transpose(1, 2)  # (1, C, T50)
        resampled = F.interpolate(cnn, size=seq_len, mode="linear", align_corners=True)
        del cnn  # the 50 Hz features; the transformer input below is all that stays
        hidden = model.feature_projection(resampled.transpose(1, 2))[0]
        del resampled
        return encode_all_layers(model, hidden, chunking)


def cnn_features(model: nn.Module, clip: NormalizedClip, chunk_frames: int,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """wav2vec2 CNN features ``(1, T50, C)`` of a normalised clip, computed in exact chunks on ``device``.

    Each chunk is written into one preallocated tensor (stored as ``(1, C, T50)``; the result is its transposed view).
    """
    device = device if device is not None else next(model.parameters()).device
    encoder = model.feature_extractor
    total = conv_frames(clip.length, model.config)
    if total <= 0:
        raise InputError("audio", "the clip is shorter than one wav2vec2 frame", "give at least 0.03 s of audio.")
    if total <= chunk_frames:
        return encoder(clip.tensor(0, clip.length, device)[None]).transpose(1, 2)
    receptive, hop = conv_geometry(model.config)
    first = encoder.conv_layers[0]
    group_norm = isinstance(getattr(first, "layer_norm", None), nn.GroupNorm)  # normalises over time: whole-clip stats
    stats = _first_layer_stats(first, clip, chunk_frames * hop, device) if group_norm else None
    features: Optional[torch.Tensor] = None
    for start in range(0, total, chunk_frames):
        stop = min(start + chunk_frames, total)
        piece = _run_cnn(encoder, clip.tensor(start * hop, (stop - 1) * hop + receptive, device), stats)
        if features is None:
            features = piece.new_empty(1, piece.shape[1], total)
        features[:, :, start:stop] = piece
    return features.transpose(1, 2)  # type: ignore[union-attr]  # at least one chunk ran


def encode_all_layers(model: nn.Module, hidden: torch.Tensor, chunking: Wav2VecChunking) -> torch.Tensor:
    """Transformer outputs of every layer, ``(T, n_layers, hidden)`` float32 on CPU; windowed beyond
    ``max_whole_frames``.

    The whole sequence writes its layers straight into the output. Windows are cross-faded in a window-sized
    accumulator (the layers' dtype; the weights in ``hidden``'s), and the frames no later window reaches are divided
    by their weight and written into the output, so no clip-length sum, weight or quotient is ever held.
    """
    total = hidden.shape[1]
    output = torch.empty(total, len(model.encoder.layers), hidden.shape[2], dtype=torch.float32)
    if total <= chunking.max_whole_frames:
        _encode_window(model, hidden, into=output)
        return output
    size, overlap = chunking.max_whole_frames, min(chunking.window_overlap_frames, chunking.max_whole_frames // 2)
    starts = _window_starts(total, size, overlap)
    carried: Optional[tuple[int, torch.Tensor, torch.Tensor]] = None  # (start, sum, weight) of the unfinished frames
    for index, start in enumerate(starts):
        layers = _encode_window(model, hidden[:, start:start + size])
        ramp = _crossfade_ramp(layers.shape[0], overlap, first=start == 0, last=start + size >= total).to(hidden)
        summed = torch.zeros_like(layers)
        weight = torch.zeros(layers.shape[0], 1, 1, dtype=hidden.dtype, device=hidden.device)
        if carried is not None:
            carried_start, carried_sum, carried_weight = carried
            summed[:carried_start + carried_sum.shape[0] - start] = carried_sum[start - carried_start:]
            weight[:carried_start + carried_weight.shape[0] - start] = carried_weight[start - carried_start:]
        summed += layers * ramp[:, None, None]
        weight += ramp[:, None, None]
        finished = (starts[index + 1] if index + 1 < len(starts) else total) - start
        output[start:start + finished] = summed[:finished] / weight[:finished]
        carried = (start, summed, weight)
    return output


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


def _encode_window(model: nn.Module, hidden: torch.Tensor, into: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Every transformer layer's output (the official ``hidden_states[1:]``) as (T, layers, hidden).

    Collected with forward hooks on the layers (transformers 5 no longer returns ``hidden_states`` from the bare
    encoder, and hooks give the same tensors on every version); each layer's output is copied as it comes into
    ``into``, by default a new tensor of the layers' dtype and device, so no list of them is stacked afterwards.
    """
    collected: list[Optional[torch.Tensor]] = [into]  # one slot the hooks fill
    count = len(model.encoder.layers)

    def keeper(index: int) -> Callable[[nn.Module, object, object], None]:
        def keep(_module: nn.Module, _inputs: object, output: object) -> None:
            states = (output[0] if isinstance(output, tuple) else output)[0]  # type: ignore[index]  # (T, hidden)
            if collected[0] is None:
                collected[0] = states.new_empty(states.shape[0], count, states.shape[1])
            collected[0][:, index] = states

        return keep

    handles = [layer.register_forward_hook(keeper(index)) for index, layer in enumerate(model.encoder.layers)]
    try:
        model.encoder(hidden)
    finally:
        for handle in handles:
            handle.remove()
    return collected[0]  # type: ignore[return-value]  # the encoder has at least one layer


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


def _first_layer_stats(first: nn.Module, clip: NormalizedClip, chunk_samples: int, device: torch.device
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and variance of the first conv's output over the whole clip (GroupNorm, 1 channel/group),
    gathered ``chunk_samples`` of input at a time."""
    kernel, stride = int(first.conv.kernel_size[0]), int(first.conv.stride[0])
    out_len = (clip.length - kernel) // stride + 1
    step = chunk_samples // stride  # first-layer frames per chunk
    total_sum = torch.zeros(first.conv.out_channels, dtype=torch.float64, device=device)
    total_sq = torch.zeros_like(total_sum)
    for start in range(0, out_len, step):
        stop = min(start + step, out_len)
        conv = first.conv(clip.tensor(start * stride, (stop - 1) * stride + kernel, device)[None, None])[0].double()
        total_sum += conv.sum(dim=1)
        total_sq += conv.mul_(conv).sum(dim=1)  # squared in place: one chunk-sized float64 copy, not two
        del conv  # before the next chunk's is made
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
            normed = layer.conv(hidden)
            mean, var = (s.to(normed.dtype)[None, :, None] for s in stats)
            normed.sub_(mean).div_(torch.sqrt(var + norm.eps))  # in place (same dtype): one chunk-sized tensor fewer
            hidden = layer.activation(normed * norm.weight[None, :, None] + norm.bias[None, :, None])
        else:
            hidden = layer(hidden)
    return hidden
