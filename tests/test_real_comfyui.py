"""Opt-in: the pack inside a real ComfyUI. Skipped unless COMFYUI_PATH points to a ComfyUI checkout.

Starts that ComfyUI on the CPU on 127.0.0.1 (a free port) with a temporary base directory whose custom_nodes
holds a link to this pack, so the checkout's own models, input and output folders are never touched. Checks the
pack imports cleanly and every node is in /object_info, that each UI workflow converts to its API twin with the
real node definitions, then posts each API twin (tiny random models, TINY_RUN_OVERRIDES), waits for /history
and checks the saved videos (frame count, fps, audio). The server is stopped at the end.

    COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=/path/to/its/python] python -m pytest -s tests/test_real_comfyui.py

COMFYUI_PYTHON is the interpreter that runs ComfyUI (default: the one running pytest); it needs ComfyUI's
requirements and this pack's. The test process itself needs the dev packages (onnx, espeak-ng for the speech).
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

from ui_to_api import convert
from workflow_assets import (
    EXPECTED_VIDEOS,
    REPO_ROOT,
    install_tiny_models,
    load_twin,
    tiny_twin,
    ui_workflow_names,
    video_summary,
    write_inputs,
)

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
pytestmark = pytest.mark.skipif(not (COMFYUI_PATH and (Path(COMFYUI_PATH) / "main.py").is_file()),
                                reason="set COMFYUI_PATH to a ComfyUI checkout to run the real-host check")

PACK_LINK_NAME = "ComfyUI-MMGT"
STARTUP_TIMEOUT_S = 180
PROMPT_TIMEOUT_S = 900
STOP_TIMEOUT_S = 30


# ----------------------------------------------------------------------------------------------------- the server


def pack_node_ids() -> set[str]:
    """Node IDs the pack declares: the keys of NODE_CLASS_MAPPINGS in every nodes/*.py (read, not imported)."""
    ids: set[str] = set()
    for module in (REPO_ROOT / "nodes").glob("*.py"):
        for statement in ast.parse(module.read_text()).body:
            if isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == "NODE_CLASS_MAPPINGS"
                                                         for t in statement.targets) \
                    and isinstance(statement.value, ast.Dict):
                ids.update(key.value for key in statement.value.keys if isinstance(key, ast.Constant))
    return ids


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ComfyServer:
    """A ComfyUI process and the little HTTP the test needs."""

    def __init__(self, base: Path, port: int) -> None:
        self.base, self.port = base, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = base / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self.startup_s = 0.0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}  # it slows start-up 2x
        command = [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
                   "--port", str(self.port), "--disable-auto-launch", "--base-directory", str(self.base),
                   "--verbose", "DEBUG"]  # DEBUG: ComfyUI logs each model it unloads
        started = time.monotonic()
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(command, cwd=COMFYUI_PATH, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)
        while time.monotonic() - started < STARTUP_TIMEOUT_S:
            if self.process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {self.process.returncode} at start-up:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                self.startup_s = time.monotonic() - started
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.25)
        pytest.fail(f"ComfyUI did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post_prompt(self, prompt: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            pytest.fail(f"POST /prompt was refused ({error.code}): {error.read().decode(errors='replace')}")

    def post(self, path: str, data: dict[str, Any]) -> None:
        request = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30):
            pass

    def wait_for_history(self, prompt_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + PROMPT_TIMEOUT_S
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.5)
        pytest.fail(f"prompt {prompt_id} did not finish within {PROMPT_TIMEOUT_S} s:\n{self.log_tail()}")


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory, fixtures_dir):
    """A running ComfyUI with the pack linked in, tiny models and the workflows' inputs; stopped afterwards."""
    base = tmp_path_factory.mktemp("comfyui_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_LINK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    install_tiny_models(base / "models" / "mmgt", fixtures_dir)
    write_inputs(base / "input", fixtures_dir)
    server = ComfyServer(base, free_port())
    try:
        server.start()
        print(f"\nComfyUI answered after {server.startup_s:.1f} s on {server.url}")
        yield server
    finally:
        server.stop()
        (base / "custom_nodes" / PACK_LINK_NAME).unlink()  # leave no link to the repository in the temp folder
        print(f"ComfyUI stopped (exit code {server.process.returncode if server.process else None})")


# ------------------------------------------------------------------------------------------------------ the checks


def test_pack_imports_cleanly_and_every_node_is_listed(comfyui):
    log = comfyui.log()
    pack_lines = [line for line in log.splitlines() if PACK_LINK_NAME in line or "[MMGT]" in line]
    assert not [line for line in pack_lines if "IMPORT FAILED" in line or "Cannot import" in line], \
        "\n".join(pack_lines)
    assert not [line for line in pack_lines if "nodes disabled" in line], "\n".join(pack_lines)
    info = comfyui.get("/object_info")
    expected = pack_node_ids()
    assert expected and not expected - set(info), f"missing from /object_info: {sorted(expected - set(info))}"
    assert {info[node]["python_module"] for node in expected} == {f"custom_nodes.{PACK_LINK_NAME}"}
    print(f"ComfyUI {comfyui.get('/system_stats')['system']['comfyui_version']}: {len(info)} node types, "
          f"{len(expected)} from MMGT")


@pytest.mark.parametrize("name", ui_workflow_names())
def test_ui_workflow_converts_to_its_twin_with_the_real_node_definitions(comfyui, name):
    info = comfyui.get("/object_info")
    workflow = json.loads((REPO_ROOT / "workflows" / f"{name}.json").read_text())
    missing = {node["type"] for node in workflow["nodes"] if node["type"] not in info} - {"Note", "MarkdownNote"}
    assert not missing, f"{name} uses node types this ComfyUI does not have: {missing}"
    assert convert(workflow, {node: spec["input"] for node, spec in info.items()}) == load_twin(name)


@pytest.mark.parametrize("name", ui_workflow_names())
def test_api_twin_runs_and_saves_the_expected_videos(comfyui, name):
    started = time.monotonic()
    answer = comfyui.post_prompt(tiny_twin(name))
    assert answer.get("node_errors") == {}, answer
    entry = comfyui.wait_for_history(answer["prompt_id"])
    seconds = time.monotonic() - started
    errors = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert entry["status"]["status_str"] == "success", json.dumps(errors, indent=1)[:6000]
    saved = {item["filename"]: Path(comfyui.base) / "output" / item["subfolder"] / item["filename"]
             for output in entry["outputs"].values() for item in output.get("images", [])}
    summary = []
    for prefix, frames, audio_seconds in EXPECTED_VIDEOS[name]:
        folder, stem = prefix.rsplit("/", 1)
        matches = [path for file, path in saved.items() if path.parent.name == folder and
                   file.startswith(f"{stem}_0")]
        assert len(matches) == 1, f"{prefix}: saved files {sorted(saved)}"
        decoded, fps, audio_length = video_summary(matches[0])
        assert (decoded, fps) == (frames, 25.0), prefix
        assert (audio_length is None) == (audio_seconds is None), prefix
        if audio_seconds is not None:
            assert audio_length == pytest.approx(audio_seconds, abs=0.1), prefix
        summary.append(f"{matches[0].name}: {decoded} frames @ {fps:g} fps, audio "
                       f"{'none' if audio_length is None else f'{audio_length:.2f} s'}")
    print(f"\n{name}: success in {seconds:.1f} s; " + "; ".join(summary))


def test_core_latent_nodes_take_sample_videos_latent_output(comfyui):
    """Sample Video's LATENT (a frames-first view of the one latent storage, not a contiguous copy) through core
    Upscale Latent By and Save Latent, which writes it with safetensors."""
    from safetensors.torch import load_file

    prompt = tiny_twin("mmgt_pose_to_video")
    sample_id = next(node_id for node_id, node in prompt.items() if node["class_type"] == "MMGT_SampleVideo")
    prompt["core_save"] = {"class_type": "SaveLatent", "inputs": {"samples": [sample_id, 1],
                                                                  "filename_prefix": "core_latent/sampled"}}
    prompt["core_upscale"] = {"class_type": "LatentUpscaleBy", "inputs": {
        "samples": [sample_id, 1], "upscale_method": "nearest-exact", "scale_by": 2.0}}
    prompt["core_save_upscaled"] = {"class_type": "SaveLatent", "inputs": {"samples": ["core_upscale", 0],
                                                                           "filename_prefix": "core_latent/upscaled"}}
    answer = comfyui.post_prompt(prompt)
    assert answer.get("node_errors") == {}, answer
    entry = comfyui.wait_for_history(answer["prompt_id"])
    errors = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert entry["status"]["status_str"] == "success", json.dumps(errors, indent=1)[:6000]
    saved = sorted((Path(comfyui.base) / "output" / "core_latent").glob("*.latent"))
    sampled = load_file(next(path for path in saved if path.name.startswith("sampled")))["latent_tensor"]
    upscaled = load_file(next(path for path in saved if path.name.startswith("upscaled")))["latent_tensor"]
    assert sampled.shape == (40, 4, 16, 16) and sampled.dtype == torch.float32 and torch.isfinite(sampled).all()
    assert upscaled.shape == (40, 4, 32, 32)
    assert torch.equal(upscaled[..., ::2, ::2], sampled)  # nearest-exact x2 repeats every latent pixel


STAGE2_NETWORKS = {"MMGT_VideoNet", "MMGT_AutoencoderKL", "MMGT_CLIPVisionModelWithProjection", "MMGT_Wav2Vec2Model"}


def test_our_models_are_loaded_by_comfyui_and_unload_models_frees_them(comfyui):
    answer = comfyui.post_prompt(tiny_twin("mmgt_audio_to_video"))
    assert comfyui.wait_for_history(answer["prompt_id"])["status"]["status_str"] == "success"
    requested = {line.split("Requested to load ")[1].strip() for line in comfyui.log().splitlines()
                 if "Requested to load MMGT_" in line}
    assert STAGE2_NETWORKS | {"MMGT_GestureDecoder", "MMGT_WavLMModel"} <= requested, requested
    already_unloaded = comfyui.log().count("Unloading MMGT_")
    comfyui.post("/free", {"unload_models": True})  # what the UI's "Unload models" sends
    deadline, unloaded = time.monotonic() + 60, set()
    while time.monotonic() < deadline and not STAGE2_NETWORKS <= unloaded:
        time.sleep(0.5)
        lines = [line for line in comfyui.log().splitlines() if "Unloading MMGT_" in line][already_unloaded:]
        unloaded = {line.split("Unloading ")[1].strip() for line in lines}
    assert STAGE2_NETWORKS <= unloaded, f"unloaded after POST /free: {sorted(unloaded)}"


def test_model_handles_load_and_unload_through_the_real_model_management():
    """nodes/host.py's handles with the checkout's own model patcher and load_models_gpu / unload_all_models."""
    script = Path(__file__).resolve().parent / "real_host_model_management.py"
    env = {**os.environ, "PYTHONPATH": COMFYUI_PATH}
    done = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), str(script)], cwd=COMFYUI_PATH, env=env,
                          capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert done.returncode == 0 and "REAL HOST OK" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
