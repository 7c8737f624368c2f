"""Measure the silence gate on SMGA-generated keypoints: mean lip opening in speech and in pauses, before/after.

``python -m mmgt_core.motion_bench [--wav speech.wav] [--smga smga.safetensors --wavlm folder]`` prints the numbers.
Without model files it writes the tiny random SMGA and WavLM to a temporary folder (numbers then show what the gate
does to whatever the model generates, not the real model's lip motion). Without a wav it uses a speech-like
signal (voiced syllables) with two pauses.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from .constants import ENCODER_SAMPLE_RATE
from .motion_controls import SilenceGate, gate_lips, lip_opening, speech_weights

SEGMENTS = ((1.2, True), (1.0, False), (1.2, True), (0.8, False), (1.0, True))  # (seconds, speaking)


def speech_with_pauses(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A voiced, syllable-modulated signal with pauses, and the (samples,) truth of where it speaks."""
    generator = np.random.default_rng(seed)
    parts, truth = [], []
    for seconds, speaking in SEGMENTS:
        t = np.arange(int(seconds * ENCODER_SAMPLE_RATE)) / ENCODER_SAMPLE_RATE
        if speaking:
            pitch = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
            voice = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / ENCODER_SAMPLE_RATE) / k for k in range(1, 8))
            syllables = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2.0 * t))
            parts.append(0.2 * voice * syllables)
        else:
            parts.append(0.001 * generator.standard_normal(t.size))  # room noise
        truth.append(np.full(t.size, speaking))
    return torch.from_numpy(np.concatenate(parts)).float(), np.concatenate(truth)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wav", help="speech with pauses (any rate); default: a synthetic one")
    parser.add_argument("--smga", help="SMGA checkpoint; default: the tiny random one")
    parser.add_argument("--wavlm", help="WavLM folder or .pt; default: the tiny random one")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threshold-db", type=float, default=-35.0)
    parser.add_argument("--hang", type=float, default=0.25)
    args = parser.parse_args(argv)

    from .audio.stage1 import stage1_features
    from .audio.wavlm import load_wavlm
    from .pipeline import pose_from_features
    from .smga.model import load_smga
    from .tiny_models import synthetic_reference_pose, write_tiny_smga, write_tiny_wavlm

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as folder:
        smga_path, wavlm_path = args.smga or Path(folder) / "smga.safetensors", args.wavlm or Path(folder) / "wavlm"
        if args.smga is None:
            write_tiny_smga(smga_path)
        if args.wavlm is None:
            write_tiny_wavlm(wavlm_path)
        if args.wav:
            import librosa

            samples, _ = librosa.load(args.wav, sr=ENCODER_SAMPLE_RATE, mono=True)
            wave = torch.from_numpy(samples)
        else:
            wave, _ = speech_with_pauses()
        features = stage1_features(wave, ENCODER_SAMPLE_RATE, load_wavlm(wavlm_path))
        smga = load_smga(str(smga_path))
        sequence = pose_from_features(smga, features, synthetic_reference_pose(512, 512), seed=0, steps=args.steps)
    gate = SilenceGate(args.threshold_db, args.hang)
    gated, weights = gate_lips(sequence, wave, ENCODER_SAMPLE_RATE, gate)
    silent = speech_weights(wave, ENCODER_SAMPLE_RATE, sequence.fps, sequence.num_frames,
                            SilenceGate(args.threshold_db, 0.0, 0.0))
    pause, speech = silent < 0.5, silent >= 0.5
    before, after = lip_opening(sequence.keypoints.float()).numpy(), lip_opening(gated.keypoints.float()).numpy()
    print(f"frames {sequence.num_frames} at {sequence.fps:g} fps; pause frames {int(pause.sum())}, speech frames "
          f"{int(speech.sum())}; gate threshold {args.threshold_db:g} dB, hang {args.hang:g} s; "
          f"SMGA {'tiny random' if args.smga is None else args.smga}, {args.steps} steps, float32 CPU")
    print(f"mean lip opening (px, 512×512 canvas)  before gate: speech {before[speech].mean():.3f}, "
          f"pause {before[pause].mean():.3f}")
    print(f"mean lip opening (px, 512×512 canvas)  after gate:  speech {after[speech].mean():.3f}, "
          f"pause {after[pause].mean():.3f}")
    closed = weights == 0
    print(f"pause frames past hang and ease (gate fully closed): {int(closed.sum())}; lip opening there before "
          f"{before[closed].mean():.3f}, after {after[closed].mean():.3f}")
    print(f"frames the gate touched: {int((weights < 1).sum())}")


if __name__ == "__main__":
    main()
