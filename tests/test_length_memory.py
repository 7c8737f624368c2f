"""Length costs time, not memory: the audio → video node chain (``bench length``) on 10 s and 60 s of speech.

Runs the benchmark command in a fresh process (so the RSS is the chain's alone) with tiny models at 64×64, one
step, one thread. Sample Video (pose frames and masks drawn per window) and the streamed decode may not need more
at 60 s than 1.3× what they need at 10 s (the issue's target for 600 s vs 10 s), measured as each node's peak RSS
above the RSS when it started. Before the per-window drawing the whole chain measured 1.97 GiB (10 s) vs 9.12 GiB
(60 s) at 64×64 with a 256² reference. The two audio nodes run their encoders over windows of up to 30 s, a working
set a 10 s clip does not fill (at 64×64 it outweighs the video stages: 53 vs 83 MiB for the whole chain), so the
whole chain's ratio is printed, not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MEMORY_TARGET = 1.3
NOISE_MIB = 16.0  # allocator and heap-trim granularity: below this the ratio is measurement noise

pytestmark = pytest.mark.slow


def test_sixty_seconds_need_no_more_memory_than_ten(tmp_path: Path) -> None:
    report = tmp_path / "length.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "mmgt_core", "bench", "length", "--seconds", "10", "60", "--size",
                           "64", "--threads", "1", "--json", str(report)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(report.read_text())
    short, long = results["runs"]
    assert (short["frames"], long["frames"]) == (250, 1500)
    for node in ("Sample Video", "streamed decode"):
        short_mib, long_mib = short["stage_own_mib"][node], long["stage_own_mib"][node]
        assert long_mib <= MEMORY_TARGET * short_mib + NOISE_MIB, (
            f"{node}: 60 s peaked at +{long_mib:.0f} MiB, 10 s at +{short_mib:.0f} MiB above the node's start")
    assert "peak 60 s / 10 s" in done.stdout
