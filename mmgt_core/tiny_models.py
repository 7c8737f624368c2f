"""Random-weight models for tests, benches and the doctor smoke run: the one init recipe and the one tiny config.

* :func:`init_weights_recipe` is the official fixtures' seeded per-parameter recipe (SMGA and Stage-II fixtures);
  every random SMGA, video net, VAE and SD1.5 UNet here gets it. The transformers models (WavLM, wav2vec2, CLIP)
  keep their own seeded initialisation (the weight-norm parametrisations of WavLM/wav2vec2 do not fit it).
* The tiny sizes are those of the official fixtures: :data:`~mmgt_core.smga.model.TINY_TEST_CONFIG` for SMGA and
  :func:`tiny_video_net_config` for Stage II, with audio encoders of width :data:`TINY_HIDDEN`.
* :func:`write_tiny_model_set` writes every file exactly where and how the real one would be (``models/mmgt``
  layout of :mod:`mmgt_core.models_table`), so the real loading code runs on them. The outputs are noise: this
  proves the code paths, not the quality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch import nn

from .constants import ENCODER_SAMPLE_RATE
from .keypoints import PoseSequence
from .keypoints_io import save_keypoints_file
from .quiet import quiet_loading
from .weights import save_weights

if TYPE_CHECKING:
    from .smga.model import GestureDecoder, SMGAConfig
    from .video.config import VideoNetConfig
    from .video.net import VideoNet

TINY_HIDDEN = 32  # wav2vec2/WavLM hidden size, CLIP projection and UNet cross-attention width
TINY_AUDIO_LAYERS = 4
SMGA_OUTPUT_SCALE = {"final_layer.weight": 0.1, "final_layer.bias": 0.1}  # the fixtures' quieter SMGA output layer


def init_weights_recipe(model: nn.Module, seed: int, scale_overrides: Optional[Mapping[str, float]] = None) -> None:
    """The fixtures' random-weight recipe: parameter i (named_parameters order) gets Generator(seed + i).

    ≥2-D '*weight': randn/sqrt(fan_in); other ≥2-D: randn; 1-D '*weight': 1 + 0.1·randn; other 1-D: 0.05·randn.
    """
    overrides = dict(scale_overrides or {})
    with torch.no_grad():
        for index, (name, param) in enumerate(model.named_parameters()):
            generator = torch.Generator().manual_seed(seed + index)
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim >= 2:
                value = noise / math.sqrt(math.prod(param.shape[1:])) if name.endswith("weight") else noise
            else:
                value = 1 + 0.1 * noise if name.endswith("weight") else 0.05 * noise
            param.copy_(value * overrides.get(name, 1.0))


# ---------------------------------------------------------------------------------------------------------------
# Stage I


def tiny_smga_config() -> SMGAConfig:
    """The fixtures' tiny SMGA, reading the tiny WavLM's Stage-I features (TINY_HIDDEN ‖ 35 EDGE features)."""
    from .audio.edge_features import EDGE_FEATURE_DIM
    from .smga.model import TINY_TEST_CONFIG

    return replace(TINY_TEST_CONFIG, cond_feature_dim=TINY_HIDDEN + EDGE_FEATURE_DIM)


def random_smga(config: SMGAConfig, seed: int) -> GestureDecoder:
    """A GestureDecoder in eval mode with the recipe's weights (and the fixtures' quieter output layer)."""
    from .smga.model import GestureDecoder

    model = GestureDecoder(config)
    init_weights_recipe(model, seed, SMGA_OUTPUT_SCALE)
    return model.eval()


def write_tiny_smga(path: Path) -> None:
    config = tiny_smga_config()
    save_weights(random_smga(config, seed=11).state_dict(), path, "smga", config.to_dict(), "tiny random (doctor)")


def write_tiny_wavlm(folder: Path) -> None:
    from transformers import WavLMConfig, WavLMModel

    torch.manual_seed(12)
    config = WavLMConfig(hidden_size=TINY_HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         do_stable_layer_norm=True, feat_extract_norm="layer", num_buckets=32, max_bucket_distance=64)
    WavLMModel(config).eval().save_pretrained(folder, safe_serialization=True)


# ---------------------------------------------------------------------------------------------------------------
# Stage II


def tiny_video_net_config() -> VideoNetConfig:
    """The official fixtures' tiny Stage-II net: SD1.5 layout at 32 channels, audio dim 48, small AudioProj."""
    from .video.config import AudioModuleConfig, AudioProjConfig, PoseGuiderConfig, UNetConfig, VideoNetConfig

    return VideoNetConfig(
        unet=UNetConfig(block_out_channels=(32, 32, 32, 32), cross_attention_dim=TINY_HIDDEN, sample_size=16),
        audio=AudioModuleConfig(audio_attention_dim=48),
        audio_proj=AudioProjConfig(seq_len=5, blocks=TINY_AUDIO_LAYERS, channels=TINY_HIDDEN, intermediate_dim=64,
                                   output_dim=48, context_tokens=32),
        pose_guider=PoseGuiderConfig(embedding_channels=32, block_out_channels=(16, 32, 96, 256)),
    )


def random_video_net(config: VideoNetConfig, dtype: torch.dtype = torch.float32, seed: int = 16) -> VideoNet:
    """The video net with the recipe's weights, built on the meta device (never holding a second copy)."""
    from .video.motion_module import PositionalEncoding, sinusoidal_table
    from .video.net import build_video_net

    net = build_video_net(config, dtype)
    init_weights_recipe(net, seed)
    with torch.no_grad():  # the persistent position tables are buffers, left as garbage by to_empty
        for module in net.modules():
            if isinstance(module, PositionalEncoding):
                module.pe.copy_(sinusoidal_table(module.pe.shape[1], module.pe.shape[2]))
    return net.eval()


