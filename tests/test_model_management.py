"""ComfyUI owns our models: every network is wrapped in the host's model patcher, loaded through
``load_models_gpu`` right before it computes, unloaded by ``unload_all_models``; runs that do not fit or are
cancelled leave nothing half-moved; old saved workflows still load; Sample Video also gives core LATENT.

The stubbed host (tests/comfy_stub) gets a compute device distinct from the CPU, ``cpu:0``: tensors stay on the
CPU, and a recorder of ``nn.Module.to`` targets shows where the host's model management put each weight.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from executor import drop_undeclared_values, load_prompt, run
from ui_to_api import convert
from workflow_assets import API_TWINS_DIR, UI_WORKFLOWS_DIR, tiny_twin, with_tiny_overrides

LOAD_DEVICE = torch.device("cpu", 0)
OFFLOAD_DEVICE = torch.device("cpu")
NETWORKS = {"SMGA", "WavLM", "the video net", "the VAE", "the CLIP image encoder", "wav2vec2"}
# The loader widgets removed by this change, as saved workflows still carry them (they were the trailing ones).
REMOVED_WIDGETS = {"MMGT_LoadSMGA": ["auto"], "MMGT_LoadWavLM": ["auto"], "MMGT_LoadVideoNet": ["auto", "none"],
                   "MMGT_LoadVAE": ["auto"], "MMGT_LoadImageEncoder": ["auto"], "MMGT_LoadWav2Vec2": ["auto"]}


class Placement:
    """Where each parameter was last sent by ``nn.Module.to`` (the device argument as given)."""

    def __init__(self) -> None:
        self.device: dict[int, torch.device] = {}

    def record(self, module: torch.nn.Module, device: Any) -> None:
        if device is not None:
            for parameter in module.parameters():
                self.device[id(parameter)] = torch.device(device)

    def of(self, module: torch.nn.Module) -> set[torch.device]:
        return {self.device.get(id(p), OFFLOAD_DEVICE) for p in module.parameters()}


@pytest.fixture()
def managed_host(workflow_host, monkeypatch):
    """The stubbed ComfyUI with a distinct compute device, tiny models, inputs, and recorders of placements,
    patchers and forward passes."""
    import comfy.model_management as mm
    import comfy.model_patcher as mp

    monkeypatch.setattr(mm, "_torch_device", LOAD_DEVICE)
    monkeypatch.setattr(mm, "current_loaded_models", [])
    monkeypatch.setattr(mm, "LOG", [])
    placement = Placement()
    original_to = torch.nn.Module.to

    def recording_to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        result = original_to(self, *args, **kwargs)
        placement.record(self, device)
        return result

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    patchers: list[Any] = []
    problems: list[str] = []
    computed: set[str] = set()
    original_init = mp.ModelPatcher.__init__

    def recording_init(self, model, *args, **kwargs):
        original_init(self, model, *args, **kwargs)
        patchers.append(self)
        network = model.network

        def check(module, _inputs, patcher=self):
            name = network_name(patcher)
            computed.add(name)
            loaded = any(entry.model is patcher for entry in mm.current_loaded_models)
            if not loaded or patcher.loaded_size() != patcher.model_size():
                problems.append(f"{name}: {type(module).__name__} ran before load_models_gpu loaded it")
            elif placement.of(module) != {LOAD_DEVICE}:
                problems.append(f"{name}: {type(module).__name__} ran with weights on {placement.of(module)}")

        for module in network.modules():
            if any(True for _ in module.parameters(recurse=False)):
                module.register_forward_pre_hook(check)

    monkeypatch.setattr(mp.ModelPatcher, "__init__", recording_init)
    names: dict[int, str] = {}

    def network_name(patcher: Any) -> str:
        return names.get(id(patcher), type(patcher.model.network).__name__)

    import nodes.host as host

    original_manage = host.manage_model

    def naming_manage(module, name, kind, dtype=None):
        handle = original_manage(module, name, kind, dtype)
        names[id(handle.patcher)] = name
        return handle

    monkeypatch.setattr(host, "manage_model", naming_manage)
    yield {**workflow_host, "mm": mm, "placement": placement, "patchers": patchers, "problems": problems,
           "computed": computed, "name_of": network_name}


def loader_ids(prompt: dict[str, Any]) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] in REMOVED_WIDGETS]


def with_cached_loaders(prompt: dict[str, Any], classes: dict[str, type], outputs: dict[str, tuple]
                        ) -> dict[str, type]:
    """Node classes whose loaders return the first run's models, as ComfyUI's cache does on a second run."""
    cached = dict(classes)
    for node_id in loader_ids(prompt):
        kind = prompt[node_id]["class_type"]
        original = classes[kind]
        cached[kind] = type(f"Cached{kind}", (), {
            "INPUT_TYPES": original.INPUT_TYPES, "RETURN_TYPES": original.RETURN_TYPES, "FUNCTION": "load",
            "load": lambda self, _out=outputs[node_id], **_: _out})
    return cached


def test_every_network_is_loaded_by_comfyui_before_it_computes_and_unloads_and_reloads(managed_host):
    mm, placement = managed_host["mm"], managed_host["placement"]
    prompt = tiny_twin("mmgt_audio_to_video")
    first = run(prompt, managed_host["classes"])

    assert managed_host["problems"] == []
    assert managed_host["computed"] >= NETWORKS, "every network must have computed"
    assert {managed_host["name_of"](p) for p in managed_host["patchers"]} == NETWORKS  # one patcher each
    requests = [entry for entry in mm.LOG if entry[0] == "load_models_gpu"]
    assert len(requests) >= len(NETWORKS) and all(memory > 0 for _, (_, memory) in requests)
    assert {entry.model for entry in mm.current_loaded_models} <= set(managed_host["patchers"])

    mm.unload_all_models()
    assert mm.current_loaded_models == []
    for patcher in managed_host["patchers"]:
        assert patcher.loaded_size() == 0 and patcher.current_loaded_device() == OFFLOAD_DEVICE
        assert placement.of(patcher.model) == {OFFLOAD_DEVICE}, managed_host["name_of"](patcher)

    computed_before = len(requests)
    second = run(prompt, with_cached_loaders(prompt, managed_host["classes"], first.outputs))
    assert managed_host["problems"] == []
    assert len([e for e in mm.LOG if e[0] == "load_models_gpu"]) >= 2 * computed_before
    torch.testing.assert_close(second.outputs["15"][0].samples, first.outputs["15"][0].samples)  # same seed


@pytest.mark.parametrize("failure", ["out_of_memory_loading", "out_of_memory_computing", "cancel_loading"])
def test_a_run_that_does_not_fit_or_is_cancelled_leaves_no_model_half_moved(managed_host, monkeypatch, failure):
    mm, placement = managed_host["mm"], managed_host["placement"]
    import mmgt_core.pipeline as pipeline
    from nodes.common import MMGTNodeError

    prompt = tiny_twin("mmgt_pose_to_video")
    original_capacity = mm.simulate_device_capacity

    def too_small_for_the_video_net(patcher, device, whole):
        if type(patcher.model.network).__name__ == "VideoNet":
            if failure == "out_of_memory_loading":
                patcher.model.network.pose_guider.to(device)
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original_capacity(patcher, device, whole)

    monkeypatch.setattr(mm, "simulate_device_capacity", too_small_for_the_video_net)
    original_model_load = mm.LoadedModel.model_load

    def cancelled_after_the_move(self, *args, **kwargs):  # the weights moved, then Cancel (outside the patcher)
        original_model_load(self, *args, **kwargs)
        if failure == "cancel_loading" and type(self.model.model.network).__name__ == "VideoNet":
            raise mm.InterruptProcessingException()

    monkeypatch.setattr(mm.LoadedModel, "model_load", cancelled_after_the_move)
    if failure == "out_of_memory_computing":
        def no_room(*args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

        monkeypatch.setattr(pipeline, "sample_latents", no_room)

    expected = mm.InterruptProcessingException if failure == "cancel_loading" else MMGTNodeError
    with pytest.raises(expected) as raised:
        run(prompt, managed_host["classes"])
    if failure != "cancel_loading":
        message = str(raised.value)
        assert message.startswith("[MMGT Sample Video] Stage II")
        assert "128x128" in message and "12-frame windows (40 frames)" in message
        assert "Lower width/height or context_frames" in message and "Traceback" not in message
    net = next(p for p in managed_host["patchers"] if managed_host["name_of"](p) == "the video net")
    if failure == "out_of_memory_computing":
        assert placement.of(net.model) == {LOAD_DEVICE}  # wholly loaded; ComfyUI may evict it later
        assert any(entry.model is net for entry in mm.current_loaded_models)
    else:
        assert placement.of(net.model) == {OFFLOAD_DEVICE}, "no half-moved weights"
        assert net.loaded_size() == 0 and all(entry.model is not net for entry in mm.current_loaded_models)

    monkeypatch.undo()  # the next run, with room and without a cancel, works
    managed_host["problems"].clear()
    latents = run(prompt, managed_host["classes"]).outputs["12"][0]  # Sample Video
    assert latents.frame_count == 40 and latents.fps == 25.0


def test_sample_video_also_returns_core_latent_in_the_vae_scale_sharing_one_storage(managed_host, monkeypatch):
    import nodes.stage2 as stage2
    from mmgt_core.video.vae_codec import ALREADY_UNSCALED, VAE_SCALING, decode_latents

    sampled: list[torch.Tensor] = []  # the sampler's scaled (1, 4, T, h, w) latents, a copy kept for the check
    render = stage2._render_latents

    def keeping_a_copy(*args: Any) -> torch.Tensor:
        latents = render(*args)
        sampled.append(latents.clone())
        return latents

    monkeypatch.setattr(stage2, "_render_latents", keeping_a_copy)
    prompt = tiny_twin("mmgt_pose_to_video")
    result = run(prompt, managed_host["classes"])
    sample_id = next(i for i, n in prompt.items() if n["class_type"] == "MMGT_SampleVideo")
    latents, core = result.outputs[sample_id]
    samples = core["samples"]
    assert samples.shape == (40, 4, 16, 16) and samples.dtype == torch.float32
    assert torch.equal(samples, sampled[0][0].transpose(0, 1) / VAE_SCALING)  # frames first, unscaled
    assert samples is latents.samples  # one tensor (one storage) behind both outputs, not a copy
    vae_id = next(i for i, n in prompt.items() if n["class_type"] == "MMGT_LoadVAE")
    vae = result.outputs[vae_id][0].module.to(LOAD_DEVICE)
    with torch.no_grad():  # what core VAE Decode computes: decode(samples) without any scaling, then [0, 1]
        core_frames = (vae.decode(samples[:2].to(vae.dtype)).sample.float() / 2 + 0.5).clamp(0, 1)
    ours = decode_latents(vae, latents.samples[:2], scaling_factor=ALREADY_UNSCALED)
    torch.testing.assert_close(core_frames.permute(0, 2, 3, 1), ours, atol=1e-5, rtol=0)
    scaled = decode_latents(vae, sampled[0][:, :, :2])  # the sampler's scale through the VAE's own factor
    torch.testing.assert_close(scaled, ours, atol=1e-5, rtol=0)


def test_the_loaders_lost_only_trailing_widgets_so_old_files_still_map(managed_host):
    classes = managed_host["classes"]
    old_order = {"MMGT_LoadSMGA": ["checkpoint", "dtype", "device"], "MMGT_LoadWavLM": ["model", "dtype", "device"],
                 "MMGT_LoadVideoNet": ["checkpoint", "dtype", "device", "offload"],
                 "MMGT_LoadVAE": ["folder", "dtype", "device"], "MMGT_LoadImageEncoder": ["folder", "dtype", "device"],
                 "MMGT_LoadWav2Vec2": ["folder", "device"]}
    for kind, old in old_order.items():
        now = list(classes[kind].INPUT_TYPES()["required"])
        assert old[:len(now)] == now and len(old) - len(now) == len(REMOVED_WIDGETS[kind]), kind


def test_an_old_saved_workflow_with_the_removed_widgets_still_runs(managed_host):
    """A UI file and an API prompt saved before the device/offload widgets went: the frontend ignores the
    trailing values and ComfyUI's executor the undeclared inputs; both give the same prompt, which runs."""
    ui = json.loads((UI_WORKFLOWS_DIR / "mmgt_pose_to_video.json").read_text())
    for node in ui["nodes"]:
        if node["type"] in REMOVED_WIDGETS:
            node["widgets_values"] = node["widgets_values"] + REMOVED_WIDGETS[node["type"]]
    types = {name: cls.INPUT_TYPES() for name, cls in managed_host["classes"].items()}
    from_ui = convert(ui, types, ignore_trailing_values=True)
    old_api = load_prompt(API_TWINS_DIR / "mmgt_pose_to_video_api.json")
    for node_id in loader_ids(old_api):
        old_api[node_id]["inputs"].update({"device": "auto"} | (
            {"offload": "none"} if old_api[node_id]["class_type"] == "MMGT_LoadVideoNet" else {}))
    assert drop_undeclared_values(old_api, managed_host["classes"]) == from_ui
    latents = run(with_tiny_overrides(from_ui), managed_host["classes"]).outputs["12"][0]  # Sample Video
    assert latents.frame_count == 40 and latents.fps == 25.0


