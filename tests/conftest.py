"""Shared test setup: the official fixtures folder and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from official_fixtures import OFFICIAL_FIXTURES

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("MMGT_NO_PROGRESS", "1")
# One thread: on a shared 2-core machine two threads per process oversubscribe the cores and small
# models slow down by 10-50x (measured); CI runs alone but keeps the same setting for stable timings.
torch.set_num_threads(int(os.environ.get("MMGT_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The official parity fixtures (vendored in tests/fixtures/official, or $MMGT_FIXTURES)."""
    if not OFFICIAL_FIXTURES.is_dir():
        pytest.fail(f"official fixtures not found at {OFFICIAL_FIXTURES}; unset MMGT_FIXTURES to use the vendored "
                    "copy in tests/fixtures/official, or point it at a folder holding them")
    return OFFICIAL_FIXTURES


STUB_DIR = Path(__file__).resolve().parent / "comfy_stub"


def _purge_pack_modules() -> None:
    import sys

    for name in list(sys.modules):
        if name == "nodes" or name.startswith("nodes.") or name in ("folder_paths", "core_nodes") or \
                name == "comfy" or name.startswith("comfy."):
            del sys.modules[name]


@pytest.fixture()
def comfy_host(tmp_path, monkeypatch):
    """Import the pack's nodes as inside ComfyUI (stubbed folder_paths/comfy); yields all node classes."""
    import importlib
    import sys

    monkeypatch.setenv("MMGT_STUB_COMFY_ROOT", str(tmp_path / "comfy"))
    monkeypatch.syspath_prepend(str(STUB_DIR))
    _purge_pack_modules()
    nodes_pkg = importlib.import_module("nodes")
    core = importlib.import_module("core_nodes")
    classes = {**core.NODE_CLASS_MAPPINGS, **nodes_pkg.NODE_CLASS_MAPPINGS}
    yield {"nodes": nodes_pkg, "classes": classes, "folder_paths": sys.modules["folder_paths"],
           "root": tmp_path / "comfy"}
    _purge_pack_modules()
