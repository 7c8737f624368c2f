"""SMGA training: official window alignment, resumable checkpoints, and a tiny model that learns audio → motion.

The learning test uses a synthetic dataset where the right hand's height follows the loudness of noise bursts,
with cheap log band-energy features (35 columns, the EDGE width) instead of WavLM/EDGE, and a small 40-frame
model so that it trains in seconds on a CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from mmgt_core.constants import ENCODER_SAMPLE_RATE, VIDEO_FPS
from mmgt_core.errors import InputError
from mmgt_core.smga.generate import generate_pose_sequence
from mmgt_core.smga.model import SMGAConfig, load_smga
from training.smga_data import Clip, SMGAWindowDataset, build_dataset, clip_windows, read_wav, window_starts
from training.train_smga import STATE_FILE, TrainConfig, train_smga

RATE = ENCODER_SAMPLE_RATE
HOP = RATE // VIDEO_FPS
RIGHT_HAND_Y = torch.tensor([3 * k + 1 for k in range(113, 134)])
BASE_POSE = -0.3 + 0.05 * torch.randn(402, generator=torch.Generator().manual_seed(11))


def loudness_track(frames: int, generator: torch.Generator) -> torch.Tensor:
    """Piecewise-constant loudness in [0, 1], segments of 1.6–4 s, lightly smoothed."""
    levels: list[float] = []
    while len(levels) < frames:
        levels += [float(torch.rand(1, generator=generator))] * int(torch.randint(40, 100, (1,), generator=generator))
    track = torch.tensor(levels[:frames]).view(1, 1, -1)
    return torch.nn.functional.conv1d(track, torch.ones(1, 1, 5) / 5, padding=2).view(-1)


def noise_bursts(level: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """White noise whose amplitude spans 40 dB with the loudness level."""
    amplitude = torch.repeat_interleave(0.01 * 100**level, HOP)
    return (torch.randn(amplitude.shape[0], generator=generator) * amplitude).clamp(-1, 1)


def band_energy_features(wave: torch.Tensor, rate: int) -> torch.Tensor:
    """35 log band energies per 25 fps frame: a cheap stand-in for the Stage-I features."""
    spectrum = torch.stft(wave, n_fft=1024, hop_length=rate // VIDEO_FPS, window=torch.hann_window(1024),
                          return_complex=True).abs() ** 2
    bands = torch.stack([band.sum(0) for band in spectrum.chunk(35, dim=0)], dim=1)
    frames = math.ceil(wave.shape[0] / rate * VIDEO_FPS)
    return (torch.log(bands + 1e-6)[:frames] - 3.0) / 3.0


def hand_follows(level: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Normalised poses: a fixed body, the right hand raised by 0.4·loudness (y grows downwards)."""
    poses = BASE_POSE.repeat(level.shape[0], 1) + 0.002 * torch.randn(level.shape[0], 402, generator=generator)
    poses[:, RIGHT_HAND_Y] -= 0.4 * level[:, None]
    return poses


