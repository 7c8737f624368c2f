"""The whole audio → video graph through the nodes with tiny random models: 10 s of speech, 250 frames at 448×256."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import torch
from safetensors.torch import load_file
from test_stage1_nodes import make_speech
from tiny_fixture import tiny_net_config

from executor import load_prompt, run
from mmgt_core.keypoints import PoseSequence
from mmgt_core.keypoints_io import save_keypoints_file
from mmgt_core.smga.model import GestureDecoder, SMGAConfig, init_weights_recipe
from mmgt_core.weights import save_weights

WORKFLOWS = Path(__file__).parent / "workflows"


def install_tiny_models(models: Path, fixtures: Path) -> None:
    """Tiny random models in the real file formats, where the loaders look for them."""
    (models / "wavlm").mkdir(parents=True, exist_ok=True)
    shutil.copy(fixtures / "audio" / "wavlm_tiny" / "WavLM-tiny.pt", models / "wavlm" / "WavLM-tiny.pt")
    smga_config = SMGAConfig(latent_dim=40, ff_size=96, num_layers=2, num_heads=4, cond_feature_dim=32 + 35)
    smga = GestureDecoder(smga_config)
    init_weights_recipe(smga, seed=5, scale_overrides={"final_layer.weight": 0.1, "final_layer.bias": 0.1})
    save_weights(smga.state_dict(), models / "smga_tiny.safetensors", "smga", smga_config.to_dict(), "test")
    net_config = tiny_net_config(fixtures)
    save_weights(load_file(fixtures / "stage2" / "net_tiny.safetensors"), models / "net_tiny.safetensors",
                 "video_net", net_config.to_dict(), "net_tiny")
    shutil.copytree(fixtures / "stage2" / "tiny_vae", models / "tiny_vae")
    shutil.copytree(fixtures / "stage2" / "tiny_image_encoder", models / "tiny_image_encoder")
    shutil.copytree(fixtures / "audio" / "wav2vec2_tiny", models / "wav2vec2_tiny")


def test_ten_seconds_of_speech_render_250_frames_at_448x256_with_sound(comfy_host, fixtures_dir):
    folder_paths = comfy_host["folder_paths"]
    install_tiny_models(Path(folder_paths.get_folder_paths("mmgt")[0]), fixtures_dir)
    inputs = Path(folder_paths.get_input_directory())
    inputs.mkdir(parents=True, exist_ok=True)
    make_speech(inputs / "speech_10s.wav", seconds=10.0)
    shutil.copy(fixtures_dir / "stage2" / "reference_image.png", inputs / "reference.png")
    reference = load_file(fixtures_dir / "pose" / "keypoints.safetensors")["keypoints_px"][:1]
    save_keypoints_file(PoseSequence(reference, 512, 512), inputs / "reference_pose.safetensors")

    result = run(load_prompt(WORKFLOWS / "audio_to_video_api.json"), comfy_host["classes"])

    frames, fps, audio = result.outputs["16"]
    assert frames.shape == (250, 256, 448, 3) and fps == 25.0
    assert audio["waveform"].shape[-1] == 10 * audio["sample_rate"], "the driving audio, cut to the video length"
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1
    assert frames.std(dim=0).mean() > 0, "frames must not all be identical"
    saved = Path(folder_paths.get_output_directory()) / "video" / "mmgt_00001.mp4"
    with av.open(str(saved)) as container:
        assert container.streams.video[0].frames in (250, 0) and len(container.streams.audio) == 1
        decoded = sum(1 for _ in container.decode(video=0))
    assert decoded == 250
