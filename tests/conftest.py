"""Shared test setup: the official fixtures folder and small helpers."""

from __future__ import annotations

import importlib
import os
import sys
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


@pytest.fixture(scope="module")
def audio_dir(fixtures_dir: Path) -> Path:
    """The official audio fixtures (speech clip, tiny WavLM and wav2vec2, their features)."""
    return fixtures_dir / "audio"


@pytest.fixture(scope="module")
def stage2(fixtures_dir: Path) -> Path:
    """The official Stage-II fixtures (tiny SD1.5-layout net, VAE, CLIP image encoder, pipeline run)."""
    return fixtures_dir / "stage2"


@pytest.fixture(scope="module")
def tiny_net(stage2: Path):
    """The fixtures' tiny video net (net_tiny.safetensors), loaded once per test module."""
    from mmgt_core.video.net import load_video_net
    from tiny_fixture import tiny_net_config

    return load_video_net(stage2 / "net_tiny.safetensors", tiny_net_config(stage2.parent))


@pytest.fixture(scope="module")
def tiny_vae(stage2: Path):
    """The fixtures' tiny AutoencoderKL in eval mode, loaded once per test module."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(stage2 / "tiny_vae").eval()


STUB_DIR = Path(__file__).resolve().parent / "comfy_stub"


def _purge_pack_modules() -> None:
    for name in list(sys.modules):
        if name == "nodes" or name.startswith("nodes.") or name in ("folder_paths", "core_nodes") or \
                name == "comfy" or name.startswith("comfy."):
            del sys.modules[name]


@pytest.fixture()
def comfy_host(tmp_path, monkeypatch):
    """Import the pack's nodes as inside ComfyUI (stubbed folder_paths/comfy); yields all node classes."""
    monkeypatch.setenv("MMGT_STUB_COMFY_ROOT", str(tmp_path / "comfy"))
    monkeypatch.syspath_prepend(str(STUB_DIR))
    _purge_pack_modules()
    nodes_pkg = importlib.import_module("nodes")
    core = importlib.import_module("core_nodes")
    classes = {**core.NODE_CLASS_MAPPINGS, **nodes_pkg.NODE_CLASS_MAPPINGS}
    yield {"nodes": nodes_pkg, "classes": classes, "folder_paths": sys.modules["folder_paths"],
           "root": tmp_path / "comfy"}
    _purge_pack_modules()


@pytest.fixture()
def workflow_host(comfy_host, fixtures_dir):
    """The stubbed ComfyUI with tiny models and the shipped workflows' input files in place."""
    pytest.importorskip("onnx", reason="the DWPose stand-in models need the dev package onnx")
    from workflow_assets import install_tiny_models, write_inputs

    install_tiny_models(Path(comfy_host["folder_paths"].get_folder_paths("mmgt")[0]), fixtures_dir)
    write_inputs(Path(comfy_host["folder_paths"].get_input_directory()), fixtures_dir)
    return comfy_host
