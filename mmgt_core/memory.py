"""Working-memory estimates: the activations one unit of work needs on top of the weights.

A host that manages model memory (ComfyUI's ``load_models_gpu(..., memory_required=...)``) frees this much room
before our networks compute, and the VAE decode picks a chunk size that fits the free memory. Each estimate is a
straight line in the amount of work, ``fixed + per_unit * units``, scaled by the compute dtype's element size:

* Stage-II window: units = CFG batch x window frames x latent pixels (h/8 x w/8), one denoising-UNet forward
  with the reference bank, pose features, masks and audio tokens of that window;
* VAE decode chunk: units = frames x output pixels;
* Stage-I (SMGA) window: units = sequences in the batch (CFG pairs x best_of) of one 80-frame window.

The lines were calibrated by measuring on a CPU with the real-size configurations (random weights, bf16):
``python -m mmgt_core.memory --measure`` prints measured vs estimated numbers. A CPU run's peak RSS above the
loaded-weights baseline stands in for the GPU's peak allocation; GPU attention kernels (flash / memory-efficient
SDPA) need less than the CPU's, so the estimates lean to the safe side.
"""

from __future__ import annotations

import argparse
import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from .constants import ENCODER_SAMPLE_RATE, LATENT_STRIDE, VIDEO_FPS

MIB = 2**20
CALIBRATION_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class LinearEstimate:
    """``fixed + per_unit * units`` bytes at the calibration dtype (bf16); scaled by element size."""

    fixed_bytes: float
    per_unit_bytes: float

    def bytes_for(self, units: float, dtype: torch.dtype) -> int:
        scale = _element_size(dtype) / _element_size(CALIBRATION_DTYPE)
        return int((self.fixed_bytes + self.per_unit_bytes * units) * scale)


