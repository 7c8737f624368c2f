"""Stage-II audio features (wav2vec2) hold no clip-length copies beyond the output, and give the same bits as the
straightforward computation (whole normalised waveform, ``torch.cat`` of the CNN chunks, a clip-length cross-fade sum
and weight) that they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensor_meter import ReturnedTensors
from torch import nn

from mmgt_core.audio.wav2vec import (
    NORMALIZE_EPS,
    Wav2VecChunking,
    _crossfade_ramp,
    _window_starts,
    normalize_waveform,
    wav2vec2_features,
)
from mmgt_core.audio.waveform import conv_frames, conv_geometry, frame_count
from mmgt_core.constants import ENCODER_SAMPLE_RATE, VIDEO_FPS
from mmgt_core.tiny_models import random_wav2vec, synthetic_speech

LONG_SECONDS = 240.0
"""Long enough that, with SMALL_CHUNKS, every chunk- or window-sized tensor is under half the output."""
SMALL_CHUNKS = Wav2VecChunking(cnn_chunk_frames=50, max_whole_frames=100, window_overlap_frames=25)
"""Short CNN chunks and transformer windows, so clip-length tensors dominate at a length a test can run."""


@pytest.fixture(scope="module")
def tiny_wav2vec() -> nn.Module:
    return random_wav2vec(tiny=True)


@pytest.fixture(scope="module")
def long_speech() -> torch.Tensor:
    return torch.from_numpy(synthetic_speech(LONG_SECONDS))


def reference_features(model: nn.Module, wave: np.ndarray, chunking: Wav2VecChunking, clip_length: int = -1
                       ) -> torch.Tensor:
    """The computation as first written, for a 16 kHz float32 clip: clip-sized copies everywhere."""
    wave = np.asarray(wave, dtype=np.float32)
    normalized = (wave - wave.mean()) / np.sqrt(wave.var() + NORMALIZE_EPS)
    seq_len = frame_count(wave.size)
    if clip_length > 0 and seq_len % clip_length:
        pad_frames = clip_length - seq_len % clip_length
        padding = np.zeros(pad_frames * int(ENCODER_SAMPLE_RATE // VIDEO_FPS), dtype=np.float32)
        normalized = np.concatenate([normalized, padding])
        seq_len += pad_frames
    signal = torch.from_numpy(normalized)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        cnn = _reference_cnn(model, signal, chunking.cnn_chunk_frames)
        cnn = F.interpolate(cnn.transpose(1, 2), size=seq_len, mode="linear", align_corners=True).transpose(1, 2)
        hidden, _ = model.feature_projection(cnn)
        size, overlap = chunking.max_whole_frames, min(chunking.window_overlap_frames, chunking.max_whole_frames // 2)
        total = hidden.shape[1]
        if total <= size:
            return _reference_layers(model, hidden).float()
        summed, weight = None, torch.zeros(total, 1, 1, dtype=hidden.dtype)
        for start in _window_starts(total, size, overlap):
            layers = _reference_layers(model, hidden[:, start:start + size])
            summed = torch.zeros(total, *layers.shape[1:], dtype=layers.dtype) if summed is None else summed
            ramp = _crossfade_ramp(layers.shape[0], overlap, first=start == 0, last=start + size >= total).to(hidden)
            summed[start:start + size] += layers * ramp[:, None, None]
            weight[start:start + size] += ramp[:, None, None]
        return (summed / weight).float()


def _reference_cnn(model: nn.Module, signal: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """CNN chunks with the first GroupNorm on whole-clip statistics, concatenated: ``(1, T50, C)``."""
    encoder = model.feature_extractor
    total = conv_frames(signal.numel(), model.config)
    if total <= chunk_frames:
        return encoder(signal[None]).transpose(1, 2)
    receptive, hop = conv_geometry(model.config)
    first = encoder.conv_layers[0]
    kernel, stride = int(first.conv.kernel_size[0]), int(first.conv.stride[0])
    out_len, step = (signal.numel() - kernel) // stride + 1, chunk_frames * hop // stride
    total_sum = torch.zeros(first.conv.out_channels, dtype=torch.float64)
    total_sq = torch.zeros_like(total_sum)
    for start in range(0, out_len, step):
        stop = min(start + step, out_len)
        conv = first.conv(signal[start * stride: (stop - 1) * stride + kernel][None, None])[0].double()
        total_sum += conv.sum(dim=1)
        total_sq += (conv * conv).sum(dim=1)
    mean = total_sum / out_len
    var = (total_sq / out_len - mean * mean).clamp_min(0.0)
    pieces = []
    for start in range(0, total, chunk_frames):
        stop = min(start + chunk_frames, total)
        hidden = signal[start * hop: (stop - 1) * hop + receptive][None, None]
        for index, layer in enumerate(encoder.conv_layers):
            if index == 0:
                norm, conv = layer.layer_norm, layer.conv(hidden)
                mean_, var_ = (s.to(conv.dtype)[None, :, None] for s in (mean, var))
                hidden = layer.activation((conv - mean_) / torch.sqrt(var_ + norm.eps) * norm.weight[None, :, None]
                                          + norm.bias[None, :, None])
            else:
                hidden = layer(hidden)
        pieces.append(hidden.transpose(1, 2))
    return torch.cat(pieces, dim=1)


def _reference_layers(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Every layer's output, captured in a list and stacked: ``(T, layers, hidden)``."""
    captured: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple)
                                                                              else out))
               for layer in model.encoder.layers]
    try:
        model.encoder(hidden)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(captured, dim=2)[0]


