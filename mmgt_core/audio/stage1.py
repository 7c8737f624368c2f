"""Stage-I audio features: ``[WavLM last layer (hidden) || EDGE baseline (35)]`` per video frame at 25 fps.

The official ``scripts/audio2vid.py`` concatenates ``[wavlm (1024) | baseline (35)]`` = 1059 columns for a 3.2 s
clip (80 frames). Here any length works: ``T = frame_count(samples_16k, 16000)`` = ``ceil(samples/16000*25)``
counted on the 16 kHz waveform (what the official WavLM path sees), and both parts are cut to (or, by at most a
row, padded to) ``T`` rows: WavLM by repeating its last row, EDGE as documented in ``edge_features.fit_frames``.
The EDGE part is computed from the waveform at its own rate (resampled straight to 12.8 kHz and 22.05 kHz, as
``librosa.load(path, sr=...)`` does with the file), not from the 16 kHz copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import torch

from mmgt_core.audio.edge_features import EDGE_FEATURE_DIM, edge_features
from mmgt_core.audio.waveform import WaveformLike, frame_count, prepare_audio, to_mono
from mmgt_core.audio.wavlm import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_CONTEXT_SECONDS,
    WAVLM_LARGE_HIDDEN_SIZE,
    WavLMEncoder,
    encoder_from_model,
    plan_chunks_seconds,
    wavlm_features,
)
from mmgt_core.constants import ENCODER_SAMPLE_RATE
from mmgt_core.types import OptionalCancel, OptionalProgress

if TYPE_CHECKING:
    from transformers import WavLMModel


RELEASED_STAGE1_FEATURE_DIM = WAVLM_LARGE_HIDDEN_SIZE + EDGE_FEATURE_DIM
"""1059: the released SMGA model's audio input, WavLM-Large (1024) + EDGE (35)."""


def stage1_feature_dim(encoder: WavLMEncoder) -> int:
    """Columns of the Stage-I features: WavLM hidden size + 35 (:data:`RELEASED_STAGE1_FEATURE_DIM` for WavLM-Large)."""
    return encoder.hidden_size + EDGE_FEATURE_DIM


def stage1_features(
    waveform: WaveformLike,
    sample_rate: float,
    wavlm_model: Union[WavLMEncoder, WavLMModel],
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    progress: OptionalProgress = None,
    check_cancel: OptionalCancel = None,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
) -> torch.Tensor:
    """Stage-I conditioning ``(T, hidden + 35)`` float32 on CPU for one clip at any rate.

    ``device``/``dtype``, when given, move the WavLM model there (it is left there; the caller offloads).
    ``progress(step, total)`` counts the WavLM chunks plus one step for the EDGE features.
    """
    encoder = _as_encoder(wavlm_model)
    if device is not None or dtype is not None:
        encoder.model.to(device=device, dtype=dtype)
    mono = to_mono(waveform)
    wave16k, _ = prepare_audio(mono, sample_rate, ENCODER_SAMPLE_RATE)
    n_frames = frame_count(wave16k.shape[0])

    total = len(plan_chunks_seconds(encoder.model.config, wave16k.shape[0], chunk_seconds, context_seconds)) + 1
    report = (lambda step, _: progress(step, total)) if progress is not None else None
    wavlm = wavlm_features(encoder, wave16k, n_frames, chunk_seconds, context_seconds, report, check_cancel)
    if check_cancel is not None:
        check_cancel()
    edge = edge_features(mono, sample_rate, n_frames)
    if progress is not None:
        progress(total, total)
    return torch.cat([wavlm, edge], dim=1)


def _as_encoder(wavlm_model: Union[WavLMEncoder, WavLMModel]) -> WavLMEncoder:
    """Accept a bare transformers WavLMModel too (WavLM-Large's official whole-clip normalisation assumed)."""
    if isinstance(wavlm_model, WavLMEncoder):
        return wavlm_model
    return encoder_from_model(wavlm_model, normalize_waveform=True, source=type(wavlm_model).__name__)

