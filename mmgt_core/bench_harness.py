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
from typing import Any, ClassVar, Optional

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


_STATUS_FILE = "/proc/self/status"
_CLEAR_REFS_FILE = "/proc/self/clear_refs"
_RESET_PEAK_RSS = "5"  # what clear_refs takes to reset the kernel's peak-RSS mark (VmHWM) to the current RSS


def _kernel_peak_rss_bytes() -> Optional[int]:
    """The kernel's peak-RSS mark (Linux VmHWM) in bytes; None where there is none."""
    try:
        with open(_STATUS_FILE, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_kernel_peak_rss() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open(_CLEAR_REFS_FILE, "w", encoding="ascii") as handle:
            handle.write(_RESET_PEAK_RSS)
        return True
    except OSError:
        return False


class PeakRSS:
    """Context manager: the highest RSS above the RSS at entry.

    On Linux it reads the kernel's own peak-RSS mark (VmHWM, reset through ``/proc/self/clear_refs`` at every entry),
    so the peak is exact, however short the spike. Meters may nest (a whole run around per-stage meters, on one
    thread): an inner meter folds the mark into every open meter before it resets it. Elsewhere a thread polls the
    RSS every ``interval`` seconds, which can miss short spikes.
    """

    _open_meters: ClassVar[list[PeakRSS]] = []  # the kernel-mark meters now open, outermost first

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.exact = False  # True when the kernel's mark gave the peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._fold_kernel_peak()
        self.exact = _kernel_peak_rss_bytes() is not None and _reset_kernel_peak_rss()
        self.baseline = self.peak = _rss_bytes()
        if self.exact:
            PeakRSS._open_meters.append(self)
        else:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.exact:
            self._fold_kernel_peak()
            PeakRSS._open_meters.remove(self)
        else:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @staticmethod
    def _fold_kernel_peak() -> None:
        """Raise every open meter's peak to the kernel's mark (the highest RSS since the last reset)."""
        if not PeakRSS._open_meters:
            return
        mark = _kernel_peak_rss_bytes()
        for meter in PeakRSS._open_meters if mark is not None else ():
            meter.peak = max(meter.peak, mark)

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
