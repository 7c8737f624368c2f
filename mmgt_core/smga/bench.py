"""Speed and memory benchmark of Stage-I generation with the real-size SMGA (random weights).

Run: ``python -m mmgt_core.smga.bench --seconds 3.2 10 --dtypes fp32 bf16``. Reports seconds of compute per
second of audio (median over repeats) and peak memory: process max RSS on CPU (``resource.getrusage``; it
only grows, so it is the peak of the whole process so far) and ``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Optional

import torch

from .generate import generate_pose_sequence
from .model import GestureDecoder, SMGAConfig, init_weights_recipe

FPS = 25
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RECIPE_SEED = 1011  # the fixtures' full-size recipe seed; any weights give the same speed
RECIPE_OVERRIDES = {"final_layer.weight": 0.1, "final_layer.bias": 0.1}


def _max_rss_mib() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux


def build_bench_model(device: str, dtype: torch.dtype, config: SMGAConfig = SMGAConfig()) -> GestureDecoder:
    """The full-size SMGA with the fixtures' random-weight recipe, in eval mode."""
    model = GestureDecoder(config)
    init_weights_recipe(model, RECIPE_SEED, RECIPE_OVERRIDES)
    return model.to(device=device, dtype=dtype).eval()


def _time_generation(model: GestureDecoder, frames: int, steps: int, seed: int) -> float:
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    features = 0.5 * torch.randn(frames, config.cond_feature_dim, generator=generator)
    reference = 0.1 * torch.randn(config.nfeats, generator=generator) - 0.3
    device = model.input_projection.weight.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    generate_pose_sequence(model, features, reference, generator, steps=steps, window=config.seq_len)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_smga_bench(
    seconds_of_audio: Sequence[float] = (3.2,),
    dtypes: Sequence[str] = ("fp32", "bf16"),
    device: str = "cpu",
    steps: int = 50,
    repeats: int = 3,
    threads: Optional[int] = None,
    config: SMGAConfig = SMGAConfig(),
    verbose: bool = True,
) -> dict:
    """Time ``generate_pose_sequence`` per dtype and audio length; returns a JSON-able dict of results."""
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
            frames = max(1, round(seconds * FPS))
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            timings = [_time_generation(model, frames, steps, seed=run) for run in range(repeats)]
            median = statistics.median(timings)
            run = {
                "dtype": name,
                "seconds_of_audio": frames / FPS,
                "median_s": median,
                "min_s": min(timings),
                "all_s": timings,
                "compute_s_per_audio_s": median / (frames / FPS),
                "peak_rss_mib": _max_rss_mib(),
            }
            if device.startswith("cuda"):
                run["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
            results["runs"].append(run)
            if verbose:
                print(f"[smga bench] {name} {run['seconds_of_audio']:.1f}s audio: median {median:.2f}s "
                      f"= {run['compute_s_per_audio_s']:.2f} s/s (min {min(timings):.2f}s), "
                      f"peak RSS {run['peak_rss_mib']:.0f} MiB"
                      + (f", peak CUDA {run['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in run else ""))
        del model
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.2])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    results = run_smga_bench(args.seconds, args.dtypes, args.device, args.steps, args.repeats, args.threads)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    main()
