"""The official ``Net`` container: one module whose state dict is the released ``net-*.pth`` layout, key for key.

Prefixes: ``reference_unet.`` (ReferenceNet), ``denoising_unet.`` (3D UNet), ``pose_guider.``, ``audioproj.``.
No key renaming is needed: every sub-module carries the official attribute names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import WeightsError
from ..weights import COMPONENT_VIDEO_NET, load_weights, read_config, require_component, strict_load
from .audio_proj import AudioProjModel
from .config import VideoNetConfig
from .pose_guider import PoseGuider
from .reference_bank import ReferenceKV
from .reference_unet import ReferenceNet
from .unet3d import DenoisingUNet3D


class VideoNet(nn.Module):
    """ReferenceNet + denoising 3D UNet + PoseGuider + AudioProj, named exactly as the official ``Net``."""

    def __init__(self, config: VideoNetConfig | None = None, zero_init: bool = True) -> None:
        super().__init__()
        self.config = config or VideoNetConfig.sd15()
        self.reference_unet = ReferenceNet.from_unet_config(self.config.unet)
        self.denoising_unet = DenoisingUNet3D(self.config, zero_init)
        self.pose_guider = PoseGuider(self.config.pose_guider, zero_init)
        self.audioproj = AudioProjModel(self.config.audio_proj)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Activation checkpointing in both UNets (training); outputs do not change."""
        if enabled:
            self.reference_unet.enable_gradient_checkpointing()
        else:
            self.reference_unet.disable_gradient_checkpointing()
        self.denoising_unet.enable_gradient_checkpointing(enabled)

    def reference_kv(self, reference_latent: torch.Tensor, image_embeds: torch.Tensor,
                     round_to_fp16: bool = True) -> ReferenceKV:
        """Run the ReferenceNet once (t = 0) and project its banks for the denoiser; reuse for the whole video.

        ``reference_latent`` (B, 4, h, w) is the VAE mean x 0.18215; ``image_embeds`` the CLIP context (B, 1, D)
        (or (B, D)). Row i of the result serves denoiser batch row i; a single row serves every reading row.
        The official pipeline uses B = 2 with context [zeros; embeds]; only the conditional row is ever read
        (uncond CFG rows do not read the bank), so keep ``keys/values[name][1:]`` and pass
        ``reference_rows=(False, True)``. B = 2 also keeps GroupNorm valid when the deepest level is 1x1.
        """
        context = image_embeds if image_embeds.dim() == 3 else image_embeds[:, None]
        place = {"device": self.reference_unet.device, "dtype": self.reference_unet.dtype}
        bank = self.reference_unet.write_bank(reference_latent.to(**place), context.to(**place),
                                              round_to_fp16=round_to_fp16)
        return self.denoising_unet.prepare_reference(bank)


def build_video_net(config: VideoNetConfig, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> VideoNet:
    """An uninitialised VideoNet (built on the meta device, then given storage): fast, for loading weights into."""
    with torch.device("meta"):
        net = VideoNet(config, zero_init=False)
    return net.to(dtype).to_empty(device=device)


def load_video_net(
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    config: VideoNetConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    source_name: str | None = None,
) -> VideoNet:
    """Load an official ``net-*.pth`` / converted ``.safetensors`` (or a state dict) strictly into a VideoNet.

    The config comes from the argument, else from our safetensors metadata, else the released SD1.5 sizes.
    Every key must match by name and shape (WeightsError otherwise). Returns the net in eval mode.
    """
    metadata: Mapping[str, str] = {}
    if isinstance(source, Mapping):
        state_dict, name = source, source_name or "state dict"
    else:
        state_dict, metadata = load_weights(source)
        name = source_name or os.path.basename(os.fspath(source))
    require_component(state_dict, metadata, COMPONENT_VIDEO_NET, name)
    if config is None:
        stored = read_config(metadata)
        config = VideoNetConfig.from_dict(stored) if stored else VideoNetConfig.sd15()
    net = build_video_net(config, dtype, device)
    strict_load(net, state_dict, COMPONENT_VIDEO_NET, name)
    _check_all_state_loaded(net, name)
    return net.eval()


def _check_all_state_loaded(net: nn.Module, source: str) -> None:
    """Storage from ``to_empty`` is garbage; every parameter and buffer must therefore come from the file."""
    saved = set(net.state_dict())
    unsaved = [name for name, _ in [*net.named_parameters(), *net.named_buffers()] if name not in saved]
    if unsaved:
        raise WeightsError(f"'{source}': {len(unsaved)} tensors of the video net are not in its state dict "
                           f"({', '.join(unsaved[:5])}); this is a bug in mmgt_core.video.")
