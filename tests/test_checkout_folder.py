"""The README's test command works in a checkout whose folder name is not a Python identifier (ComfyUI-MMGT)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pytest_runs_in_a_folder_named_like_the_github_repository(tmp_path: Path) -> None:
    checkout = tmp_path / "ComfyUI-MMGT"
    checkout.mkdir()
    for name in ("__init__.py", "pyproject.toml"):
        shutil.copy2(REPO / name, checkout / name)
    (checkout / "tests").mkdir()
    (checkout / "tests" / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=checkout,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
