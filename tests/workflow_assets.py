"""Everything the shipped workflows (workflows/*.json) need, made tiny: models under the file names the
workflows select, DWPose stand-in ONNX files, and the input files (reference image, speech, pose video, external
keypoints), and a summary of the videos they save. Shared by tests/test_workflows.py (test executor) and
tests/test_real_comfyui.py (a real ComfyUI).

The API twins hold the workflows' real settings (50 SMGA steps, 30 video steps, 512×512, net-32500.pth). A run
with tiny models applies ``TINY_RUN_OVERRIDES`` on top: fewer steps, a smaller frame, and the tiny video net,
which is stored as safetensors because an official ``.pth`` carries no config for a non-standard size.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from safetensors.torch import load_file

from mmgt_core.constants import VIDEO_FPS
from mmgt_core.keypoints import PoseSequence, to_pose_keypoint
from mmgt_core.media import write_mp4
from mmgt_core.pose_detect import dwpose as dw
from mmgt_core.render import render_pose_video
from mmgt_core.tiny_models import random_smga, synthetic_reference_pose, tiny_smga_config
from mmgt_core.weights import save_weights
from tiny_fixture import tiny_net_config

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
UI_WORKFLOWS_DIR = REPO_ROOT / "workflows"
API_TWINS_DIR = TESTS_DIR / "workflows"

TINY_VIDEO_NET = "mmgt_video.safetensors"
TINY_RUN_OVERRIDES: dict[str, dict[str, Any]] = {
    "MMGT_AudioToPose": {"steps": 2},
    "MMGT_LoadVideoNet": {"checkpoint": TINY_VIDEO_NET},
    "MMGT_SampleVideo": {"steps": 1, "width": 128, "height": 128},
    "MMGT_DecodeVideo": {"chunk_frames": 16},
}

SPEECH_SECONDS = 1.6  # 40 frames at 25 fps
POSE_VIDEO_FPS = 30.0
POSE_VIDEO_FRAMES = 45  # 1.5 s at 30 fps: resampled to 25 fps it is shorter than the speech, so it gets padded
EXTERNAL_POSE_FRAMES = 30  # shorter than the speech: the blend takes the shorter length
PERSON_VIDEO_FPS = 30.0  # the driving video of video_to_video: 256×256 at 30 fps, with the speech as its sound
PERSON_VIDEO_SIZE = 256
PERSON_VIDEO_SPEECH_FRAMES = 41  # its AAC track decodes up to one AAC frame past the 1.6 s written (FFmpeg
# ignores the end of the edit list, so the last frame's encoder padding is heard): 1.6 s + < 64 ms → 41 frames


# What each workflow's SaveVideo nodes write with these inputs: (filename prefix, frames, seconds of audio or None).
SPEECH_FRAMES = round(SPEECH_SECONDS * VIDEO_FPS)
EXPECTED_VIDEOS: dict[str, list[tuple[str, int, float | None]]] = {
    "mmgt_audio_to_video": [("mmgt/audio_to_video", SPEECH_FRAMES, SPEECH_SECONDS)],
    "mmgt_pose_to_video": [("mmgt/pose_to_video", SPEECH_FRAMES, SPEECH_SECONDS)],
    "mmgt_audio_and_pose_to_video": [("mmgt/audio_pose_to_video", EXTERNAL_POSE_FRAMES, EXTERNAL_POSE_FRAMES / 25)],
    "mmgt_audio_to_pose_preview": [("mmgt/pose_preview", SPEECH_FRAMES, SPEECH_SECONDS),
                                   ("mmgt/pose_preview_face_hands_mask", SPEECH_FRAMES, None),
                                   ("mmgt/pose_preview_lips_mask", SPEECH_FRAMES, None)],
    "mmgt_video_to_video": [("mmgt/video_to_video", PERSON_VIDEO_SPEECH_FRAMES,
                             PERSON_VIDEO_SPEECH_FRAMES / VIDEO_FPS)],
}


def ui_workflow_names() -> list[str]:
    """Stems of the UI workflows shipped in workflows/."""
    return sorted(path.stem for path in UI_WORKFLOWS_DIR.glob("*.json"))


def load_twin(name: str) -> dict[str, Any]:
    return json.loads((API_TWINS_DIR / f"{name}_api.json").read_text())


def with_tiny_overrides(prompt: dict[str, Any]) -> dict[str, Any]:
    """A copy of an API prompt with the tiny-model run settings applied (only to inputs the node already has)."""
    tiny = copy.deepcopy(prompt)
    for node in tiny.values():
        for name, value in TINY_RUN_OVERRIDES.get(node["class_type"], {}).items():
            if name in node["inputs"]:
                node["inputs"][name] = value
    return tiny


def tiny_twin(name: str) -> dict[str, Any]:
    """The API twin of a shipped workflow with the tiny-model run settings applied."""
    return with_tiny_overrides(load_twin(name))


def video_summary(path: Path) -> tuple[int, float, float | None]:
    """(decoded frames, fps, audio seconds or None without an audio track) of a saved mp4."""
    with av.open(str(path)) as container:
        fps = float(container.streams.video[0].average_rate)
        audio = container.streams.audio[0] if container.streams.audio else None
        seconds = float(audio.duration * audio.time_base) if audio is not None and audio.duration else None
        frames = sum(1 for _ in container.decode(video=0))
    return frames, fps, seconds


# ----------------------------------------------------------------------------------------------------- tiny models


def install_tiny_models(models: Path, fixtures: Path) -> None:
    """Tiny random models in the real formats, under the names the workflows select, in ``models`` (models/mmgt)."""
    (models / "wavlm").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixtures / "audio" / "wavlm_tiny" / "WavLM-tiny.pt", models / "wavlm" / "WavLM-Large.pt")
    # a tiny SMGA sized for the tiny WavLM, in the official container, which keeps no config: 8 heads assumed
    smga = random_smga(replace(tiny_smga_config(), num_heads=8), seed=5)
    torch.save({"ema_state_dict": smga.state_dict()}, models / "audio2pose_best_model.pt")
    save_weights(load_file(fixtures / "stage2" / "net_tiny.safetensors"), models / TINY_VIDEO_NET, "video_net",
                 tiny_net_config(fixtures).to_dict(), "net_tiny")
    for source, name in (("stage2/tiny_vae", "sd-vae-ft-mse"), ("stage2/tiny_image_encoder", "image_encoder"),
                         ("audio/wav2vec2_tiny", "wav2vec2-base-960h")):
        shutil.copytree(fixtures / source, models / name, copy_function=shutil.copyfile, dirs_exist_ok=True)
    write_dwpose_standins(models / "dwpose")


# ------------------------------------------------------------------------------------------ DWPose stand-in models

POSE_INPUT_WH = (288, 384)  # RTMPose input (w, h) of dw-ll_ucoco_384
DETECT_WH = (512, 512)  # detect space of any square reference image


def standin_pose() -> PoseSequence:
    """The pose the stand-in DWPose "finds": a plausible upper body in the 512×512 detect space."""
    return synthetic_reference_pose(*DETECT_WH)


def expected_standin_pose(width: int, height: int) -> torch.Tensor:
    """(134, 3) keypoints the stand-ins yield for a square ``width``×``height`` reference image."""
    points = standin_pose().keypoints[0].clone()
    points[:, :2] = (points[:, :2] + 0.5) * torch.tensor([width / DETECT_WH[0], height / DETECT_WH[1]]) - 0.5
    return points


def _coco_from_openpose(points: np.ndarray) -> np.ndarray:
    """(133, 3) COCO-WholeBody points whose 134 assembly (neck inserted, body reordered) is ``points``."""
    coco = np.zeros((dw.NUM_WHOLEBODY_POINTS, 3))
    for openpose_index, with_neck_index in enumerate(dw.OPENPOSE_FROM_MMPOSE):
        if with_neck_index != 17:  # 17 is the inserted neck, rebuilt from the shoulders
            coco[with_neck_index] = points[openpose_index]
    coco[17:] = points[18:]
    return coco


def write_dwpose_standins(folder: Path) -> None:
    """yolox_l.onnx and dw-ll_ucoco_384.onnx stand-ins that "detect" :func:`standin_pose` in any square image.

    The detector outputs one fixed box around the pose; the pose model outputs SimCC maps peaking, point by
    point, at the bins that map back to the pose through that box's crop. Needs the dev package ``onnx``.
    """
    from test_pose_detect import _constant_outputs, make_detector, yolox_raw_for_boxes

    folder.mkdir(parents=True, exist_ok=True)
    coco = _coco_from_openpose(standin_pose().keypoints[0].numpy().astype(np.float64))
    visible = coco[:, 2] > 0
    low, high = coco[visible, :2].min(0) - 20, coco[visible, :2].max(0) + 20
    box = np.concatenate([low, high])
    ratio = dw.YOLOX_INPUT_SIZE / max(DETECT_WH)
    make_detector(folder / dw.DETECTOR_FILE, [tuple(box * ratio)], [0.9])
    decoded_box, _ = dw.decode_yolox(yolox_raw_for_boxes([tuple(box * ratio)], [0.9])[0], ratio)
    center, scale = dw.box_to_center_scale(decoded_box[0])
    scale = dw.widen_to_aspect(scale, POSE_INPUT_WH[0] / POSE_INPUT_WH[1])
    crop = (coco[:, :2] - center + scale / 2) / scale * np.array(POSE_INPUT_WH)
    bins = np.clip(np.round(crop * dw.SIMCC_SPLIT_RATIO).astype(int), 0, np.array(POSE_INPUT_WH) * 2 - 1)
    maps = {}
    for axis, size in ((0, POSE_INPUT_WH[0]), (1, POSE_INPUT_WH[1])):
        simcc = np.zeros((1, dw.NUM_WHOLEBODY_POINTS, 2 * size), np.float32)
        simcc[0, visible, bins[visible, axis]] = coco[visible, 2]
        maps["simcc_x" if axis == 0 else "simcc_y"] = simcc
    _constant_outputs(folder / dw.POSE_FILE, "input", [1, 3, POSE_INPUT_WH[1], POSE_INPUT_WH[0]], maps)


# ------------------------------------------------------------------------------------------------------ input files


def write_inputs(inputs: Path, fixtures: Path) -> None:
    """reference.png, speech.wav, pose_video.mp4, external_pose.json and person_video.mp4 in the input folder."""
    from test_stage1_nodes import make_speech

    inputs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixtures / "stage2" / "reference_image.png", inputs / "reference.png")
    make_speech(inputs / "speech.wav", seconds=SPEECH_SECONDS)
    (inputs / "speech.raw.wav").unlink(missing_ok=True)  # make_speech's intermediate file
    moving = moving_pose(POSE_VIDEO_FRAMES, 320, 240, POSE_VIDEO_FPS)
    frames = render_pose_video(moving).float() / 255.0
    write_mp4(inputs / "pose_video.mp4", frames, POSE_VIDEO_FPS)
    external = moving_pose(EXTERNAL_POSE_FRAMES, 640, 480, 25.0)
    (inputs / "external_pose.json").write_text(json.dumps(to_pose_keypoint(external)))
    write_person_video(inputs / "person_video.mp4", inputs / "speech.wav")


def write_person_video(path: Path, speech: Path) -> None:
    """A "video of a person" with sound: square frames (the DWPose stand-ins find their pose in any square
    image) drawn from a moving pose, and the speech as the audio track."""
    from scipy.io import wavfile

    frames = round(SPEECH_SECONDS * PERSON_VIDEO_FPS)
    moving = moving_pose(frames, PERSON_VIDEO_SIZE, PERSON_VIDEO_SIZE, PERSON_VIDEO_FPS)
    rate, samples = wavfile.read(speech)
    audio = torch.from_numpy(samples.astype(np.float32) / 32768.0)[None]
    write_mp4(path, render_pose_video(moving).float() / 255.0, PERSON_VIDEO_FPS, audio, rate)


def moving_pose(frames: int, width: int, height: int, fps: float) -> PoseSequence:
    """Another person (the synthetic body at another scale and place) waving the right hand."""
    base = synthetic_reference_pose(width, height).keypoints[0]
    keypoints = base.repeat(frames, 1, 1)
    wave = 20.0 * torch.sin(torch.linspace(0, 2 * torch.pi, frames))
    right_arm = [3, 4, *range(113, 134)]
    keypoints[:, right_arm, 1] += wave[:, None]
    return PoseSequence(keypoints, width, height, fps)
