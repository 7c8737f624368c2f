"""The 35 EDGE "baseline" audio features of Stage I, with the official librosa numerics.

Official code: ``data/audio_extraction/baseline_features.py`` ``extract(wav)`` (called with ``dest_dir=None``).
Per frame at 25 fps (12,800 Hz with hop 512), the columns are::

    0       onset-strength envelope
    1..20   MFCC-20
    21..32  chroma_cens (12 bins)
    33      onset one-hot (peaks of onset_detect)
    34      beat one-hot (beat_track(start_bpm, tightness=100))

The start_bpm quirk: the official ``_get_tempo(audio_name)`` (an AIST++ file-name parser) always fails because
``audio_name`` is undefined when ``dest_dir=None``; the bare ``except`` then falls back to
``librosa.beat.tempo(y=librosa.load(path)[0])[0]``, i.e. a tempo estimated on the file re-loaded at librosa's
default 22,050 Hz. We reproduce that fallback from the in-memory waveform: it is resampled to 22,050 Hz with the
same soxr_hq path librosa.load uses, and ``librosa.feature.tempo`` (the non-deprecated name of the same function)
estimates the tempo. Likewise the 12,800 Hz signal is the in-memory waveform resampled from its own rate, which is
what ``librosa.load(path, sr=12800)`` does with the file's native samples.

Length: the official chops to 80 rows and asserts there are exactly 80 (3.2 s clips only). We accept any length
and return ``n_frames`` rows, by default ``frame_count`` of the clip at 25 fps. librosa (centred frames) yields
``1 + floor(samples_12800 / 512)`` rows, which is never fewer than that, so in practice the extra rows are cut off
the end, exactly like the official chop. Should fewer rows ever come out, the last row is repeated for the float
columns and the one-hot columns are padded with zeros (no invented onsets or beats).

Features of a long clip are computed over the whole clip at once; onset peak picking, beat tracking and the tempo
then see the whole recording, so they differ from running the official code clip by clip (3.2 s each).
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch

from mmgt_core.audio.waveform import VIDEO_FPS, WaveformLike, frame_count, resample, to_mono, validate_clip

EDGE_SAMPLE_RATE = 12800
"""25 fps x hop 512: one librosa frame per video frame."""
EDGE_HOP_LENGTH = 512
TEMPO_SAMPLE_RATE = 22050
"""librosa.load's default rate, used by the official start_bpm fallback."""
BEAT_TIGHTNESS = 100

EDGE_FEATURE_DIM = 35
ENVELOPE_COLUMN = 0
MFCC_COLUMNS = slice(1, 21)
CHROMA_COLUMNS = slice(21, 33)
ONSET_COLUMN = 33
BEAT_COLUMN = 34
ONE_HOT_COLUMNS = (ONSET_COLUMN, BEAT_COLUMN)


def official_start_bpm(mono: WaveformLike, sample_rate: float) -> float:
    """The official start_bpm: ``librosa tempo`` of the clip resampled to 22,050 Hz (the bare-except fallback)."""
    import librosa

    wave22k = resample(mono, sample_rate, TEMPO_SAMPLE_RATE).numpy()
    return float(librosa.feature.tempo(y=wave22k)[0])


def edge_features_12800(wave12800: np.ndarray, start_bpm: float) -> np.ndarray:
    """The 35 columns for every librosa frame of a 12,800 Hz float32 waveform: ``(1 + len // 512, 35)`` float32."""
    import librosa

    sr, hop = EDGE_SAMPLE_RATE, EDGE_HOP_LENGTH
    with warnings.catch_warnings():
        # very short clips make librosa warn that n_fft exceeds the signal; the result is still defined
        warnings.filterwarnings("ignore", message=r"n_fft=.*too large", category=UserWarning)
        # silent clips: chroma's tuning estimate has no pitches to look at and falls back to 0 (documented case)
        warnings.filterwarnings("ignore", message=r"Trying to estimate tuning from empty frequency set")
        envelope = librosa.onset.onset_strength(y=wave12800, sr=sr)
        mfcc = librosa.feature.mfcc(y=wave12800, sr=sr, n_mfcc=20).T
        chroma = librosa.feature.chroma_cens(y=wave12800, sr=sr, hop_length=hop, n_chroma=12).T
    onsets = librosa.onset.onset_detect(onset_envelope=envelope.flatten(), sr=sr, hop_length=hop)
    _, beats = librosa.beat.beat_track(
        onset_envelope=envelope, sr=sr, hop_length=hop, start_bpm=start_bpm, tightness=BEAT_TIGHTNESS
    )
    onset_onehot = np.zeros_like(envelope, dtype=np.float32)
    onset_onehot[onsets] = 1.0
    beat_onehot = np.zeros_like(envelope, dtype=np.float32)
    beat_onehot[beats] = 1.0
    columns = [envelope[:, None], mfcc, chroma, onset_onehot[:, None], beat_onehot[:, None]]
    return np.concatenate(columns, axis=-1).astype(np.float32, copy=False)


def fit_frames(features: np.ndarray, n_frames: int) -> np.ndarray:
    """Cut ``(F, 35)`` features to ``n_frames`` rows, or pad: float columns repeat the last row, one-hots get 0."""
    if features.shape[0] >= n_frames:
        return features[:n_frames]
    pad = np.repeat(features[-1:], n_frames - features.shape[0], axis=0)
    pad[:, list(ONE_HOT_COLUMNS)] = 0.0
    return np.concatenate([features, pad], axis=0)


def edge_features(
    waveform: WaveformLike,
    sample_rate: float,
    n_frames: Optional[int] = None,
    start_bpm: Optional[float] = None,
) -> torch.Tensor:
    """EDGE baseline features ``(n_frames, 35)`` float32 of one clip at any rate, as the official extract().

    ``n_frames`` defaults to ``frame_count(samples, sample_rate)`` at 25 fps. ``start_bpm`` defaults to the official
    fallback (:func:`official_start_bpm`); pass a number to override the quirk.
    """
    mono = to_mono(waveform)
    validate_clip(mono, sample_rate)
    if n_frames is None:
        n_frames = frame_count(mono.shape[0], sample_rate, VIDEO_FPS)
    if start_bpm is None:
        start_bpm = official_start_bpm(mono, sample_rate)
    wave12800 = resample(mono, sample_rate, EDGE_SAMPLE_RATE).numpy()
    features = fit_frames(edge_features_12800(wave12800, start_bpm), n_frames)
    return torch.from_numpy(np.ascontiguousarray(features))
