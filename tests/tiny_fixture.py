"""The official fixtures' tiny Stage-II network configuration, and random conditioning for it, shared by the tests
that load net_tiny."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mmgt_core.tiny_models import tiny_video_net_config
from mmgt_core.video.conditioning import zero_branch_masks
from mmgt_core.video.config import AudioProjConfig, PoseGuiderConfig, VideoNetConfig
from mmgt_core.video.net import VideoNet
from mmgt_core.video.sampler import VideoConditioning, project_audio


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


def random_conditioning(net: VideoNet, frames: int, width: int, height: int, audio: bool = True
                        ) -> VideoConditioning:
    """Seeded random conditioning for ``net``: CLIP embeds, reference latent, uint8 pose frames, empty branch masks
    and (with ``audio``) projected audio tokens."""
    generator = torch.Generator().manual_seed(7)
    audio_proj = net.config.audio_proj
    features = torch.randn(frames, audio_proj.blocks, audio_proj.channels, generator=generator)
    pose = (torch.rand(frames, height, width, 3, generator=generator) * 255).to(torch.uint8)
    return VideoConditioning(
        image_embeds=torch.randn(1, net.config.unet.cross_attention_dim, generator=generator),
        reference_latent=torch.randn(1, 4, height // 8, width // 8, generator=generator) * 0.5,
        pose_frames=pose,
        masks=zero_branch_masks(frames, width, height),
        audio_tokens=project_audio(net.audioproj, features) if audio else None,
    )
