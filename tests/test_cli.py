"""The command line: generate (audio→video, pose→video) on tiny random models in the real formats, and doctor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import wavfile

from mmgt_core.__main__ import main as cli_main
from mmgt_core.keypoints import PoseSequence
from mmgt_core.keypoints_io import save_keypoints_file
from mmgt_core.tiny_models import synthetic_reference_pose, write_tiny_model_set
from workflow_assets import video_summary


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_tiny_model_set(root / "models")
    rate = 16000
    t = np.arange(int(1.2 * rate)) / rate
    wavfile.write(root / "speech.wav", rate, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    Image.fromarray((np.random.default_rng(1).random((256, 256, 4)) * 255).astype(np.uint8)).save(root / "me.png")
    return root


def test_generate_audio_to_video_writes_mp4_with_sound(workspace):
    out = workspace / "audio.mp4"
    code = cli_main(["generate", "--image", str(workspace / "me.png"), "--audio", str(workspace / "speech.wav"),
                     "--models", str(workspace / "models"), "--reference-pose",
                     str(workspace / "models" / "reference_pose.safetensors"), "--out", str(out), "--width", "128",
                     "--height", "64", "--steps", "1", "--smga-steps", "2", "--dtype", "fp32", "--fps", "30"])
    assert code == 0
    frames, rate, audio_seconds = video_summary(out)
    assert rate == 30.0 and frames == 36, "1.2 s at 30 fps"
    assert audio_seconds == pytest.approx(1.2, abs=1e-3), "the audio lasts exactly as long as the video"


def test_generate_pose_driven_aligns_an_external_pose(workspace, capsys):
    other = synthetic_reference_pose(640, 360).keypoints.repeat(20, 1, 1)
    other[:, 92:, 1] += torch.linspace(0, 20, 20)[:, None]
    save_keypoints_file(PoseSequence(other, 640, 360, 30.0), workspace / "dance.safetensors")
    out = workspace / "pose.mp4"
    code = cli_main(["generate", "--image", str(workspace / "me.png"), "--pose", str(workspace / "dance.safetensors"),
                     "--pose-fps", "30", "--models", str(workspace / "models"), "--reference-pose",
                     str(workspace / "models" / "reference_pose.safetensors"), "--out", str(out), "--width", "64",
                     "--height", "64", "--steps", "1", "--dtype", "fp32"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "aligned to the reference body" in printed and "resampled from 30 to 25 fps" in printed
    frames, _, audio_seconds = video_summary(out)
    assert frames == round(20 / 30 * 25) and audio_seconds is None, "no audio given, none written"


def test_generate_explains_missing_models(tmp_path, workspace, capsys):
    code = cli_main(["generate", "--image", str(workspace / "me.png"), "--audio", str(workspace / "speech.wav"),
                     "--models", str(tmp_path), "--reference-pose",
                     str(workspace / "models" / "reference_pose.safetensors"), "--out", str(tmp_path / "x.mp4")])
    assert code == 2
    assert "put it at" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_doctor_lists_missing_files_and_help_documents_options(tmp_path, capsys):
    assert cli_main(["doctor", "--models", str(tmp_path), "--no-smoke"]) == 0
    report = capsys.readouterr().out
    assert "MISSING  put it at models/mmgt/net-32500.pth" in report and "not yet  audio→video" in report
    with pytest.raises(SystemExit):
        cli_main(["generate", "--help"])
    assert "--pose" in capsys.readouterr().out
