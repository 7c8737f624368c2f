"""Stage-I nodes end to end in the test executor: 20 s of espeak-ng speech → 500 frames of keypoints."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.io import wavfile

from executor import load_prompt, run
from mmgt_core.keypoints import PoseSequence
from mmgt_core.keypoints_io import save_keypoints_file
from mmgt_core.tiny_models import random_smga, tiny_smga_config
from mmgt_core.weights import save_weights

WORKFLOWS = Path(__file__).parent / "workflows"
SPEECH = ("Good morning everyone. Today I want to tell you a short story about gestures, speech and the way our "
          "hands move when we talk. Listen closely, because the rhythm of the words shapes every movement you see.")


def make_speech(path: Path, seconds: float = 20.0) -> None:
    """Speech from espeak-ng, trimmed or padded with silence to exactly ``seconds`` at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), SPEECH], check=True)
    rate, samples = wavfile.read(raw)
    target = int(seconds * rate)
    samples = np.pad(samples, (0, max(0, target - samples.shape[0])))[:target]
    wavfile.write(path, rate, samples)


@pytest.fixture()
def stage1_inputs(comfy_host, fixtures_dir):
    folder_paths = comfy_host["folder_paths"]
    models = Path(folder_paths.get_folder_paths("mmgt")[0])
    (models / "wavlm").mkdir(parents=True)
    shutil.copy(fixtures_dir / "audio" / "wavlm_tiny" / "WavLM-tiny.pt", models / "wavlm" / "WavLM-tiny.pt")
    config = tiny_smga_config()
    save_weights(random_smga(config, seed=5).state_dict(), models / "smga_tiny.safetensors", "smga", config.to_dict(),
                 "test")
    inputs = Path(folder_paths.get_input_directory())
    inputs.mkdir(parents=True, exist_ok=True)
    make_speech(inputs / "speech_20s.wav")
    reference = load_file(fixtures_dir / "pose" / "keypoints.safetensors")["keypoints_px"][:1]
    save_keypoints_file(PoseSequence(reference, 512, 512), inputs / "reference_pose.safetensors")
    return comfy_host


def test_twenty_seconds_of_speech_give_500_frames_of_keypoints(stage1_inputs):
    prompt = load_prompt(WORKFLOWS / "audio_to_pose_api.json")
    result = run(prompt, stage1_inputs["classes"])
    features, duration, frames, notes = result.outputs["3"]
    assert duration == pytest.approx(20.0) and frames == 500 and features.features.shape == (500, 67)
    assert "shorter" not in notes and "silent" not in notes
    keypoints = result.outputs["6"][0]
    assert keypoints.keypoints.shape == (500, 134, 3) and (keypoints.width, keypoints.height) == (512, 512)
    assert torch.isfinite(keypoints.keypoints).all()
    reference = load_file(Path(stage1_inputs["folder_paths"].get_input_directory()) / "reference_pose.safetensors")
    torch.testing.assert_close(keypoints.keypoints[0, :9], reference["keypoints"][0, :9], atol=1e-3, rtol=0)
    assert result.outputs["7"][0].shape == (500, 512, 512, 3)
    node = stage1_inputs["classes"]["MMGT_AudioToPose"]()
    inputs = {k: v for k, v in prompt["6"]["inputs"].items() if not isinstance(v, list)}
    again = node.generate(result.outputs["4"][0], features, result.outputs["5"][0], **inputs)[0]
    assert torch.equal(again.keypoints, keypoints.keypoints), "same seed, same motion"