def test_dtype_auto_follows_the_host_policy_and_an_explicit_choice_wins(managed_host):
    classes = managed_host["classes"]
    smga = classes["MMGT_LoadSMGA"]().load("audio2pose_best_model.pt", "auto")[0]
    assert smga.dtype == torch.float32  # the host's unet_dtype on a CPU
    vae = classes["MMGT_LoadVAE"]().load("sd-vae-ft-mse", "auto")[0]
    assert vae.dtype == torch.float32 and next(vae.module.parameters()).dtype == torch.float32  # vae_dtype
    encoder = classes["MMGT_LoadImageEncoder"]().load("image_encoder", "auto")[0]
    assert encoder.dtype == torch.bfloat16  # the host says fp16 for text encoders; never fp16 on a CPU
    assert classes["MMGT_LoadImageEncoder"]().load("image_encoder", "fp16")[0].dtype == torch.bfloat16
    assert classes["MMGT_LoadVAE"]().load("sd-vae-ft-mse", "bf16")[0].dtype == torch.bfloat16
    for handle in (smga.handle, vae, encoder):
        assert managed_host["placement"].of(handle.module) == {OFFLOAD_DEVICE}, "loaders leave the weights offloaded"


def test_decode_video_shrinks_its_chunk_to_the_free_device_memory(managed_host, monkeypatch):
    import nodes.stage2 as stage2
    from mmgt_core.memory import vae_decode_bytes

    mm = managed_host["mm"]
    vae = managed_host["classes"]["MMGT_LoadVAE"]().load("sd-vae-ft-mse", "fp32")[0]
    latents = stage2.VideoLatents(torch.randn(6, 4, 8, 8), 25.0)
    chunks: list[int] = []
    original = stage2.decode_latents

    def spy(decoder, values, chunk_frames, **kwargs):
        chunks.append(chunk_frames)
        return original(decoder, values, chunk_frames, **kwargs)

    monkeypatch.setattr(stage2, "decode_latents", spy)
    monkeypatch.setattr(mm, "DEVICE_CAPACITY", vae.patcher.model_size() + vae_decode_bytes(64, 64, 2, vae.dtype) + 1)
    frames, _, _ = stage2.DecodeVideo().decode(latents, 6, mmgt_vae=vae)
    monkeypatch.setattr(mm, "DEVICE_CAPACITY", None)  # unknown / plenty: the widget's chunk
    stage2.DecodeVideo().decode(latents, 6, mmgt_vae=vae)
    assert chunks == [2, 6] and frames.shape == (6, 64, 64, 3)