# Calibrated with `python -m mmgt_core.memory --measure` (CPU, bf16, real-size configs, random weights); see the
# report printed by that command for the measured points these lines pass through (rounded up).
STAGE2_WINDOW = LinearEstimate(fixed_bytes=128 * MIB, per_unit_bytes=24 * 1024)  # measured 270 / 430 MiB at 2x4 /
# 2x8 frames of 256² (8192 / 16384 units): 20 KiB per unit + 110 MiB; the margin covers attention growing faster
# than linearly at larger sizes (GPU kernels do not store the score matrices)
VAE_DECODE = LinearEstimate(fixed_bytes=96 * MIB, per_unit_bytes=1400)  # measured 163 / 243 MiB at 1 / 2 x 256²
SMGA_WINDOW = LinearEstimate(fixed_bytes=64 * MIB, per_unit_bytes=8 * MIB)  # measured 32 MiB at batch 2 (tiny)
# The audio and image encoders ask for a fixed amount: wav2vec2-base on 20 s of speech (fp32) was measured (see
# --parts wav2vec2); WavLM-Large (20 s chunks) and CLIP at 224 px were not. ComfyUI reserves at least ~1.2 GB of
# working memory for any load anyway (its minimum inference memory).
ENCODER_WORKING_BYTES = 1024 * MIB


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def latent_pixels(width: int, height: int) -> int:
    """Pixels of one SD latent frame (1/8 of each side)."""
    return (width // LATENT_STRIDE) * (height // LATENT_STRIDE)


def stage2_window_bytes(width: int, height: int, window_frames: int, cfg_batch: int, dtype: torch.dtype) -> int:
    """Peak working memory of one Stage-II denoising window (CFG batch x window frames) at width x height."""
    return STAGE2_WINDOW.bytes_for(cfg_batch * window_frames * latent_pixels(width, height), dtype)


def vae_decode_bytes(width: int, height: int, chunk_frames: int, dtype: torch.dtype) -> int:
    """Peak working memory of decoding ``chunk_frames`` frames at width x height with the SD VAE."""
    return VAE_DECODE.bytes_for(chunk_frames * width * height, dtype)


def smga_window_bytes(batch: int, dtype: torch.dtype) -> int:
    """Peak working memory of one SMGA 80-frame window for ``batch`` sequences (2 per CFG pair x best_of)."""
    return SMGA_WINDOW.bytes_for(batch, dtype)


def decode_chunk_that_fits(free_bytes: Optional[int], width: int, height: int, dtype: torch.dtype,
                           requested: int) -> int:
    """The largest chunk <= ``requested`` whose decode estimate fits ``free_bytes`` (at least 1; ``requested``
    when the free memory is unknown, e.g. on a CPU)."""
    chunk = max(1, requested)
    while free_bytes is not None and chunk > 1 and vae_decode_bytes(width, height, chunk, dtype) > free_bytes:
        chunk -= 1
    return chunk


# ---------------------------------------------------------------------------------------------------------------
# Calibration: measure the peak working memory on this machine and compare it with the estimates


def decoded_frames_bytes(frames: int, width: int, height: int) -> int:
    """Memory of a decoded float32 IMAGE batch (T, H, W, 3) - what a whole-video decode allocates at once."""
    return int(frames) * int(width) * int(height) * 3 * 4


def release_freed_heap() -> None:
    """Hand memory the process has freed but the C allocator keeps back to the OS (glibc ``malloc_trim``; nothing
    elsewhere). Run after a stage that went through a whole clip, so the freed pieces of its many window-sized
    temporaries do not stay in the RSS while the next stage runs. Takes milliseconds; no Python objects are
    touched."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def available_memory_bytes() -> Optional[int]:
    """Memory the OS can still give this process (Linux ``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _measure_stage2(width: int, height: int, frame_counts: Sequence[int], dtype: torch.dtype) -> list[dict]:
    from mmgt_core.bench_harness import PeakRSS, return_freed_memory
    from mmgt_core.tiny_models import random_video_net
    from mmgt_core.video.bench import _window_forward
    from mmgt_core.video.config import VideoNetConfig
    from mmgt_core.video.sampler import SamplingSettings

    net = random_video_net(VideoNetConfig.sd15(), dtype)
    rows = []
    for frames in frame_counts:
        settings = SamplingSettings(width=width, height=height, steps=1, context_frames=frames)
        return_freed_memory()
        with PeakRSS() as peak:
            _window_forward(net, settings, dtype)()  # builds the reference bank too, as a run does
        rows.append({"what": "stage2_window", "size": f"{width}x{height}", "frames": frames, "cfg_batch": 2,
                     "measured_mib": peak.increase_mib,
                     "estimated_mib": stage2_window_bytes(width, height, frames, 2, dtype) / MIB})
    return rows


def _measure_vae(width: int, height: int, chunks: Sequence[int], dtype: torch.dtype) -> list[dict]:
    from mmgt_core.bench_harness import PeakRSS, return_freed_memory
    from mmgt_core.tiny_models import random_vae
    from mmgt_core.video.vae_codec import decode_latents

    vae = random_vae(False, dtype)
    rows = []
    for chunk in chunks:
        latents = torch.randn(chunk, 4, height // LATENT_STRIDE, width // LATENT_STRIDE)
        return_freed_memory()
        with PeakRSS() as peak:
            decode_latents(vae, latents, chunk_frames=chunk)
        rows.append({"what": "vae_decode", "size": f"{width}x{height}", "frames": chunk,
                     "measured_mib": peak.increase_mib,
                     "estimated_mib": vae_decode_bytes(width, height, chunk, dtype) / MIB})
    return rows


def _measure_smga(batches: Sequence[int], dtype: torch.dtype) -> list[dict]:
    from mmgt_core.bench_harness import PeakRSS, return_freed_memory
    from mmgt_core.smga.bench import _inputs, build_bench_model
    from mmgt_core.smga.generate import generate_pose_sequence

    model = build_bench_model("cpu", dtype)
    rows = []
    for best_of in batches:
        generator, features, reference = _inputs(model.config, model.config.seq_len, 0)
        return_freed_memory()
        with PeakRSS() as peak:
            generate_pose_sequence(model, features, reference, generator, steps=1, best_of=best_of,
                                   window=model.config.seq_len)
        batch = 2 * best_of
        window = model.config.seq_len
        rows.append({"what": "smga_window", "size": f"{window} frames", "frames": window, "cfg_batch": batch,
                     "measured_mib": peak.increase_mib, "estimated_mib": smga_window_bytes(batch, dtype) / MIB})
    return rows


def _measure_wav2vec2(seconds: float) -> list[dict]:
    from mmgt_core.audio.wav2vec import wav2vec2_features
    from mmgt_core.bench_harness import PeakRSS, return_freed_memory
    from mmgt_core.tiny_models import random_wav2vec

    model = random_wav2vec(False)
    wave = torch.sin(torch.arange(int(seconds * ENCODER_SAMPLE_RATE)) * 0.05) * 0.3
    return_freed_memory()
    with PeakRSS() as peak:
        wav2vec2_features(model, wave, ENCODER_SAMPLE_RATE)
    return [{"what": "wav2vec2", "size": f"{seconds:.0f} s", "frames": round(seconds * VIDEO_FPS),
             "measured_mib": peak.increase_mib, "estimated_mib": ENCODER_WORKING_BYTES / MIB}]


def measure(width: int = 256, height: int = 256, frame_counts: Sequence[int] = (4, 8),
            vae_chunks: Sequence[int] = (1, 2), smga_best_of: Sequence[int] = (1, 4),
            parts: Sequence[str] = ("smga", "vae", "stage2")) -> list[dict]:
    """Measured (peak RSS above the loaded-model baseline) vs estimated working memory, bf16 on this CPU."""
    dtype = CALIBRATION_DTYPE
    rows: list[dict] = []
    if "smga" in parts:
        rows += _measure_smga(smga_best_of, dtype)
    if "vae" in parts:
        rows += _measure_vae(width, height, vae_chunks, dtype)
    if "stage2" in parts:
        rows += _measure_stage2(width, height, frame_counts, dtype)
    if "wav2vec2" in parts:
        rows += _measure_wav2vec2(20.0)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmgt_core.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", action="store_true", help="build the real-size nets (random weights, bf16, "
                        "about 5 GB of RAM) and print measured vs estimated working memory")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("W", "H"))
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8], help="Stage-II window frames to measure")
    parser.add_argument("--parts", nargs="+", default=["smga", "vae", "stage2"],
                        choices=["smga", "vae", "stage2", "wav2vec2"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = args.size
    if args.measure:
        rows = measure(width, height, args.frames, parts=args.parts)
    else:
        rows = [{"what": "stage2_window", "size": f"{w}x{w}", "frames": f, "cfg_batch": 2, "measured_mib": None,
                 "estimated_mib": stage2_window_bytes(w, w, f, 2, torch.float16) / MIB}
                for w in (512, 768) for f in (12, 16)]
        rows += [{"what": "vae_decode", "size": "512x512", "frames": c, "measured_mib": None,
                  "estimated_mib": vae_decode_bytes(512, 512, c, torch.float16) / MIB} for c in (1, 4, 8)]
    for row in rows:
        measured = "-" if row["measured_mib"] is None else f"{row['measured_mib']:8.0f}"
        print(f"{row['what']:14s} {row['size']:>10s} frames={row['frames']!s:>3s} measured_mib={measured:>8s} "
              f"estimated_mib={row['estimated_mib']:8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