def random_diffusers_model(model_class: type[nn.Module], dtype: torch.dtype, seed: int, **config: object
                           ) -> nn.Module:
    """A diffusers model built on the meta device, given storage and the recipe's weights, in eval mode (every
    parameter is overwritten: ``to_empty`` storage is garbage, possibly NaN or slow denormals)."""
    with torch.device("meta"):
        model = model_class(**config)
    with quiet_loading():  # diffusers warns about casting with .to(); every weight is set below anyway
        model = model.to(dtype).to_empty(device="cpu")
    init_weights_recipe(model, seed)
    return model.eval()


def random_vae(tiny: bool, dtype: torch.dtype = torch.float32, seed: int = 15) -> nn.Module:
    """AutoencoderKL with the sd-vae-ft-mse layout, or the tiny one (4 × 16 channels)."""
    from diffusers import AutoencoderKL

    channels = (16, 16, 16, 16) if tiny else (128, 256, 512, 512)
    return random_diffusers_model(
        AutoencoderKL, dtype, seed, block_out_channels=channels, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1 if tiny else 2,
        norm_num_groups=16 if tiny else 32, latent_channels=4, sample_size=512)


def random_wav2vec(tiny: bool, seed: int = 13) -> nn.Module:
    """``Wav2Vec2Model`` of wav2vec2-base size, or the tiny one (TINY_AUDIO_LAYERS layers of TINY_HIDDEN)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config() if not tiny else Wav2Vec2Config(
        hidden_size=TINY_HIDDEN, num_hidden_layers=TINY_AUDIO_LAYERS, num_attention_heads=4, intermediate_size=64,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    torch.manual_seed(seed)
    return Wav2Vec2Model(config).eval()


def write_tiny_wav2vec2(folder: Path) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    random_wav2vec(tiny=True).save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)


def write_tiny_clip(folder: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(14)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=224, patch_size=14, projection_dim=TINY_HIDDEN, hidden_act="quick_gelu")
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder, safe_serialization=True)


def write_tiny_video_net(path: Path) -> None:
    config = tiny_video_net_config()
    save_weights(random_video_net(config).state_dict(), path, "video_net", config.to_dict(), "tiny random (doctor)")


# ---------------------------------------------------------------------------------------------------------------
# Synthetic inputs


def synthetic_speech(seconds: float, rate: int = ENCODER_SAMPLE_RATE) -> np.ndarray:
    """Speech-like float32 samples: a 140 Hz voiced tone with a 4 Hz syllable envelope and a little noise."""
    t = np.arange(int(round(seconds * rate)), dtype=np.float32) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    noise = np.random.default_rng(0).standard_normal(t.shape[0]).astype(np.float32) * 0.01
    return 0.3 * np.sin(2 * np.pi * 140.0 * t) * envelope + noise


def synthetic_reference_pose(width: int = 256, height: int = 256) -> PoseSequence:
    """A plausible upper-body pose (one frame) centred on the canvas, for runs without a pose detector."""
    s = min(width, height) / 512
    cx, cy = width / 2, height / 2
    points = torch.zeros(134, 3)
    body = {0: (0, -120), 1: (0, -40), 2: (-70, -40), 3: (-100, 40), 4: (-90, 110), 5: (70, -40), 6: (100, 40),
            7: (90, 110), 8: (-40, 130), 11: (40, 130), 14: (-15, -135), 15: (15, -135), 16: (-35, -125),
            17: (35, -125)}
    for index, (dx, dy) in body.items():
        points[index] = torch.tensor([cx + dx * s, cy + dy * s, 0.9])
    angles = torch.linspace(0, 2 * torch.pi, 69)[:68]
    points[24:92, 0] = cx + 45 * s * torch.cos(angles)
    points[24:92, 1] = cy - 120 * s + 55 * s * torch.sin(angles)
    points[24:92, 2] = 0.9
    for start, (hx, hy) in ((92, (90, 130)), (113, (-90, 130))):
        offsets = torch.linspace(-15, 15, 21) * s
        points[start : start + 21, 0] = cx + hx * s + offsets
        points[start : start + 21, 1] = cy + hy * s + offsets.abs()
        points[start : start + 21, 2] = 0.9
    return PoseSequence(points[None], width, height)


def moving_pose(frames: int, width: int, height: int) -> PoseSequence:
    """The synthetic upper-body pose swaying a few pixels per frame (so every window's pose and masks differ)."""
    base = synthetic_reference_pose(width, height).keypoints[0]
    phase = torch.arange(frames, dtype=torch.float32)
    sway = torch.stack([torch.sin(phase / 7), torch.cos(phase / 11)], dim=1) * min(width, height) * 0.02
    keypoints = base[None].repeat(frames, 1, 1)
    keypoints[..., :2] += sway[:, None, :]
    return PoseSequence(keypoints, width, height)


def write_tiny_model_set(models_dir: Path) -> Path:
    """Write every model the pipeline needs into ``models_dir`` (the models/mmgt layout); returns it."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with quiet_loading():  # no "Writing model shards" bars from transformers
        write_tiny_smga(models_dir / "smga.safetensors")
        write_tiny_wavlm(models_dir / "wavlm-large")
        write_tiny_video_net(models_dir / "mmgt_video.safetensors")
        random_vae(tiny=True).save_pretrained(models_dir / "sd-vae-ft-mse", safe_serialization=True)
        write_tiny_clip(models_dir / "image_encoder")
        write_tiny_wav2vec2(models_dir / "wav2vec2-base-960h")
    save_keypoints_file(synthetic_reference_pose(), models_dir / "reference_pose.safetensors")
    return models_dir