def write_clip(folder: Path, name: str, seconds: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    level = loudness_track(int(seconds * VIDEO_FPS), generator)
    wave = noise_bursts(level, generator)
    wavfile.write(folder / f"{name}.wav", RATE, (wave.numpy() * 32767).astype(np.int16))
    np.save(folder / f"{name}.npy", hand_follows(level, generator).numpy())
    return level, wave


def test_windows_follow_the_official_alignment() -> None:
    """x = keypoints[s−1 : s+79], cond_frame = x[0] = keypoints[s−1], cond = features[s : s+80]."""
    frames = torch.arange(200, dtype=torch.float32)
    clip = Clip("ramp", frames[:, None].expand(200, 402).clone(), frames[:, None].expand(200, 35).clone())
    x, cond_frame, cond = clip_windows(clip, window=80, stride=12)
    starts = window_starts(200, 200, 80, 12)
    assert starts[0] == 1 and starts[-1] + 80 <= 200 and x.shape == (len(starts), 80, 402)
    for index, start in enumerate(starts):
        assert torch.equal(x[index, :, 0], frames[start - 1:start + 79])
        assert torch.equal(cond_frame[index], x[index, 0])
        assert torch.equal(cond[index, :, 0], frames[start:start + 80])


def test_data_folder_gives_every_window_normalises_pixel_keypoints_and_refuses_bad_clips(tmp_path: Path) -> None:
    write_clip(tmp_path, "a", 4.0, seed=0)
    pixels = np.full((100, 134, 3), 250.0, dtype=np.float32)  # (T, 134, 3) pixel keypoints are normalised
    np.save(tmp_path / "b.npy", pixels)
    wavfile.write(tmp_path / "b.wav", RATE, np.zeros(4 * RATE, dtype=np.int16))
    dataset = build_dataset(tmp_path, band_energy_features, cache_dir=tmp_path / "cache")
    assert dataset.feature_dim == 35 and len(dataset) == 2 * len(window_starts(100, 100)), "every window of a and b"
    assert (tmp_path / "cache" / "a.features.safetensors").is_file()
    wave, rate = read_wav(tmp_path / "a.wav")
    assert rate == RATE and wave.dtype == torch.float32 and wave.abs().max() <= 1
    assert torch.allclose(dataset.x[-1], torch.full((80, 402), 250 / 500 - 0.6))
    (tmp_path / "c.npy").write_bytes((tmp_path / "b.npy").read_bytes())  # no c.wav
    with pytest.raises(InputError):
        build_dataset(tmp_path, band_energy_features)
    with pytest.raises(InputError):
        SMGAWindowDataset([Clip("short", torch.zeros(50, 402), torch.zeros(50, 35))])


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> SMGAWindowDataset:
    folder = tmp_path_factory.mktemp("smga_data")
    for index in range(4):
        write_clip(folder, f"clip{index}", 20.0, seed=index)
    return build_dataset(folder, band_energy_features, window=40, stride=4)


def small_config(out_dir: Path, steps: int, save_every: int = 2) -> TrainConfig:
    model = SMGAConfig(seq_len=40, latent_dim=32, ff_size=64, num_layers=1, num_heads=4, dropout=0.0,
                       cond_feature_dim=35)
    return TrainConfig(out_dir=str(out_dir), model=model, steps=steps, batch_size=16, lr=2e-3, weight_decay=0.0,
                       ema_decay=0.98, bf16="off", save_every=save_every, log_every=100)


def test_resume_gives_the_same_weights_as_one_run(synthetic_dataset: SMGAWindowDataset, tmp_path: Path) -> None:
    straight = train_smga(small_config(tmp_path / "straight", 6), synthetic_dataset, log=None)
    train_smga(small_config(tmp_path / "resumed", 4), synthetic_dataset, log=None)
    assert (tmp_path / "resumed" / STATE_FILE).is_file()
    resumed = train_smga(small_config(tmp_path / "resumed", 6), synthetic_dataset, log=None)
    assert resumed.step == 6 and len(resumed.losses) == 2  # only the two missing steps ran
    a, b = load_smga(str(straight.export_path)), load_smga(str(resumed.export_path))
    assert a.config == small_config(tmp_path, 1).model
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], atol=1e-6, rtol=0, msg=key)
    assert not list((tmp_path / "resumed").glob("*.tmp"))  # atomic writes leave no temp files


def test_tiny_smga_learns_hand_height_from_loudness(synthetic_dataset: SMGAWindowDataset, tmp_path: Path) -> None:
    result = train_smga(small_config(tmp_path / "run", 500, save_every=500), synthetic_dataset, log=None)
    assert sum(result.losses[-50:]) < sum(result.losses[:50])
    model = load_smga(str(result.export_path))
    level, wave = write_clip(tmp_path, "new_audio", 12.0, seed=99)  # audio the model has not seen
    reference = hand_follows(level[:1], torch.Generator().manual_seed(0))[0]
    poses = generate_pose_sequence(model, band_energy_features(wave, RATE), reference,
                                   torch.Generator().manual_seed(1), steps=20, window=40, overlap=4)
    height = -poses[:, RIGHT_HAND_Y].mean(dim=1)
    lag = 2  # official assembly: output frame j is generated frame j−1, trained as the pose one frame early
    correlation = np.corrcoef(height[lag:].numpy(), level[:-lag].numpy())[0, 1]
    print(f"hand height vs loudness correlation: {correlation:.3f}")
    assert correlation > 0.5, correlation


def test_bf16_autocast_trains_with_finite_losses_and_bad_settings_are_refused(synthetic_dataset: SMGAWindowDataset,
                                                                              tmp_path: Path) -> None:
    config = small_config(tmp_path / "bf16", 2, save_every=100)
    config.bf16 = "on"
    result = train_smga(config, synthetic_dataset, log=None)
    assert all(math.isfinite(loss) for loss in result.losses)
    wrong_width = small_config(tmp_path / "wrong", 1)
    wrong_width.model = SMGAConfig(**{**wrong_width.model.to_dict(), "cond_feature_dim": 59})
    with pytest.raises(InputError):
        train_smga(wrong_width, synthetic_dataset, log=None)
    bad_optimizer = small_config(tmp_path / "bad", 1)
    bad_optimizer.optimizer = "sgd"
    with pytest.raises(InputError):
        train_smga(bad_optimizer, synthetic_dataset, log=None)
