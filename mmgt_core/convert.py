"""Rewrite an official checkpoint as safetensors with metadata (component, config, source)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import WeightsError
from .weights import (
    COMPONENT_SMGA,
    COMPONENT_UNKNOWN,
    COMPONENT_VIDEO_NET,
    COMPONENT_WAVLM_UNILM,
    detect_component,
    load_weights,
    read_config,
    save_weights,
)


def infer_smga_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """SMGA hyper-parameters read off the weight shapes, as the loader reads them (heads: the official 8)."""
    from .smga.model import SMGAConfig

    config = SMGAConfig.from_state_dict(state).to_dict()
    del config["dropout"]  # a training setting, not a shape
    return config


def infer_video_net_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Stage-II sizes read off the weight shapes."""
    prefix = "denoising_unet."
    blocks = sorted({int(m.group(1)) for key in state if (m := re.match(r"denoising_unet\.down_blocks\.(\d+)\.", key))})
    channels = [int(state[f"{prefix}down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in blocks]
    cross = next(int(v.shape[1]) for k, v in state.items() if k.startswith(prefix) and k.endswith("attn2.to_k.weight"))
    audio = next((int(v.shape[1]) for k, v in state.items() if k.endswith("attn2_0.to_k.weight")), None)
    config: dict[str, Any] = {"block_out_channels": channels, "cross_attention_dim": cross,
                              "audio_attention_dim": audio}
    if "audioproj.proj1.weight" in state:
        config["audio_proj"] = {
            "input_dim": int(state["audioproj.proj1.weight"].shape[1]),
            "intermediate_dim": int(state["audioproj.proj1.weight"].shape[0]),
            "tokens_x_dim": int(state["audioproj.proj3.weight"].shape[0]),
            "output_dim": int(state["audioproj.norm.weight"].shape[0]),
        }
    if "pose_guider.conv_out.weight" in state:
        config["pose_guider_out_channels"] = int(state["pose_guider.conv_out.weight"].shape[0])
    return config


def video_net_config_for(state: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The VideoNetConfig dict to store: the given one, else the released SD1.5 sizes; checked against the shapes."""
    from .video.config import VideoNetConfig
    from .video.net import VideoNet

    chosen = VideoNetConfig.from_dict(config) if config else VideoNetConfig.sd15()
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VideoNet(chosen, zero_init=False).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        sizes = infer_video_net_config(state)
        raise WeightsError(f"the video net's shapes ({sizes}) do not match the config; pass the matching "
                           "VideoNetConfig JSON with --video-config.")
    return chosen.to_dict()


def convert_checkpoint(source: str | Path, target: str | Path, video_config: Mapping[str, Any] | None = None
                       ) -> tuple[str, dict[str, Any]]:
    """Convert ``source`` (official .pt/.pth or safetensors) to our safetensors; returns (component, config)."""
    state, metadata = load_weights(source)
    component = detect_component(state, metadata)
    if component == COMPONENT_WAVLM_UNILM:  # rewrite in the transformers layout the loaders use directly
        from .audio.wavlm import export_wavlm_safetensors

        export_wavlm_safetensors(source, target)
        return component, read_config(load_weights(target)[1])
    if component == COMPONENT_SMGA:
        config = infer_smga_config(state)
    elif component == COMPONENT_VIDEO_NET:
        config = video_net_config_for(state, video_config)
    elif component == COMPONENT_UNKNOWN:
        raise WeightsError(f"'{Path(source).name}' is not an MMGT checkpoint this tool knows (SMGA "
                           "audio2pose_best_model.pt, Stage-II net-*.pth, or unilm WavLM-Large.pt).")
    else:
        config = read_config(metadata)
    save_weights(state, target, component, config, Path(source).name)
    return component, config
