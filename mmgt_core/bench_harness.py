"""What the benchmark commands share: wall-clock timing, the peak-RSS meter, and the --repeats/--threads/--json
options with the JSON results file they write."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import torch


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import psutil

        return int(psutil.Process().memory_info().rss)


def return_freed_memory() -> None:
    """Collect garbage and give freed heap memory back to the OS so the next peak-RSS baseline starts clean."""
    import gc

    from mmgt_core.memory import release_freed_heap

    gc.collect()
    release_freed_heap()


class PeakRSS:
    """Context manager: the highest RSS seen (polled every 20 ms) above the RSS at entry."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakRSS:
        self.baseline = self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    @property
    def increase_mib(self) -> float:
        return (self.peak - self.baseline) / 2**20


def timed(function: Callable[[], Any], device: Optional[torch.device] = None) -> tuple[float, Any]:
    """Seconds ``function()`` takes, and its result; on a CUDA ``device`` the queued work is waited for."""
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def median_time(function: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``function``, after one untimed warm-up call."""
    function()
    return statistics.median(timed(function)[0] for _ in range(repeats))


def bench_parser(prog: Optional[str], description: Optional[str]) -> argparse.ArgumentParser:
    """A benchmark's argument parser with the options every benchmark takes: --repeats, --threads, --json."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser


def write_results(results: dict[str, Any], path: Optional[str]) -> int:
    """Write ``results`` as indented JSON to ``path`` when one is given; returns the exit status (0)."""
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0
