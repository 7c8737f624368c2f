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

Features of a long clip describe the whole clip: the dB reference, the tuning estimate, onset peak picking, beat
tracking and the tempo see the whole recording, so they differ from running the official code clip by clip (3.2 s
each). The frame-local analyses (resampling, mel spectrogram, CQT, pitch tracking, tempogram) of a clip longer than
EDGE_CHUNK_SECONDS run chunk by chunk with margins, so memory stays bounded at any length; up to that length the
computation is the official one call for call.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Optional

import numpy as np
import torch

from mmgt_core.audio.waveform import WaveformLike, frame_count, resample, to_mono, validate_clip
from mmgt_core.constants import VIDEO_FPS
from mmgt_core.timeline import fit_length

EDGE_HOP_LENGTH = 512
EDGE_SAMPLE_RATE = VIDEO_FPS * EDGE_HOP_LENGTH
"""12,800 Hz: one librosa frame (hop 512) per video frame."""
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


EDGE_CHUNK_SECONDS = 15.0
"""Clips up to this long are analysed in one piece (the official computation, call for call); longer ones chunk by
chunk, so memory stays bounded at any length."""
EDGE_MARGIN_SECONDS = 2.0
"""Signal each chunk reads beyond its own frames: more than the longest constant-Q filter (about 1.6 s at C1) plus
the resampler's reach, so a chunk's frames equal the whole-clip frames up to float rounding."""
N_FFT = 2048
"""librosa's default STFT size for the mel, onset and pitch-tracking analyses."""
TEMPO_AUTOCORRELATION_SECONDS = 8
"""librosa tempo's ``ac_size``: the tempogram window."""
CQT_BINS_PER_OCTAVE = 36
CQT_OCTAVES = 7
"""chroma_cens's defaults: 7 octaves from C1 at 36 bins per octave."""


def official_start_bpm(mono: WaveformLike, sample_rate: float) -> float:
    """The official start_bpm: ``librosa tempo`` of the clip resampled to 22,050 Hz (the bare-except fallback)."""
    signal = _ResampledSignal(_mono_numpy(mono), sample_rate, TEMPO_SAMPLE_RATE)
    envelope = _onset_envelope(_mel_power(signal), TEMPO_SAMPLE_RATE)
    return float(_clip_tempo(envelope, TEMPO_SAMPLE_RATE, _chunk_frames(signal))[0])


def edge_features_at_rate(signal: _ResampledSignal, start_bpm: float) -> np.ndarray:
    """The 35 columns for every librosa frame of the 12,800 Hz signal: ``(1 + samples // 512, 35)`` float32.

    As the official ``extract()``: onset envelope and MFCC-20 from one mel spectrogram, chroma_cens from the CQT,
    onset and beat one-hots from the envelope. Long clips are analysed chunk by chunk (see EDGE_CHUNK_SECONDS); the
    clip-wide steps (dB reference, tuning, onset peak picking, beat tracking) still see the whole clip.
    """
    import librosa

    sr, hop = EDGE_SAMPLE_RATE, EDGE_HOP_LENGTH
    with warnings.catch_warnings():
        # very short clips make librosa warn that n_fft exceeds the signal; the result is still defined
        warnings.filterwarnings("ignore", message=r"n_fft=.*too large", category=UserWarning)
        # silent clips: chroma's tuning estimate has no pitches to look at and falls back to 0 (documented case)
        warnings.filterwarnings("ignore", message=r"Trying to estimate tuning from empty frequency set")
        mel_db = librosa.power_to_db(_mel_power(signal))
        envelope = _onset_envelope_db(mel_db, sr)
        mfcc = librosa.feature.mfcc(S=mel_db, sr=sr, n_mfcc=20).T
        chroma = _chroma_cens(signal)
    onsets = librosa.onset.onset_detect(onset_envelope=envelope.flatten(), sr=sr, hop_length=hop)
    # the tempo beat_track would estimate itself, computed in chunks (librosa's builds the whole tempogram at once)
    bpm = _clip_tempo(envelope, sr, _chunk_frames(signal), start_bpm)
    _, beats = librosa.beat.beat_track(
        onset_envelope=envelope, sr=sr, hop_length=hop, start_bpm=start_bpm, tightness=BEAT_TIGHTNESS, bpm=bpm
    )
    onset_onehot = np.zeros_like(envelope, dtype=np.float32)
    onset_onehot[onsets] = 1.0
    beat_onehot = np.zeros_like(envelope, dtype=np.float32)
    beat_onehot[beats] = 1.0
    columns = [envelope[:, None], mfcc, chroma, onset_onehot[:, None], beat_onehot[:, None]]
    return np.concatenate(columns, axis=-1).astype(np.float32, copy=False)