def test_long_clip_holds_no_clip_length_copy_beyond_the_output(tiny_wav2vec, long_speech) -> None:
    with ReturnedTensors() as meter:
        features, frames = wav2vec2_features(tiny_wav2vec, long_speech, ENCODER_SAMPLE_RATE, chunking=SMALL_CHUNKS)
    assert frames == frame_count(long_speech.numel()) and features.dtype == torch.float32
    output_bytes = features.numel() * features.element_size()
    caller = {long_speech.untyped_storage().data_ptr(), features.untyped_storage().data_ptr()}
    large = {tensor.storage: tensor.shape for tensor in meter.tensors
             if tensor.nbytes >= output_bytes // 2 and tensor.storage not in caller}
    # allowed: one clip-length temporary (the 50 Hz CNN features, just under half the output here). Before: the
    # normalised waveform copy (5x the output), the concatenated CNN chunks, a clip-length sum and the quotient
    assert len(large) <= 1, f"clip-length tensors besides the output and the input: {sorted(large.values())}"
    expected = reference_features(tiny_wav2vec, long_speech.numpy(), SMALL_CHUNKS)
    assert torch.equal(features, expected)


@pytest.mark.parametrize("clip_length", [-1, 12])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_windows_and_padding_give_the_same_bits(tiny_wav2vec, clip_length, autocast) -> None:
    """Three windows overlap the last frames (the last window is aligned to the end); bf16 accumulates in bf16."""
    wave = synthetic_speech(21.0)[:-777]
    chunking = Wav2VecChunking(cnn_chunk_frames=133, max_whole_frames=160, window_overlap_frames=41)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        features, _ = wav2vec2_features(tiny_wav2vec, wave, ENCODER_SAMPLE_RATE, clip_length=clip_length,
                                        chunking=chunking)
        expected = reference_features(tiny_wav2vec, wave, chunking, clip_length)
    assert features.shape == expected.shape and torch.equal(features, expected)


def test_short_clip_whole_path_gives_the_same_bits(tiny_wav2vec) -> None:
    wave = synthetic_speech(6.0)
    features, _ = wav2vec2_features(tiny_wav2vec, wave, ENCODER_SAMPLE_RATE)
    assert torch.equal(features, reference_features(tiny_wav2vec, wave, Wav2VecChunking()))


def test_normalize_waveform_is_the_feature_extractor_formula() -> None:
    wave = synthetic_speech(3.0)
    expected = wave - wave.mean()
    expected /= np.sqrt(wave.var() + NORMALIZE_EPS)
    assert np.array_equal(normalize_waveform(wave), expected)
