"""The shipped workflows: each UI workflow converts to exactly its API twin, uses only core and MMGT nodes, says in
a Note which files it needs, and its twin runs end to end through the test executor with tiny random models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from executor import load_prompt, run
from ui_to_api import EDITOR_ONLY_NODES, ConversionError, convert
from workflow_assets import (
    API_TWINS_DIR,
    EXTERNAL_POSE_FRAMES,
    PERSON_VIDEO_FPS,
    PERSON_VIDEO_SIZE,
    PERSON_VIDEO_SPEECH_FRAMES,
    SPEECH_FRAMES,
    SPEECH_SECONDS,
    UI_WORKFLOWS_DIR,
    expected_standin_pose,
    tiny_twin,
    ui_workflow_names,
    video_summary,
)

WORKFLOWS = ui_workflow_names()
FILE_WIDGETS = ("image", "audio", "file", "checkpoint", "model", "folder", "detector", "pose_model")


def ui_workflow(name: str) -> dict[str, Any]:
    return json.loads((UI_WORKFLOWS_DIR / f"{name}.json").read_text())


def input_types(classes: dict[str, type]) -> dict[str, dict[str, Any]]:
    return {name: cls.INPUT_TYPES() for name, cls in classes.items()}


def saved_video(host: dict[str, Any], prefix: str) -> tuple[int, float, float | None]:
    """(decoded frames, fps, audio seconds or None) of what the SaveVideo stub wrote for ``prefix``."""
    folder = Path(host["folder_paths"].get_output_directory())
    path, = folder.glob(f"{prefix}_00001*.mp4")  # core SaveVideo: name_00001.mp4; MMGT Save Video: name_00001_.mp4
    return video_summary(path)


# --------------------------------------------------------------------------------------------- the files themselves


def test_every_ui_workflow_has_an_api_twin():
    assert set(WORKFLOWS) >= {"mmgt_audio_to_video", "mmgt_pose_to_video", "mmgt_audio_and_pose_to_video",
                              "mmgt_audio_to_pose_preview", "mmgt_video_to_video"}
    for name in WORKFLOWS:
        assert (API_TWINS_DIR / f"{name}_api.json").is_file(), f"{name} has no API twin"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_converts_to_exactly_its_api_twin(comfy_host, name):
    converted = convert(ui_workflow(name), input_types(comfy_host["classes"]))
    assert converted == load_prompt(API_TWINS_DIR / f"{name}_api.json")


def test_converter_skips_frontend_only_values_and_lets_links_replace_widgets(comfy_host):
    workflow = ui_workflow("mmgt_pose_to_video")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    sample, resample, audio = nodes[12], nodes[7], nodes[4]
    assert sample["widgets_values"][2:5] == [42, "fixed", 30]  # seed, its "control after generate", steps
    sample["widgets_values"][4] = 7
    converted = convert(workflow, input_types(comfy_host["classes"]))
    assert converted["12"]["inputs"]["seed"] == 42 and converted["12"]["inputs"]["steps"] == 7
    assert resample["widgets_values"][0] == 30 and converted["7"]["inputs"]["fps_in"] == ["3", 2]
    assert converted["4"]["inputs"] == {"audio": audio["widgets_values"][0]}  # audio player/upload values skipped
    note = next(node for node in workflow["nodes"] if node["type"] == "Note")
    assert str(note["id"]) not in converted
    del sample["widgets_values"][-1]
    with pytest.raises(ConversionError, match="no stored value for widget .scheduler."):
        convert(workflow, input_types(comfy_host["classes"]))


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_uses_only_core_and_mmgt_nodes(comfy_host, name):
    core = set(comfy_host["classes"]) - set(comfy_host["nodes"].NODE_CLASS_MAPPINGS)
    types = {node["type"] for node in ui_workflow(name)["nodes"]}
    foreign = {t for t in types if not t.startswith("MMGT_") and t not in core and t not in EDITOR_ONLY_NODES}
    assert not foreign, f"{name} needs node types outside ComfyUI core and this pack: {foreign}"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_note_names_every_file_it_needs(name):
    workflow = ui_workflow(name)
    notes = " ".join(str(v) for node in workflow["nodes"] if node["type"] == "Note"
                     for v in node["widgets_values"])
    assert notes, f"{name} has no Note node"
    needed = {value for node in load_prompt(API_TWINS_DIR / f"{name}_api.json").values()
              for key, value in node["inputs"].items() if key in FILE_WIDGETS and isinstance(value, str)}
    missing = sorted(file for file in needed if file not in notes)
    assert not missing, f"the Note of {name} does not mention {missing}"


# ------------------------------------------------------------------------------------------------------ the runs


def test_audio_to_video_renders_one_frame_per_25th_of_a_second_with_the_speech(workflow_host):
    result = run(tiny_twin("mmgt_audio_to_video"), workflow_host["classes"])
    video, preview = result.outputs["16"]  # MMGT Save Video: streamed mp4 + preview frames
    assert video.get_dimensions() == (128, 128) and preview.shape[1:] == (128, 128, 3)
    assert torch.isfinite(preview).all() and preview.std(dim=0).mean() > 0
    assert saved_video(workflow_host, "mmgt/audio_to_video")[:2] == (SPEECH_FRAMES, 25.0)
    assert saved_video(workflow_host, "mmgt/audio_to_video")[2] == pytest.approx(SPEECH_SECONDS, abs=0.1)
    reference, expected = result.outputs["3"][0].keypoints[0], expected_standin_pose(192, 192)
    seen = expected[:, 2] > 0
    torch.testing.assert_close(reference[seen, :2], expected[seen, :2], atol=0.5, rtol=0)
    assert (reference[~seen, 2] == 0).all()
    assert result.outputs["3"][1], "the reference pose reports its notes"


def test_pose_video_at_30_fps_is_resampled_and_padded_to_the_speech(workflow_host):
    result = run(tiny_twin("mmgt_pose_to_video"), workflow_host["classes"])
    pose_frames, fps, notes = result.outputs["7"]
    assert pose_frames.shape[0] == SPEECH_FRAMES and fps == 25.0 and "30" in notes
    video, preview = result.outputs["13"]  # MMGT Save Video
    assert video.get_dimensions() == (128, 128) and preview.shape[1:] == (128, 128, 3)
    assert saved_video(workflow_host, "mmgt/pose_to_video") == pytest.approx((SPEECH_FRAMES, 25.0, SPEECH_SECONDS),
                                                                             abs=0.1)


def test_audio_and_external_pose_blend_to_the_shorter_length(workflow_host):
    result = run(tiny_twin("mmgt_audio_and_pose_to_video"), workflow_host["classes"])
    smga, aligned, blended = (result.outputs[i][0] for i in ("7", "9", "10"))
    assert smga.num_frames == SPEECH_FRAMES and aligned.num_frames == EXTERNAL_POSE_FRAMES
    assert blended.num_frames == EXTERNAL_POSE_FRAMES and (blended.width, blended.height) == (192, 192)
    face = slice(24, 92)
    torch.testing.assert_close(blended.keypoints[:, face], smga.keypoints[:EXTERNAL_POSE_FRAMES, face])
    torch.testing.assert_close(blended.keypoints[:, :18], aligned.keypoints[:, :18])
    neck = aligned.keypoints[:, 1, :2].median(dim=0).values
    torch.testing.assert_close(neck, expected_standin_pose(192, 192)[1, :2], atol=1.0, rtol=0)
    frames = result.outputs["19"][0]
    assert frames.shape == (EXTERNAL_POSE_FRAMES, 128, 128, 3)
    assert saved_video(workflow_host, "mmgt/audio_pose_to_video") == pytest.approx(
        (EXTERNAL_POSE_FRAMES, 25.0, EXTERNAL_POSE_FRAMES / 25), abs=0.1)


def test_audio_to_pose_preview_writes_pose_and_mask_videos(workflow_host):
    result = run(tiny_twin("mmgt_audio_to_pose_preview"), workflow_host["classes"])
    keypoints = result.outputs["7"][0]
    assert keypoints.keypoints.shape == (SPEECH_FRAMES, 134, 3) and keypoints.fps == 25.0
    assert result.outputs["8"][0].shape == (SPEECH_FRAMES, 192, 192, 3)
    for prefix, has_audio in (("mmgt/pose_preview", True), ("mmgt/pose_preview_face_hands_mask", False),
                              ("mmgt/pose_preview_lips_mask", False)):
        frames, fps, audio = saved_video(workflow_host, prefix)
        assert (frames, fps) == (SPEECH_FRAMES, 25.0) and (audio is not None) == has_audio, prefix
    face_hands = result.outputs["11"][0]
    assert face_hands.shape == (SPEECH_FRAMES, 192, 192) and face_hands.amax() == 1.0


def test_video_of_a_person_drives_the_reference_with_its_own_speech(workflow_host):
    result = run(tiny_twin("mmgt_video_to_video"), workflow_host["classes"])
    detected, notes = result.outputs["5"]
    assert detected.num_frames == round(SPEECH_SECONDS * PERSON_VIDEO_FPS) and detected.fps == PERSON_VIDEO_FPS
    assert (detected.width, detected.height) == (PERSON_VIDEO_SIZE, PERSON_VIDEO_SIZE) and "found in" in notes
    expected = expected_standin_pose(PERSON_VIDEO_SIZE, PERSON_VIDEO_SIZE)
    seen = expected[:, 2] > 0
    torch.testing.assert_close(detected.keypoints[:, seen, :2], expected[seen, :2].expand(detected.num_frames, -1, -1),
                               atol=0.5, rtol=0)
    speech_frames = result.outputs["7"][1]  # the video's own sound sets the length
    assert speech_frames == PERSON_VIDEO_SPEECH_FRAMES
    resampled = result.outputs["8"][0]
    assert resampled.fps == 25.0 and resampled.num_frames == speech_frames
    frames, fps, audio = result.outputs["16"]
    assert frames.shape == (speech_frames, 128, 128, 3) and fps == 25.0
    assert audio["waveform"].shape[-1] == pytest.approx(speech_frames / 25 * audio["sample_rate"], rel=0.02)
    assert saved_video(workflow_host, "mmgt/video_to_video") == pytest.approx(
        (speech_frames, 25.0, speech_frames / 25), abs=0.1)
    assert result.outputs["5"][1], "the detection reports its notes"