class _ResampledSignal:
    """One clip at a target rate, read whole or span by span (each span resampled from the source on demand).

    A span starts on a sample that maps to a whole source sample, so a span's samples equal the whole-clip
    resampling away from the span's edges (soxr's reach is a few milliseconds; the chunk margins cover it).
    """

    def __init__(self, mono: np.ndarray, sr_in: float, sr_out: int) -> None:
        self.mono, self.sr_in, self.sr_out = mono, sr_in, sr_out
        self.total = mono.shape[0] if sr_in == sr_out else int(np.ceil(mono.shape[0] * (float(sr_out) / sr_in)))
        exact_rates = float(sr_in).is_integer()
        common = math.gcd(int(sr_in), sr_out) if exact_rates else 1
        self.step_out = sr_out // common if exact_rates else 0
        """Output samples between spans' possible starts (0: a rate with a fraction, read whole only)."""
        self.step_in = int(sr_in) // common if exact_rates else 0
        self._whole: np.ndarray | None = None
        """The whole clip at the target rate, once read (a clip analysed in one piece is read by several passes)."""

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` at the target rate; ``start`` a multiple of ``step_out``. Read-only: the whole
        clip is resampled once and shared by the passes that read it."""
        if start == 0 and stop >= self.total:
            if self._whole is None:
                self._whole = resample(self.mono, self.sr_in, self.sr_out).numpy()
            return self._whole
        source_start = start // self.step_out * self.step_in
        source_stop = min(self.mono.shape[0], math.ceil(stop * self.sr_in / self.sr_out) + self.step_in)
        span = resample(self.mono[source_start:source_stop], self.sr_in, self.sr_out).numpy()
        return span[: stop - start]

    @property
    def in_one_piece(self) -> bool:
        """True when the clip is analysed whole (up to EDGE_CHUNK_SECONDS): the official computation."""
        return 1 + self.total // EDGE_HOP_LENGTH <= _chunk_frames(self)

    def chunks(self) -> Iterator[tuple[np.ndarray, int, int]]:
        """The analysis chunks, one at a time: ``(samples, lead_frames, frames)``; frames ``[lead, lead + frames)``
        of a chunk's centred analysis are its own, in order. One chunk (the whole clip) when :attr:`in_one_piece`."""
        total_frames = 1 + self.total // EDGE_HOP_LENGTH
        if self.in_one_piece:
            yield self.read(0, self.total), 0, total_frames
            return
        chunk_frames = _chunk_frames(self)
        unit = math.lcm(EDGE_HOP_LENGTH, self.step_out)
        margin = math.ceil(EDGE_MARGIN_SECONDS * self.sr_out / unit) * unit
        for first in range(0, total_frames, chunk_frames):
            yield self._chunk(first, min(total_frames, first + chunk_frames), margin)

    def _chunk(self, first: int, last: int, margin: int) -> tuple[np.ndarray, int, int]:
        start = max(0, first * EDGE_HOP_LENGTH - margin)
        stop = min(self.total, last * EDGE_HOP_LENGTH + margin)
        return self.read(start, stop), first - start // EDGE_HOP_LENGTH, last - first


def _chunk_frames(signal: _ResampledSignal) -> int:
    """Frames per analysis chunk: EDGE_CHUNK_SECONDS, rounded to whole span units; everything if spans can't align."""
    if not signal.step_out:
        return 1 + signal.total // EDGE_HOP_LENGTH
    unit_frames = math.lcm(EDGE_HOP_LENGTH, signal.step_out) // EDGE_HOP_LENGTH
    wanted = EDGE_CHUNK_SECONDS * signal.sr_out / EDGE_HOP_LENGTH
    return max(1, math.ceil(wanted / unit_frames)) * unit_frames


def _mel_power(signal: _ResampledSignal) -> np.ndarray:
    """librosa's default mel power spectrogram ``(128, frames)`` (n_fft 2048, hop 512, fmax sr/2), chunk by chunk."""
    import librosa

    parts = [
        librosa.feature.melspectrogram(y=samples, sr=signal.sr_out, n_fft=N_FFT, hop_length=EDGE_HOP_LENGTH,
                                       fmax=0.5 * signal.sr_out)[:, lead:lead + frames]
        for samples, lead, frames in signal.chunks()
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def _onset_envelope_db(mel_db: np.ndarray, sample_rate: int) -> np.ndarray:
    """librosa's onset-strength envelope from a dB mel spectrogram (what ``onset_strength(y=...)`` computes)."""
    import librosa

    return librosa.onset.onset_strength(S=mel_db, sr=sample_rate, n_fft=N_FFT, hop_length=EDGE_HOP_LENGTH)


def _onset_envelope(mel_power: np.ndarray, sample_rate: int) -> np.ndarray:
    """The onset-strength envelope of a mel power spectrogram."""
    import librosa

    return _onset_envelope_db(librosa.power_to_db(mel_power), sample_rate)


def _clip_tempo(envelope: np.ndarray, sample_rate: int, chunk_frames: int, start_bpm: float = 120.0) -> np.ndarray:
    """``librosa.feature.tempo(onset_envelope=...)`` with its defaults: the whole call up to ``chunk_frames`` frames,
    beyond that from the time-averaged tempogram computed chunk by chunk (each column depends only on its window)."""
    import librosa

    frames = envelope.shape[-1]
    if frames <= chunk_frames:
        return librosa.feature.tempo(onset_envelope=envelope, sr=sample_rate, hop_length=EDGE_HOP_LENGTH,
                                     start_bpm=start_bpm)
    win_length = int(librosa.time_to_frames(TEMPO_AUTOCORRELATION_SECONDS, sr=sample_rate,
                                            hop_length=EDGE_HOP_LENGTH))
    padded = np.pad(envelope, (win_length // 2, win_length // 2), mode="linear_ramp", end_values=[0, 0])
    total = np.zeros((win_length, 1), dtype=np.float64)
    for first in range(0, frames, chunk_frames):
        last = min(frames, first + chunk_frames)
        part = librosa.feature.tempogram(onset_envelope=padded[first:last + win_length - 1], sr=sample_rate,
                                         hop_length=EDGE_HOP_LENGTH, win_length=win_length, center=False)
        total += part[:, : last - first].sum(axis=-1, keepdims=True, dtype=np.float64)
    mean_tempogram = (total / frames).astype(np.float32)
    return librosa.feature.tempo(tg=mean_tempogram, sr=sample_rate, hop_length=EDGE_HOP_LENGTH,
                                 start_bpm=start_bpm, aggregate=None)


def _chroma_cens(signal: _ResampledSignal) -> np.ndarray:
    """``chroma_cens`` ``(frames, 12)`` as the official computes it (CQT of 7 octaves from C1 at 36 bins per octave,
    tuning estimated on the clip), chunk by chunk: the CENS smoothing (41 frames) stays inside a chunk's margin."""
    import librosa

    # one piece: the official estimate on the whole clip (below); chunked: from the chunks' pitch tracks first
    tuning = None if signal.in_one_piece else _clip_tuning(signal)
    parts = []
    for samples, lead, frames in signal.chunks():
        if tuning is None:
            tuning = librosa.estimate_tuning(y=samples, sr=signal.sr_out, bins_per_octave=CQT_BINS_PER_OCTAVE)
        magnitude = np.abs(librosa.cqt(samples, sr=signal.sr_out, hop_length=EDGE_HOP_LENGTH,
                                       n_bins=CQT_OCTAVES * CQT_BINS_PER_OCTAVE,
                                       bins_per_octave=CQT_BINS_PER_OCTAVE, tuning=tuning))
        chroma = librosa.feature.chroma_cens(C=magnitude, sr=signal.sr_out, hop_length=EDGE_HOP_LENGTH, n_chroma=12,
                                             bins_per_octave=CQT_BINS_PER_OCTAVE, n_octaves=CQT_OCTAVES)
        parts.append(chroma[:, lead:lead + frames].T)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def _clip_tuning(signal: _ResampledSignal) -> float:
    """``estimate_tuning`` of the whole clip from chunked pitch tracking (the pitches and their magnitudes)."""
    import librosa

    pitches, magnitudes = [], []
    for samples, lead, frames in signal.chunks():
        pitch, magnitude = librosa.piptrack(y=samples, sr=signal.sr_out, n_fft=N_FFT)
        pitch, magnitude = pitch[:, lead:lead + frames], magnitude[:, lead:lead + frames]
        voiced = pitch > 0
        pitches.append(pitch[voiced])
        magnitudes.append(magnitude[voiced])
    pitch, magnitude = np.concatenate(pitches), np.concatenate(magnitudes)
    threshold = np.median(magnitude) if magnitude.size else 0.0
    return float(librosa.pitch_tuning(pitch[magnitude >= threshold], resolution=0.01,
                                      bins_per_octave=CQT_BINS_PER_OCTAVE))


def _mono_numpy(waveform: WaveformLike) -> np.ndarray:
    """A 1-D float32 numpy view of a mono clip."""
    return to_mono(waveform).numpy()


def fit_frames(features: np.ndarray, n_frames: int) -> np.ndarray:
    """Cut ``(F, 35)`` features to ``n_frames`` rows, or pad: float columns repeat the last row, one-hots get 0."""
    fitted = fit_length(features, n_frames)
    if features.shape[0] < n_frames:  # the padded rows are a fresh copy
        fitted[features.shape[0]:, list(ONE_HOT_COLUMNS)] = 0.0
    return fitted


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
    signal = _ResampledSignal(mono.numpy(), sample_rate, EDGE_SAMPLE_RATE)
    features = fit_frames(edge_features_at_rate(signal, start_bpm), n_frames)
    return torch.from_numpy(np.ascontiguousarray(features))
