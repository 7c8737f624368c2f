"""The official fixtures' tiny Stage-II network configuration, shared by the tests that load net_tiny."""

from __future__ import annotations

import json
from pathlib import Path

from mmgt_core.tiny_models import tiny_video_net_config
from mmgt_core.video.config import AudioProjConfig, PoseGuiderConfig, VideoNetConfig


def tiny_net_config(fixtures: Path) -> VideoNetConfig:
    """:func:`mmgt_core.tiny_models.tiny_video_net_config`, checked against the net stage2_info.json describes."""
    info = json.loads((fixtures / "stage2" / "stage2_info.json").read_text())["net"]
    described = VideoNetConfig.from_diffusers_unet_config(
        fixtures / "stage2" / "tiny_sd15" / "unet" / "config.json",
        audio_attention_dim=info["unet_additional_kwargs"]["audio_attention_dim"],
        audio_proj=AudioProjConfig(**info["audioproj_kwargs"]),
        pose_guider=PoseGuiderConfig(embedding_channels=info["pose_guider"]["conditioning_embedding_channels"],
                                     block_out_channels=tuple(info["pose_guider"]["block_out_channels"])),
    )
    config = tiny_video_net_config()
    assert described == config, f"the fixtures' tiny net is not tiny_video_net_config(): {described}"
    return config
