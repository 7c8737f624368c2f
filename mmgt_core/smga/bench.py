"""Speed and memory benchmark of Stage-I generation with the real-size SMGA (random weights).

Run: ``python -m mmgt_core.smga.bench --seconds 3.2 10 --dtypes fp32 bf16``. Reports seconds of compute per
second of audio (median over repeats) and peak memory: process max RSS on CPU (``resource.getrusage``; it
only grows, so it is the peak of the whole process so far) and ``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import resource
import statistics
import sys
from collections.abc import Sequence
from typing import Optional

import torch

from ..bench_harness import bench_parser, timed, write_results
from ..constants import VIDEO_FPS
from ..tiny_models import random_smga
from .diffusion import cosine_schedule, ddim_timesteps, ddim_update
from .generate import generate_pose_sequence
from .model import GestureDecoder, SMGAConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RECIPE_SEED = 1011  # the fixtures' full-size recipe seed; any weights give the same speed


def _max_rss_mib() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


def build_bench_model(device: str, dtype: torch.dtype, config: SMGAConfig = SMGAConfig()) -> GestureDecoder:
    """The full-size SMGA with the fixtures' random-weight recipe, in eval mode."""
    return random_smga(config, RECIPE_SEED).to(device=device, dtype=dtype)


def _inputs(config: SMGAConfig, frames: int, seed: int) -> tuple[torch.Generator, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = 0.5 * torch.randn(frames, config.cond_feature_dim, generator=generator)
    reference = 0.1 * torch.randn(config.nfeats, generator=generator) - 0.3
    return generator, features, reference


def _time_generation(model: GestureDecoder, frames: int, steps: int, seed: int) -> float:
    generator, features, reference = _inputs(model.config, frames, seed)
    return timed(lambda: generate_pose_sequence(model, features, reference, generator, steps=steps,
                                                window=model.config.seq_len), model.input_projection.weight.device)[0]


@torch.inference_mode()
def _official_like_window(model: GestureDecoder, features: torch.Tensor, reference: torch.Tensor,
                          generator: torch.Generator, steps: int) -> torch.Tensor:
    """One window sampled the way the official code does it: two batch-1 forwards per step, each re-encoding
    the audio (the official unconditional pass encodes it too, then discards it). For speed comparison only."""
    device, dtype = model.input_projection.weight.device, model.input_projection.weight.dtype
    schedule = cosine_schedule().to(device)
    frame, cond = reference[None].to(device, dtype), features[None].to(device, dtype)
    x = torch.randn(1, model.config.seq_len, model.config.nfeats, generator=generator).to(device)
    times = ddim_timesteps(steps)
    for t, t_next in zip(times[:-1], times[1:]):
        t_batch = torch.full((1,), t, device=device, dtype=torch.long)
        model.encode_audio(cond)
        unconditional = model(x.to(dtype), frame, cond, t_batch, cond_keep=torch.tensor([False], device=device))
        conditional = model(x.to(dtype), frame, cond, t_batch, cond_keep=torch.tensor([True], device=device))
        x0 = (unconditional + (conditional - unconditional) * 2.0).float().clamp(-1, 1)
        if t_next < 0:
            return x0
        noise = torch.randn(x.shape, generator=generator).to(device)
        x, _ = ddim_update(schedule, x, x0, t, t_next, noise)
    return x


def _time_official_like(model: GestureDecoder, steps: int, seed: int) -> float:
    generator, features, reference = _inputs(model.config, model.config.seq_len, seed)
    return timed(lambda: _official_like_window(model, features, reference, generator, steps),
                 model.input_projection.weight.device)[0]


def run_smga_bench(
    seconds_of_audio: Sequence[float] = (3.2,),
    dtypes: Sequence[str] = ("fp32", "bf16"),
    device: str = "cpu",
    steps: int = 50,
    repeats: int = 3,
    threads: Optional[int] = None,
    config: SMGAConfig = SMGAConfig(),
    baseline: bool = False,
    verbose: bool = True,
) -> dict:
    """Time ``generate_pose_sequence`` per dtype and audio length; returns a JSON-able dict of results.

    ``baseline=True`` also times an official-style single window right after each of our runs (same machine
    load), reported as ``baseline_s_per_audio_s`` and ``speedup``.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    results: dict = {"device": device, "steps": steps, "threads": torch.get_num_threads(), "runs": []}
    for name in dtypes:
        dtype = DTYPES[name]
        if device == "cpu" and dtype == torch.float16:
            continue  # never fp16 on CPU
        model = build_bench_model(device, dtype, config)
        _time_generation(model, config.seq_len, 2, seed=0)  # warm-up: kernels, rotary tables
        for seconds in seconds_of_audio:
            run = _bench_one(model, name, seconds, steps, repeats, baseline, device)
            results["runs"].append(run)
            if verbose:
                print(_describe(run))
        del model
    return results


def _bench_one(model: GestureDecoder, name: str, seconds: float, steps: int, repeats: int, baseline: bool,
               device: str) -> dict:
    frames = max(1, round(seconds * VIDEO_FPS))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timings, baseline_timings = [], []
    for repeat in range(repeats):
        timings.append(_time_generation(model, frames, steps, seed=repeat))
        if baseline:
            baseline_timings.append(_time_official_like(model, steps, seed=repeat))
    median = statistics.median(timings)
    run = {
        "dtype": name,
        "seconds_of_audio": frames / VIDEO_FPS,
        "median_s": median,
        "min_s": min(timings),
        "all_s": timings,
        "compute_s_per_audio_s": median / (frames / VIDEO_FPS),
        "peak_rss_mib": _max_rss_mib(),
    }
    if baseline:
        window_seconds = model.config.seq_len / VIDEO_FPS
        run["baseline_s_per_audio_s"] = statistics.median(baseline_timings) / window_seconds
        run["speedup"] = statistics.median(b / t * frames / model.config.seq_len
                                           for b, t in zip(baseline_timings, timings))
    if device.startswith("cuda"):
        run["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return run


def _describe(run: dict) -> str:
    text = (f"[smga bench] {run['dtype']} {run['seconds_of_audio']:.1f}s audio: median {run['median_s']:.2f}s "
            f"= {run['compute_s_per_audio_s']:.2f} s/s (min {run['min_s']:.2f}s), "
            f"peak RSS {run['peak_rss_mib']:.0f} MiB")
    if "baseline_s_per_audio_s" in run:
        text += f"; official-style {run['baseline_s_per_audio_s']:.2f} s/s, speedup x{run['speedup']:.2f}"
    if "peak_cuda_mib" in run:
        text += f", peak CUDA {run['peak_cuda_mib']:.0f} MiB"
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = bench_parser(None, __doc__)
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.2])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--baseline", action="store_true", help="also time an official-style window")
    args = parser.parse_args(argv)
    results = run_smga_bench(args.seconds, args.dtypes, args.device, args.steps, args.repeats, args.threads,
                             baseline=args.baseline)
    return write_results(results, args.json)


if __name__ == "__main__":
    main()
