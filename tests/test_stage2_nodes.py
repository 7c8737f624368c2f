"""The audio → video workflow through the nodes with tiny random models: 10 s of speech → 250 frames at 448×256."""

from __future__ import annotations

from pathlib import Path

import av
import torch

from executor import run
from test_stage1_nodes import make_speech
from workflow_assets import install_tiny_models, load_twin, with_tiny_overrides, write_inputs


def test_ten_seconds_of_speech_render_250_frames_at_448x256_with_sound(comfy_host, fixtures_dir):
    folder_paths = comfy_host["folder_paths"]
    install_tiny_models(Path(folder_paths.get_folder_paths("mmgt")[0]), fixtures_dir)
    inputs = Path(folder_paths.get_input_directory())
    write_inputs(inputs, fixtures_dir)
    make_speech(inputs / "speech_10s.wav", seconds=10.0)
    prompt = with_tiny_overrides(load_twin("mmgt_audio_to_video"))
    prompt["2"]["inputs"]["audio"] = "speech_10s.wav"
    prompt["12"]["inputs"]["dtype"] = "bf16"  # bf16 is ~2x faster on CPUs; this test checks the plumbing
    prompt["15"]["inputs"].update(width=448, height=256, context_overlap=2)

    result = run(prompt, comfy_host["classes"])

    keypoints = result.outputs["7"][0]
    assert keypoints.num_frames == 250
    frames, fps, audio = result.outputs["16"]
    assert frames.shape == (250, 256, 448, 3) and fps == 25.0
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1
    assert frames.std(dim=0).mean() > 0, "frames must not all be identical"
    assert audio["waveform"].shape[-1] == 10 * audio["sample_rate"], "the driving audio, cut to the video length"
    saved = Path(folder_paths.get_output_directory()) / "mmgt" / "audio_to_video_00001.mp4"
    with av.open(str(saved)) as container:
        assert len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == 250
