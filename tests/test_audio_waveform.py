"""Waveform preparation: layouts, downmix, soxr resampling identical to librosa.load, frame counts, bad input."""

from __future__ import annotations

import json
import math

import librosa
import numpy as np
import pytest
import soundfile
import torch

from mmgt_core.audio.waveform import (
    duration_seconds,
    frame_count,
    is_silent,
    prepare_audio,
    resample,
    to_mono,
    video_frame_count,
)
from mmgt_core.errors import InputError


@pytest.fixture(scope="module")
def speech(fixtures_dir):
    """The fixture clip as soundfile reads it (float32, what librosa.load decodes) and its info JSON."""
    path = fixtures_dir / "audio" / "speech_3p2s_16k.wav"
    wave, rate = soundfile.read(str(path), dtype="float32")
    info = json.loads((fixtures_dir / "audio" / "audio_info.json").read_text())
    return path, wave, rate, info


def test_layouts_downmix_to_the_channel_mean():
    rng = np.random.default_rng(0)
    stereo = rng.standard_normal((2, 1000)).astype(np.float32)
    expected = stereo.mean(axis=0)
    for layout in (stereo, torch.from_numpy(stereo), torch.from_numpy(stereo)[None], stereo[None]):
        mono = to_mono(layout)
        assert mono.dtype == torch.float32 and mono.shape == (1000,)
        np.testing.assert_array_equal(mono.numpy(), expected)
    np.testing.assert_array_equal(to_mono(stereo[0]).numpy(), stereo[0])
    np.testing.assert_array_equal(to_mono(torch.from_numpy(stereo[:1])).numpy(), stereo[0])


def test_batch_and_layout_errors_name_the_problem():
    with pytest.raises(InputError, match="only one clip"):
        to_mono(torch.zeros(2, 1, 16000))
    with pytest.raises(InputError, match="channels-first"):
        to_mono(np.zeros((16000, 2), dtype=np.float32))
    with pytest.raises(InputError):
        to_mono(np.zeros((1, 1, 1, 100), dtype=np.float32))


def test_int16_pcm_is_scaled_like_soundfile(speech):
    path, wave, _, _ = speech
    pcm, _ = soundfile.read(str(path), dtype="int16")
    np.testing.assert_array_equal(to_mono(pcm).numpy(), wave)


def test_resample_is_librosa_load_sample_for_sample(speech):
    path, wave, rate, _ = speech
    for target in (12800, 22050, 44100):
        ours = resample(wave, rate, target).numpy()
        loaded, _ = librosa.load(str(path), sr=target)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, loaded)
        assert ours.shape[0] == math.ceil(wave.shape[0] * target / rate)
    np.testing.assert_array_equal(resample(wave, rate, rate).numpy(), wave)


def test_prepare_audio_downmixes_and_resamples(speech):
    _, wave, rate, _ = speech
    stereo44 = np.stack([resample(wave, rate, 44100).numpy()] * 2)
    mono16, out_rate = prepare_audio(torch.from_numpy(stereo44)[None], 44100, 16000)
    assert out_rate == 16000 and mono16.dtype == torch.float32 and mono16.ndim == 1
    np.testing.assert_array_equal(mono16.numpy(), resample(stereo44[0], 44100, 16000).numpy())
    assert abs(duration_seconds(mono16.shape[0], 16000) - duration_seconds(wave.shape[0], rate)) < 1e-3


def test_bad_input_raises_input_error():
    good = np.zeros(16000, dtype=np.float32)
    for wave, rate, problem in ((np.where(np.arange(16000) == 5, np.nan, good), 16000, "NaN or infinite"),
                                (np.where(np.arange(16000) == 5, np.inf, good).astype(np.float32), 16000,
                                 "NaN or infinite"),
                                (np.zeros(0, dtype=np.float32), 16000, "empty"),
                                (np.zeros(639, dtype=np.float32), 16000, "shorter than one video frame"),
                                (good, 0, "sample_rate")):
        with pytest.raises(InputError, match=problem):
            prepare_audio(wave, rate, 16000)
    one_frame, _ = prepare_audio(np.ones(640, dtype=np.float32), 16000, 12800)
    assert one_frame.shape[0] == 512


def test_silent_audio_is_allowed_and_detected():
    silent, _ = prepare_audio(np.zeros((2, 8000), dtype=np.float32), 16000, 12800)
    assert is_silent(silent) and silent.shape[0] == 6400
    assert not is_silent(np.ones(10, dtype=np.float32))


def test_frame_count_matches_the_official_rule(speech):
    _, wave, rate, info = speech
    assert frame_count(wave.shape[0], rate) == info["wav2vec2"]["seq_len"]
    for n in range(640, 200_000, 997):
        frames = frame_count(n, 16000)
        assert n * 25 / 16000 <= frames < n * 25 / 16000 + 1 + 1e-9
        assert video_frame_count(n, 16000, 25) in (frames, frames - 1), "the written video fits the generated frames"


def test_long_clips_are_checked_without_clip_sized_copies():
    from mmgt_core.audio.notices import silent_share
    from mmgt_core.audio.waveform import all_finite

    rate = 16000
    t = np.arange(rate * 3 + 123) / rate  # a partial last frame
    wave = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    wave[rate:2 * rate] = 0.0  # one silent second of three
    whole = silent_share(wave, rate, block_frames=10**6)
    assert whole == pytest.approx(25 / 76)  # 25 of the 76 frames (75 + the partial one) are silent
    assert silent_share(wave, rate, block_frames=7) == whole  # block boundaries change nothing
    assert all_finite(wave, block=1000)
    wave[2500] = np.inf  # in the third block
    assert not all_finite(wave, block=1000)
    same_rate = resample(wave, rate, rate)
    assert np.shares_memory(same_rate.numpy(), wave)  # no 16 kHz copy when the rate already matches
