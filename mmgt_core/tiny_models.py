"""A complete set of tiny random-weight models in the real file formats, for smoke runs and tests.

Every file is written exactly where and how the real one would be (``models/mmgt`` layout of
:mod:`mmgt_core.models_table`), so the real loading code runs on them. The outputs are noise: this proves the
code paths, not the quality.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .keypoints import PoseSequence
from .keypoints_io import save_keypoints_file
from .weights import save_weights

TINY_HIDDEN = 32  # wav2vec2/WavLM hidden size, CLIP projection and UNet cross-attention width
TINY_AUDIO_LAYERS = 4


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def write_tiny_smga(path: Path) -> None:
    from .smga.model import GestureDecoder, SMGAConfig, init_weights_recipe

    config = SMGAConfig(latent_dim=40, ff_size=96, num_layers=2, num_heads=4, cond_feature_dim=TINY_HIDDEN + 35)
    model = GestureDecoder(config)
    init_weights_recipe(model, seed=11, scale_overrides={"final_layer.weight": 0.1, "final_layer.bias": 0.1})
    save_weights(model.state_dict(), path, "smga", config.to_dict(), "tiny random (doctor)")


def write_tiny_wavlm(folder: Path) -> None:
    from transformers import WavLMConfig, WavLMModel

    _seeded(12)
    config = WavLMConfig(hidden_size=TINY_HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         do_stable_layer_norm=True, feat_extract_norm="layer", num_buckets=32, max_bucket_distance=64)
    WavLMModel(config).eval().save_pretrained(folder, safe_serialization=True)


def write_tiny_wav2vec2(folder: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    _seeded(13)
    config = Wav2Vec2Config(hidden_size=TINY_HIDDEN, num_hidden_layers=TINY_AUDIO_LAYERS, num_attention_heads=4,
                            intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4)
    Wav2Vec2Model(config).eval().save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)


def write_tiny_clip(folder: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    _seeded(14)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=224, patch_size=14, projection_dim=TINY_HIDDEN, hidden_act="quick_gelu")
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder, safe_serialization=True)


def write_tiny_vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    _seeded(15)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 16, 16),
                        layers_per_block=1, latent_channels=4, norm_num_groups=16, sample_size=64)
    vae.eval().save_pretrained(folder, safe_serialization=True)


def tiny_video_net_config():
    from .video.config import AudioModuleConfig, AudioProjConfig, PoseGuiderConfig, UNetConfig, VideoNetConfig

    return VideoNetConfig(
        unet=UNetConfig(block_out_channels=(32, 32, 32, 32), cross_attention_dim=TINY_HIDDEN, sample_size=16),
        audio=AudioModuleConfig(audio_attention_dim=48),
        audio_proj=AudioProjConfig(seq_len=5, blocks=TINY_AUDIO_LAYERS, channels=TINY_HIDDEN, intermediate_dim=64,
                                   output_dim=48, context_tokens=32),
        pose_guider=PoseGuiderConfig(embedding_channels=32, block_out_channels=(16, 32, 96, 256)),
    )


def write_tiny_video_net(path: Path) -> None:
    from .video.net import VideoNet

    _seeded(16)
    config = tiny_video_net_config()
    net = VideoNet(config, zero_init=False)
    with torch.no_grad():  # small random weights everywhere, like the fixtures' recipe, so every path contributes
        for name, parameter in net.named_parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0, 1).div_(float(parameter[0].numel()) ** 0.5)
            elif name.endswith("weight"):
                parameter.normal_(1, 0.1)
            else:
                parameter.normal_(0, 0.05)
    save_weights(net.state_dict(), path, "video_net", config.to_dict(), "tiny random (doctor)")


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


def write_tiny_model_set(models_dir: Path) -> Path:
    """Write every model the pipeline needs into ``models_dir`` (the models/mmgt layout); returns it."""
    models_dir.mkdir(parents=True, exist_ok=True)
    write_tiny_smga(models_dir / "smga.safetensors")
    write_tiny_wavlm(models_dir / "wavlm-large")
    write_tiny_video_net(models_dir / "mmgt_video.safetensors")
    write_tiny_vae(models_dir / "sd-vae-ft-mse")
    write_tiny_clip(models_dir / "image_encoder")
    write_tiny_wav2vec2(models_dir / "wav2vec2-base-960h")
    save_keypoints_file(synthetic_reference_pose(), models_dir / "reference_pose.safetensors")
    return models_dir
