"""The audio → video workflow through the nodes with tiny random models: 10 s of speech → 250 frames at 448×256."""

from __future__ import annotations

from pathlib import Path

import av
import torch

from executor import run
from test_stage1_nodes import make_speech
from workflow_assets import tiny_twin


def test_ten_seconds_of_speech_render_250_frames_at_448x256_with_sound(workflow_host):
    folder_paths = workflow_host["folder_paths"]
    make_speech(Path(folder_paths.get_input_directory()) / "speech_10s.wav", seconds=10.0)
    prompt = tiny_twin("mmgt_audio_to_video")
    prompt["2"]["inputs"]["audio"] = "speech_10s.wav"
    prompt["12"]["inputs"]["dtype"] = "bf16"  # bf16 is ~2x faster on CPUs; this test checks the plumbing
    prompt["15"]["inputs"].update(width=448, height=256, context_overlap=2)

    result = run(prompt, workflow_host["classes"])

    keypoints = result.outputs["7"][0]
    assert keypoints.num_frames == 250
    video, preview = result.outputs["16"]  # MMGT Save Video: decoded and written chunk by chunk
    assert video.get_dimensions() == (448, 256) and preview.shape[1:] == (256, 448, 3)
    assert torch.isfinite(preview).all() and 0 <= preview.min() and preview.max() <= 1
    assert preview.std(dim=0).mean() > 0, "frames must not all be identical"
    saved = Path(video.get_stream_source())
    assert saved.parent == Path(folder_paths.get_output_directory()) / "mmgt"
    with av.open(str(saved)) as container:
        audio = container.streams.audio[0]
        assert abs(float(audio.duration * audio.time_base) - 10.0) < 0.07, "the driving audio, cut to the video"
        assert sum(1 for _ in container.decode(video=0)) == 250
