"""Stage-I (SMGA) training data: folders of keypoint ``.npy`` + speech ``.wav`` pairs → 80-frame windows.

Each clip is ``NAME.npy`` (keypoints at 25 fps: ``(T, 402)`` already normalised, or ``(T, 134, 3)`` pixels in the
official 512×512 space) next to ``NAME.wav``. Windows follow the official alignment (MMGT_SPEC 1.7, Q6;
``data/slice.py`` + ``GestureDataset``): for an audio window starting at frame s,

* ``cond`` = audio features [s, s+80),
* ``x`` = keypoints [s−1, s+79) — the pose sequence starts one frame *before* the audio window,
* ``cond_frame`` = keypoints[s−1] = x[0].

Features come from a ``feature_fn(mono_waveform, sample_rate) -> (T, D)``; :func:`stage1_feature_fn` gives the
released model's [WavLM-Large ‖ 35 EDGE] features, :func:`edge_feature_fn` the 35 EDGE features alone (for small
experiments and tests). Features can be cached as safetensors so later runs skip the audio models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.io import wavfile
from torch.utils.data import Dataset

from mmgt_core.audio.waveform import to_mono
from mmgt_core.constants import SMGA_WINDOW_FRAMES, VIDEO_FPS
from mmgt_core.errors import InputError
from mmgt_core.keypoints import normalize

DEFAULT_STRIDE = 12  # ≈ 0.5 s, the paper's slicing step
FeatureFn = Callable[[torch.Tensor, int], torch.Tensor]


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """A .wav file as a mono float32 waveform in [-1, 1] and its sample rate (PCM scaled by the audio front end)."""
    rate, data = wavfile.read(str(path))
    return to_mono(np.asarray(data).T), int(rate)  # wavfile gives (samples, channels)


def load_keypoints(path: Path) -> torch.Tensor:
    """Keypoints file → (T, 402) normalised float32 (pixel (T, 134, 3) arrays are normalised here)."""
    array = np.load(path, allow_pickle=False)
    if array.ndim == 3 and array.shape[1:] == (134, 3):
        return normalize(torch.from_numpy(array.astype(np.float32))).reshape(array.shape[0], 402)
    if array.ndim == 2 and array.shape[1] == 402:
        return torch.from_numpy(array.astype(np.float32))
    raise InputError(str(path), f"keypoints must be (T, 402) normalised or (T, 134, 3) pixels, got {array.shape}.",
                     "Export 25 fps DWPose keypoints in the official layout.")


def edge_feature_fn(start_bpm: Optional[float] = None) -> FeatureFn:
    """The 35 EDGE baseline features only (``cond_feature_dim=35``)."""
    from mmgt_core.audio.edge_features import edge_features

    return lambda wave, rate: edge_features(wave, rate, start_bpm=start_bpm)


def stage1_feature_fn(wavlm_path: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> FeatureFn:
    """The released model's features: [WavLM last layer ‖ 35 EDGE] (1059 dims with WavLM-Large)."""
    from mmgt_core.audio.stage1 import stage1_features
    from mmgt_core.audio.wavlm import load_wavlm

    encoder = load_wavlm(wavlm_path)
    return lambda wave, rate: stage1_features(wave, rate, encoder, device=device, dtype=dtype)


@dataclass(frozen=True)
class Clip:
    """One training clip: normalised keypoints (T, 402) and audio features (T', D), both at 25 fps."""

    name: str
    keypoints: torch.Tensor
    features: torch.Tensor


def window_starts(num_keypoints: int, num_features: int, window: int = SMGA_WINDOW_FRAMES, stride: int = DEFAULT_STRIDE
                  ) -> list[int]:
    """Audio-window starts s ≥ 1 with keypoints [s−1, s+window−1) and features [s, s+window) inside the clip."""
    last = min(num_keypoints - window + 1, num_features - window)
    return list(range(1, last + 1, stride))


def clip_windows(clip: Clip, window: int = SMGA_WINDOW_FRAMES, stride: int = DEFAULT_STRIDE
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All windows of a clip: x (N, window, 402), cond_frame (N, 402), cond (N, window, D)."""
    starts = window_starts(clip.keypoints.shape[0], clip.features.shape[0], window, stride)
    if not starts:
        empty = torch.empty(0, window, clip.keypoints.shape[1])
        return empty, empty[:, 0], torch.empty(0, window, clip.features.shape[1])
    x = torch.stack([clip.keypoints[s - 1:s - 1 + window] for s in starts])
    cond = torch.stack([clip.features[s:s + window] for s in starts])
    return x, x[:, 0].clone(), cond


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(NAME.npy, NAME.wav) pairs in a folder; a keypoint file without its wav is an error."""
    pairs, missing = [], []
    for keypoints in sorted(folder.glob("*.npy")):
        audio = keypoints.with_suffix(".wav")
        (pairs if audio.is_file() else missing).append((keypoints, audio))
    if missing:
        raise InputError(str(folder), f"{len(missing)} keypoint files have no .wav beside them "
                         f"(e.g. {missing[0][0].name}).", "Put NAME.wav next to every NAME.npy.")
    if not pairs:
        raise InputError(str(folder), "no NAME.npy + NAME.wav pairs found.", "Check the data folder.")
    return pairs


def load_clip(keypoints_path: Path, audio_path: Path, feature_fn: FeatureFn, cache_dir: Optional[Path] = None
              ) -> Clip:
    """Load one clip, computing (or reading cached) features."""
    cached = cache_dir / f"{keypoints_path.stem}.features.safetensors" if cache_dir else None
    if cached is not None and cached.is_file():
        features = load_file(str(cached))["features"]
    else:
        wave, rate = read_wav(audio_path)
        features = feature_fn(wave, rate).float().cpu().contiguous()
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            save_file({"features": features}, str(cached))
    return Clip(keypoints_path.stem, load_keypoints(keypoints_path), features)


class SMGAWindowDataset(Dataset):
    """All 80-frame windows of a set of clips, held in memory: items are (x, cond_frame, cond)."""

    def __init__(self, clips: list[Clip], window: int = SMGA_WINDOW_FRAMES, stride: int = DEFAULT_STRIDE) -> None:
        parts = zip(*(clip_windows(clip, window, stride) for clip in clips))
        self.x, self.cond_frame, self.cond = (torch.cat(part) for part in parts)
        if self.x.shape[0] == 0:
            raise InputError("data", f"no clip is long enough for one {window}-frame window (+1 condition frame).",
                             f"Use clips of at least {(window + 1) / VIDEO_FPS:.2f} s.")

    @property
    def feature_dim(self) -> int:
        return int(self.cond.shape[-1])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x[index], self.cond_frame[index], self.cond[index]


def build_dataset(folder: str | Path, feature_fn: FeatureFn, window: int = SMGA_WINDOW_FRAMES,
                  stride: int = DEFAULT_STRIDE, cache_dir: Optional[str | Path] = None) -> SMGAWindowDataset:
    """Read every NAME.npy + NAME.wav pair of ``folder`` into a window dataset."""
    cache = Path(cache_dir) if cache_dir is not None else None
    clips = [load_clip(kp, wav, feature_fn, cache) for kp, wav in find_pairs(Path(folder))]
    return SMGAWindowDataset(clips, window, stride)
