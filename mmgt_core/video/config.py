"""Configurations of the Stage-II video network, as plain dataclasses.

``VideoNetConfig.sd15()`` is the released MMGT network (SD1.5 sizes). ``VideoNetConfig.from_diffusers_unet_config``
builds one from a diffusers ``unet/config.json`` (e.g. the tiny parity fixture) plus the MMGT-only sizes.
``to_dict``/``from_dict`` round-trip through JSON (stored as safetensors metadata by ``mmgt_core.weights``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmgt_core.constants import MOTION_MODULE_MAX_FRAMES

SD15_DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD15_UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

RELEASED_BRANCH_WEIGHTS = (1.0, 1.0, 2.0)
"""MM-HAA branch weights (full, face, lip) the released inference applies (spec Q1: pose/face/lip_weight)."""
# UNetConfig fields that diffusers' UNet2DConditionModel config names the same (and reads with the same defaults).
_SAME_NAME_FIELDS = ("in_channels", "out_channels", "layers_per_block", "cross_attention_dim", "norm_num_groups",
                     "norm_eps", "flip_sin_to_cos", "freq_shift", "downsample_padding")


@dataclass(frozen=True)
class UNetConfig:
    """The SD1.5-layout UNet shared by the ReferenceNet and the denoising 3D UNet."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_heads: int = 8  # diffusers' SD1.5 "attention_head_dim" is really the number of heads
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    sample_size: int = 64

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    def diffusers_config(self) -> dict[str, Any]:
        """Keyword arguments for ``diffusers.UNet2DConditionModel`` (the ReferenceNet)."""
        return {
            **{name: getattr(self, name) for name in _SAME_NAME_FIELDS},
            "sample_size": self.sample_size,
            "down_block_types": SD15_DOWN_BLOCK_TYPES[: len(self.block_out_channels)],
            "up_block_types": SD15_UP_BLOCK_TYPES[-len(self.block_out_channels):],
            "block_out_channels": tuple(self.block_out_channels),
            "attention_head_dim": self.attention_heads,
        }


@dataclass(frozen=True)
class MotionModuleConfig:
    """AnimateDiff-v2 'Vanilla' temporal modules (released ``motion_module_kwargs``)."""

    num_attention_heads: int = 8
    num_transformer_block: int = 1
    num_attention_blocks: int = 2  # ("Temporal_Self", "Temporal_Self")
    max_frames: int = MOTION_MODULE_MAX_FRAMES  # temporal_position_encoding_max_len: the ``pe`` buffer's length
    resolutions: tuple[int, ...] = (1, 2, 4, 8)
    mid_block: bool = True


@dataclass(frozen=True)
class AudioModuleConfig:
    """MM-HAA: mask-gated audio cross-attention, present only in the first down blocks (spec Q12)."""

    audio_attention_dim: int = 768
    down_block_depths: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class AudioProjConfig:
    """AudioProjModel: a 5-frame window of 12 wav2vec2 layers -> 32 context tokens per video frame."""

    seq_len: int = 5
    blocks: int = 12
    channels: int = 768
    intermediate_dim: int = 512
    output_dim: int = 768
    context_tokens: int = 32

    @property
    def input_dim(self) -> int:
        return self.seq_len * self.blocks * self.channels


@dataclass(frozen=True)
class PoseGuiderConfig:
    """PoseGuider: pose frames in [0, 1] -> features added after the 3D UNet's conv_in (1/8 resolution)."""

    embedding_channels: int = 320
    conditioning_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)


@dataclass(frozen=True)
class VideoNetConfig:
    """Everything needed to build the official ``Net`` (ReferenceNet, 3D UNet, PoseGuider, AudioProj)."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    motion: MotionModuleConfig = field(default_factory=MotionModuleConfig)
    audio: AudioModuleConfig = field(default_factory=AudioModuleConfig)
    audio_proj: AudioProjConfig = field(default_factory=AudioProjConfig)
    pose_guider: PoseGuiderConfig = field(default_factory=PoseGuiderConfig)

    @classmethod
    def sd15(cls) -> VideoNetConfig:
        """The released MMGT network: SD1.5 UNets, audio dim 768, AudioProj 5x12x768 -> 32x768, PoseGuider 320."""
        return cls()

    @classmethod
    def from_diffusers_unet_config(
        cls,
        unet_config: str | os.PathLike[str] | Mapping[str, Any],
        audio_attention_dim: int = 768,
        audio_proj: AudioProjConfig | None = None,
        pose_guider: PoseGuiderConfig | None = None,
        motion: MotionModuleConfig | None = None,
    ) -> VideoNetConfig:
        """Build from a diffusers ``unet/config.json`` (path or dict) plus the MMGT-only sizes."""
        unet = unet_config_from_diffusers(unet_config)
        return cls(
            unet=unet,
            motion=motion or MotionModuleConfig(),
            audio=AudioModuleConfig(audio_attention_dim=audio_attention_dim),
            audio_proj=audio_proj or AudioProjConfig(),
            pose_guider=pose_guider or PoseGuiderConfig(embedding_channels=unet.block_out_channels[0]),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoNetConfig:
        """Inverse of ``to_dict`` (lists from JSON become tuples)."""
        parts = {"unet": UNetConfig, "motion": MotionModuleConfig, "audio": AudioModuleConfig,
                 "audio_proj": AudioProjConfig, "pose_guider": PoseGuiderConfig}
        kwargs = {name: kind(**_tuples(data[name])) for name, kind in parts.items() if name in data}
        return cls(**kwargs)


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def unet_config_from_diffusers(config: str | os.PathLike[str] | Mapping[str, Any]) -> UNetConfig:
    """Read the fields MMGT uses from a diffusers UNet2DConditionModel config; refuse layouts it cannot build."""
    if not isinstance(config, Mapping):
        config = json.loads(Path(config).read_text(encoding="utf-8"))
    blocks = tuple(config["block_out_channels"])
    _require(tuple(config.get("down_block_types", SD15_DOWN_BLOCK_TYPES)) == SD15_DOWN_BLOCK_TYPES[: len(blocks)]
             and tuple(config.get("up_block_types", SD15_UP_BLOCK_TYPES)) == SD15_UP_BLOCK_TYPES[-len(blocks):],
             "only the SD1.5 block layout is supported")
    _require(not config.get("use_linear_projection", False), "use_linear_projection must be false (SD1.5)")
    _require(config.get("transformer_layers_per_block", 1) == 1, "transformer_layers_per_block must be 1")
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    _require(isinstance(heads, int), "a single attention head count is required (SD1.5 style)")
    defaults = UNetConfig()
    return UNetConfig(block_out_channels=blocks, attention_heads=heads, sample_size=config.get("sample_size") or 64,
                      **{name: config.get(name, getattr(defaults, name)) for name in _SAME_NAME_FIELDS})


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(f"Unsupported UNet config for MMGT: {problem}.")