def test_memory_estimates_grow_with_the_work_and_the_element_size():
    from mmgt_core import memory

    half = memory.stage2_window_bytes(512, 512, 12, 2, torch.float16)
    assert memory.stage2_window_bytes(512, 512, 24, 2, torch.float16) > half
    assert memory.stage2_window_bytes(768, 768, 12, 2, torch.float16) > half
    assert memory.stage2_window_bytes(512, 512, 12, 2, torch.float32) == pytest.approx(2 * half, rel=1e-6)
    assert memory.vae_decode_bytes(512, 512, 4, torch.float16) > memory.vae_decode_bytes(512, 512, 1, torch.float16)
    one = memory.vae_decode_bytes(512, 512, 1, torch.float16)
    assert memory.decode_chunk_that_fits(None, 512, 512, torch.float16, 8) == 8
    assert memory.decode_chunk_that_fits(one - 1, 512, 512, torch.float16, 8) == 1
    assert memory.decode_chunk_that_fits(10 * 2**40, 512, 512, torch.float16, 8) == 8


def test_memory_command_prints_the_estimates(capsys):
    from mmgt_core import memory

    assert memory.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = memory.stage2_window_bytes(512, 512, 12, 2, torch.float16) / memory.MIB
    row = next(line for line in lines if line.startswith("stage2_window") and "512x512" in line and "= 12" in line)
    assert float(row.split("estimated_mib=")[1]) == pytest.approx(expected, abs=1)
