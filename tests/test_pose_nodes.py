"""The pose nodes inside a (stubbed) ComfyUI host, run through the test executor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from executor import WorkflowError, load_prompt, run, validate
from mmgt_core.keypoints import PoseSequence
from mmgt_core.keypoints_io import save_keypoints_file
from mmgt_core.masks import motion_masks

WORKFLOWS = Path(__file__).parent / "workflows"


@pytest.fixture()
def speaker_input(comfy_host, fixtures_dir):
    keypoints = load_file(fixtures_dir / "pose" / "keypoints.safetensors")["keypoints_px"]
    input_dir = Path(comfy_host["folder_paths"].get_input_directory())
    save_keypoints_file(PoseSequence(keypoints, 512, 512), input_dir / "speaker.safetensors")
    return comfy_host


def test_every_node_declares_tooltips_category_and_prefix(comfy_host):
    ours = {k: v for k, v in comfy_host["classes"].items() if k.startswith("MMGT_")}
    assert ours, "the pack registered no nodes"
    for node_id, cls in ours.items():
        assert cls.CATEGORY.startswith("MMGT/"), node_id
        assert getattr(cls, "DESCRIPTION", ""), f"{node_id} has no DESCRIPTION"
        assert node_id in comfy_host["nodes"].NODE_DISPLAY_NAME_MAPPINGS
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                assert len(entry) > 1 and entry[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_model_folder_is_registered_without_creating_it(comfy_host):
    folder_paths = comfy_host["folder_paths"]
    assert "mmgt" in folder_paths.folder_names_and_paths
    registered = folder_paths.get_folder_paths("mmgt")[0]
    assert registered.endswith("models/mmgt") and not Path(registered).exists()
    Path(registered).mkdir(parents=True)
    (Path(registered) / "net-32500.safetensors").write_bytes(b"")
    host = comfy_host["nodes"].host
    assert host.list_model_files() == ["net-32500.safetensors"]
    assert host.resolve_model_path("net-32500.safetensors").startswith(registered)


def test_pose_workflow_runs_and_produces_frames_and_masks(speaker_input, fixtures_dir):
    result = run(load_prompt(WORKFLOWS / "pose_nodes_api.json"), speaker_input["classes"])
    pose_frames = result.outputs["2"][0]
    assert pose_frames.shape == (6, 512, 512, 3) and pose_frames.dtype == torch.float32
    official = np.load(fixtures_dir / "pose" / "pose_frames_and_masks_512.npz")["pose_rgb"]
    # keypoints_px differs from the float32 round trip the fixture drew; compare most pixels, not all
    agreement = ((pose_frames * 255).round().to(torch.uint8).numpy() == official).all(-1).mean()
    assert agreement > 0.995
    face_hands, lips, hands, background = result.outputs["4"]
    keypoints = PoseSequence(load_file(fixtures_dir / "pose" / "keypoints.safetensors")["keypoints_px"], 512, 512)
    expected = motion_masks(keypoints)
    assert torch.equal(lips, expected.lips) and torch.equal(hands, expected.hands)
    assert torch.equal(face_hands, expected.face_hands) and torch.equal(background, 1 - face_hands)
    assert result.ui["3"]["images"][0]["count"] == 6
    round_trip = result.outputs["9"][0]
    assert (round_trip - pose_frames).abs().max() < 1e-6 or (round_trip != pose_frames).float().mean() < 0.01


def test_progress_is_reported_and_cancel_interrupts(speaker_input):
    import comfy.model_management as mm
    import comfy.utils as cu

    cu.PROGRESS_LOG.clear()
    run(load_prompt(WORKFLOWS / "pose_nodes_api.json"), speaker_input["classes"])
    assert (6, 6) in cu.PROGRESS_LOG
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        run(load_prompt(WORKFLOWS / "pose_nodes_api.json"), speaker_input["classes"])


@pytest.mark.parametrize("node, name, value, problem", [
    ("4", "keypoints", ["2", 0], "expects MMGT_KEYPOINTS"),  # IMAGE into MMGT_KEYPOINTS
    ("1", "fps", 500.0, "bigger than max"),
    ("1", "file", "nope.json", "not one of")])
def test_executor_rejects_bad_links_and_values(speaker_input, node, name, value, problem):
    prompt = load_prompt(WORKFLOWS / "pose_nodes_api.json")
    prompt[node]["inputs"][name] = value
    with pytest.raises(WorkflowError, match=problem):
        validate(prompt, speaker_input["classes"])


def test_node_errors_name_the_node_and_input(speaker_input, tmp_path):
    from nodes.common import MMGTNodeError

    cls = speaker_input["classes"]["MMGT_PoseKeypointToMMGT"]
    with pytest.raises(MMGTNodeError, match=r"\[MMGT POSE_KEYPOINT → Keypoints\] input 'pose_keypoint'"):
        cls().convert([{"people": [], "canvas_width": 64, "canvas_height": 64}], 25.0)


def test_pack_imports_like_comfyui_loads_it(comfy_host):
    """ComfyUI imports the pack folder by file path under a mangled name; relative imports must work."""
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[1]
    name = "custom_nodes_x_ComfyUI-MMGT"
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert set(module.NODE_CLASS_MAPPINGS) == set(comfy_host["nodes"].NODE_CLASS_MAPPINGS)
        assert not module.nodes.SKIPPED_MODULES, module.nodes.SKIPPED_MODULES
        assert not torch.cuda.is_initialized(), "importing the pack must not touch CUDA"
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_save_keypoints_writes_reloadable_files_inside_the_output_folder(speaker_input):
    from mmgt_core.keypoints_io import load_keypoints_file
    from nodes.common import MMGTNodeError

    classes = speaker_input["classes"]
    sequence, _ = classes["MMGT_LoadKeypoints"]().load("speaker.safetensors", 512, 512, 25.0)
    saver = classes["MMGT_SaveKeypoints"]()
    first = Path(saver.save(sequence, "mmgt/kp", "safetensors")["ui"]["text"][0])
    second = Path(saver.save(sequence, "mmgt/kp", "json")["ui"]["text"][0])
    out_dir = Path(speaker_input["folder_paths"].get_output_directory())
    assert first.parent == out_dir / "mmgt" and first.name == "kp_00001.safetensors" and second.suffix == ".json"
    assert torch.equal(load_keypoints_file(first)[0].keypoints, sequence.keypoints)
    assert load_keypoints_file(second)[0].num_frames == sequence.num_frames
    with pytest.raises(MMGTNodeError, match="outside the output folder"):
        saver.save(sequence, "../../escape", "json")


def test_resample_keypoints_node_changes_rate_and_length(speaker_input):
    classes = speaker_input["classes"]
    loaded, _ = classes["MMGT_LoadKeypoints"]().load("speaker.safetensors", 512, 512, 25.0)
    sequence = PoseSequence(loaded.keypoints, 512, 512, 30.0)
    out, notes = classes["MMGT_ResampleKeypoints"]().resample(sequence, 25.0, 0)
    assert out.num_frames == 5 and out.fps == 25.0 and "→ 5 at 25 fps" in notes
    padded, notes = classes["MMGT_ResampleKeypoints"]().resample(sequence, 25.0, 9)
    assert padded.num_frames == 9 and torch.equal(padded.keypoints[-1], padded.keypoints[4]) and "padded" in notes
