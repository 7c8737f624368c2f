"""What the pack tells a user about short or silent audio (one place for the policy).

The policy it reports, as the code behaves:

* Stage I (SMGA) works on 80-frame (3.2 s) windows. A shorter clip is accepted: its features are padded to a
  full window by repeating the last frame and the keypoints are trimmed back to the clip's length.
* Silence is accepted by both stages (the policy of :mod:`mmgt_core.audio.waveform`): an all-zero or mostly
  silent clip gets its features, and the notice says the gestures and lips then follow no speech.
"""

from __future__ import annotations

import numpy as np
import torch

from ..constants import SMGA_WINDOW_FRAMES, VIDEO_FPS
from .waveform import frame_count, is_silent

SMGA_WINDOW_SECONDS = SMGA_WINDOW_FRAMES / VIDEO_FPS
SILENCE_DBFS = -50.0
"""A 40 ms frame quieter than this (RMS, dB below full scale) counts as silent."""
MOSTLY_SILENT_SHARE = 0.8
"""A clip with at least this share of silent frames gets a notice."""


def silent_share(mono: torch.Tensor | np.ndarray, sample_rate: int, block_frames: int = 256) -> float:
    """Share of the clip's video frames (40 ms) whose RMS is below ``SILENCE_DBFS`` (the last one zero-padded).

    Measured ``block_frames`` frames at a time (10 s: a float64 block of 1.3 MB at 16 kHz), so a long clip needs no
    clip-sized float64 copy; each frame's RMS is its own, so the block size does not change the result.
    """
    wave = np.asarray(mono).reshape(-1)
    hop = max(1, int(round(sample_rate / VIDEO_FPS)))
    frames = max(1, -(-wave.size // hop))
    threshold = 10 ** (SILENCE_DBFS / 20)
    silent = 0
    for first in range(0, frames, block_frames):
        count = min(block_frames, frames - first)
        block = np.zeros(count * hop)
        piece = wave[first * hop:(first + count) * hop]
        block[: piece.size] = piece
        silent += int((np.sqrt((block.reshape(count, hop) ** 2).mean(axis=1)) < threshold).sum())
    return silent / frames


def audio_notices(mono: torch.Tensor | np.ndarray, sample_rate: int, stage: str) -> list[str]:
    """Sentences for the node's notes: what was done with a short or (mostly) silent clip. ``stage`` is "I"/"II"."""
    notes: list[str] = []
    samples = int(np.asarray(mono).size)
    seconds = samples / float(sample_rate)
    frames = frame_count(samples, sample_rate)
    if stage == "I" and seconds < SMGA_WINDOW_SECONDS:
        notes.append(f"The audio is {seconds:.2f} s, shorter than one SMGA window ({SMGA_WINDOW_SECONDS:.1f} s): its "
                     f"features were padded to a full window by repeating the last frame, and the keypoints are "
                     f"trimmed back to the audio's {frames} frames.")
    if is_silent(mono):
        notes.append("The audio is silent (every sample is zero): the features are computed anyway, but gestures "
                     "and lips follow no speech; connect a recording with speech in it.")
    else:
        share = silent_share(mono, sample_rate)
        if share >= MOSTLY_SILENT_SHARE:
            notes.append(f"{share:.0%} of the audio is silent (below {SILENCE_DBFS:.0f} dBFS): gestures and lips "
                         "follow only the spoken parts; check the recording level or trim the silence.")
    return notes
