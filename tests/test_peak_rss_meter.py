"""The benchmarks' peak-RSS meter: exact on Linux (the kernel's VmHWM mark), nested meters included."""

from __future__ import annotations

import pytest
import torch

from mmgt_core.bench_harness import PeakRSS, _kernel_peak_rss_bytes, _reset_kernel_peak_rss

SPIKE_MIB = 96


def _spike(mib: int) -> None:
    """Touch ``mib`` MiB and free it at once: a spike far shorter than a 20 ms poll interval can promise to see."""
    block = torch.ones(mib * 2**20 // 4)  # written, so every page is resident
    del block


@pytest.mark.skipif(_kernel_peak_rss_bytes() is None or not _reset_kernel_peak_rss(),
                    reason="no resettable kernel peak-RSS mark (Linux VmHWM) here")
def test_nested_meters_see_a_spike_the_poll_can_miss_and_the_outer_keeps_it() -> None:
    with PeakRSS(interval=3600.0) as outer:  # an interval no poll would ever reach: only the kernel mark can see it
        with PeakRSS(interval=3600.0) as first:
            _spike(SPIKE_MIB)
        with PeakRSS(interval=3600.0) as quiet:  # resets the mark again: the outer must already hold the spike
            pass
    assert first.exact and quiet.exact and outer.exact
    assert first.increase_mib >= 0.9 * SPIKE_MIB
    assert quiet.increase_mib < 0.5 * SPIKE_MIB
    assert outer.increase_mib >= 0.9 * SPIKE_MIB
