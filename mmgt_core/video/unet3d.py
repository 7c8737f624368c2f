"""The denoising 3D UNet of MMGT (Moore-AnimateAnyone + AnimateDiff-v2 motion + Hallo/MMGT audio), spec 3.3.

Block layout (SD1.5 sizes; AM = MM-HAA audio module, MM = motion module):

    down_blocks.0-2  CrossAttnDown: per layer resnet -> spatial attn (+reference) -> AM -> MM; then downsample
    down_blocks.3    Down:          resnet -> MM
    mid_block        resnet -> spatial attn -> MM -> resnet
    up_blocks.0      Up:            (cat skip) resnet -> MM; upsample
    up_blocks.1-3    CrossAttnUp:   (cat skip) resnet -> spatial attn (+reference) -> MM; upsample (not last)

Audio modules exist only in down_blocks.0-2 (spec Q12); their inner dim is the layer's *input* channels
(Hallo quirk Q13). Hidden states are (b*f, C, H, W) frame batches; any H, W (multiples of 8 in latent space)
work, because nothing reshapes tokens to a square.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from einops import rearrange
from torch import nn

from ..errors import InputError
from .blocks3d import CheckpointedLayers, ReferenceTransformerBlock, SpatialTransformer, StepInputs
from .config import RELEASED_BRANCH_WEIGHTS, UNetConfig, VideoNetConfig
from .mmhaa import AudioTransformer, BranchMaskLevels, level_masks
from .motion_module import MotionModule
from .reference_bank import ReferenceBank, ReferenceKV, pair_blocks, project_bank


def _resnet(unet: UNetConfig, in_channels: int, out_channels: int) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=unet.time_embed_dim,
                         eps=unet.norm_eps, groups=unet.norm_num_groups)


def _spatial(unet: UNetConfig, channels: int) -> SpatialTransformer:
    return SpatialTransformer(channels, unet.attention_heads, unet.cross_attention_dim, unet.norm_num_groups)


def _motion(config: VideoNetConfig, channels: int, zero_init: bool) -> MotionModule:
    motion = config.motion
    return MotionModule(channels, motion.num_attention_heads, motion.max_frames, motion.num_transformer_block,
                        motion.num_attention_blocks, zero_init)


def _motion_modules(config: VideoNetConfig, channels: int, layers: int, use_motion: bool, zero_init: bool
                    ) -> nn.ModuleList | None:
    """One motion module per layer of a block, or None for a block without temporal layers."""
    return nn.ModuleList([_motion(config, channels, zero_init) for _ in range(layers)]) if use_motion else None


def _downsamplers(unet: UNetConfig, channels: int) -> nn.ModuleList:
    """The SD1.5 strided-conv downsampler (named ``op``, so the state-dict keys match)."""
    return nn.ModuleList([Downsample2D(channels, use_conv=True, out_channels=channels,
                                       padding=unet.downsample_padding, name="op")])


def _audio(config: VideoNetConfig, layer_in: int, channels: int, zero_init: bool) -> AudioTransformer:
    heads = config.unet.attention_heads
    dim = heads * (layer_in // heads)  # Q13: sized by the layer's input channels, applied to its output channels
    return AudioTransformer(channels, dim, heads, config.audio.audio_attention_dim, config.unet.norm_num_groups,
                            zero_init)


class DownBlock3D(CheckpointedLayers):
    """Down block; with ``cross_attention`` it has spatial attention and, at the audio depths, audio modules
    (CrossAttnDownBlock3D): per layer resnet -> spatial attn -> AM -> MM; then downsample."""

    def __init__(self, config: VideoNetConfig, in_channels: int, out_channels: int, depth: int, add_downsample: bool,
                 use_motion: bool, cross_attention: bool, zero_init: bool = True) -> None:
        super().__init__()
        unet, layers = config.unet, config.unet.layers_per_block
        layer_inputs = [in_channels] + [out_channels] * (layers - 1)
        self.depth = depth
        if cross_attention:
            self.attentions = nn.ModuleList([_spatial(unet, out_channels) for _ in range(layers)])
        self.resnets = nn.ModuleList([_resnet(unet, layer_in, out_channels) for layer_in in layer_inputs])
        self.audio_modules = None
        if cross_attention and depth in config.audio.down_block_depths:
            self.audio_modules = nn.ModuleList(
                [_audio(config, layer_in, out_channels, zero_init) for layer_in in layer_inputs]
            )
        self.motion_modules = _motion_modules(config, out_channels, layers, use_motion, zero_init)
        self.downsamplers = _downsamplers(unet, out_channels) if add_downsample else None

    def forward(self, frames: torch.Tensor, inputs: StepInputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        attentions = getattr(self, "attentions", None)
        skips = []
        for index, resnet in enumerate(self.resnets):
            frames = self.run(resnet, frames, inputs.temb)
            if attentions is not None:
                frames = self.run(attentions[index], frames, inputs)
            if self.audio_modules is not None:
                frames = self.run(self.audio_modules[index], frames, inputs.audio_tokens,
                                  inputs.level_masks[self.depth], inputs.branch_weights)
            if self.motion_modules is not None:
                frames = self.run(self.motion_modules[index], frames, inputs.video_length)
            skips.append(frames)
        if self.downsamplers is not None:
            frames = self.downsamplers[0](frames)
            skips.append(frames)
        return frames, skips


class MidBlock3D(CheckpointedLayers):
    """resnet -> spatial attention -> motion module -> resnet (no audio module, spec Q12)."""

    def __init__(self, config: VideoNetConfig, channels: int, zero_init: bool = True) -> None:
        super().__init__()
        unet = config.unet
        self.attentions = nn.ModuleList([_spatial(unet, channels)])
        self.resnets = nn.ModuleList([_resnet(unet, channels, channels), _resnet(unet, channels, channels)])
        self.motion_modules = (
            nn.ModuleList([_motion(config, channels, zero_init)]) if config.motion.mid_block else None
        )

    def forward(self, frames: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
        frames = self.run(self.resnets[0], frames, inputs.temb)
        frames = self.run(self.attentions[0], frames, inputs)
        if self.motion_modules is not None:
            frames = self.run(self.motion_modules[0], frames, inputs.video_length)
        return self.run(self.resnets[1], frames, inputs.temb)


class UpBlock3D(CheckpointedLayers):
    """Up block; with ``cross_attention`` it has spatial attention (CrossAttnUpBlock3D), never audio modules."""

    def __init__(self, config: VideoNetConfig, in_channels: int, out_channels: int, prev_output_channels: int,
                 add_upsample: bool, use_motion: bool, cross_attention: bool, zero_init: bool = True) -> None:
        super().__init__()
        unet, layers = config.unet, config.unet.layers_per_block + 1
        skip_channels = [out_channels] * (layers - 1) + [in_channels]
        layer_inputs = [prev_output_channels] + [out_channels] * (layers - 1)
        if cross_attention:
            self.attentions = nn.ModuleList([_spatial(unet, out_channels) for _ in range(layers)])
        resnet_inputs = [layer_in + skip for layer_in, skip in zip(layer_inputs, skip_channels, strict=True)]
        self.resnets = nn.ModuleList([_resnet(unet, resnet_in, out_channels) for resnet_in in resnet_inputs])
        self.motion_modules = _motion_modules(config, out_channels, layers, use_motion, zero_init)
        self.upsamplers = None
        if add_upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])

    def forward(self, frames: torch.Tensor, skips: list[torch.Tensor], inputs: StepInputs,
                upsample_size: tuple[int, int] | None) -> torch.Tensor:
        attentions = getattr(self, "attentions", None)
        for index, resnet in enumerate(self.resnets):
            frames = torch.cat([frames, skips.pop()], dim=1)
            frames = self.run(resnet, frames, inputs.temb)
            if attentions is not None:
                frames = self.run(attentions[index], frames, inputs)
            if self.motion_modules is not None:
                frames = self.run(self.motion_modules[index], frames, inputs.video_length)
        if self.upsamplers is not None:
            frames = self.upsamplers[0](frames, upsample_size)
        return frames


class DenoisingUNet3D(nn.Module):
    """MMGT's denoising UNet; parameter names equal the official ``UNet3DConditionModel`` (``denoising_unet.*``)."""

    def __init__(self, config: VideoNetConfig | None = None, zero_init: bool = True) -> None:
        super().__init__()
        config = config or VideoNetConfig()
        unet = config.unet
        channels = unet.block_out_channels
        self.config = config
        self.conv_in = nn.Conv2d(unet.in_channels, channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], unet.flip_sin_to_cos, unet.freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], unet.time_embed_dim)
        # Registration order down, up, mid (as the official class) fixes the reference-bank pairing order.
        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        self._build_down_blocks(config, zero_init)
        self.mid_block = MidBlock3D(config, channels[-1], zero_init)
        self._build_up_blocks(config, zero_init)
        self.conv_norm_out = nn.GroupNorm(unet.norm_num_groups, channels[0], eps=unet.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], unet.out_channels, kernel_size=3, padding=1)
        for name, module in self.named_modules():
            if isinstance(module, ReferenceTransformerBlock):
                module.bank_key = name

    def _build_down_blocks(self, config: VideoNetConfig, zero_init: bool) -> None:
        channels = config.unet.block_out_channels
        for depth, out_channels in enumerate(channels):
            in_channels = channels[max(depth - 1, 0)]
            last = depth == len(channels) - 1
            use_motion = 2**depth in config.motion.resolutions
            self.down_blocks.append(DownBlock3D(config, in_channels, out_channels, depth, add_downsample=not last,
                                                use_motion=use_motion, cross_attention=not last, zero_init=zero_init))

    def _build_up_blocks(self, config: VideoNetConfig, zero_init: bool) -> None:
        reversed_channels = list(reversed(config.unet.block_out_channels))
        levels = len(reversed_channels)
        for index, out_channels in enumerate(reversed_channels):
            prev_output = reversed_channels[max(index - 1, 0)]
            in_channels = reversed_channels[min(index + 1, levels - 1)]
            use_motion = 2 ** (levels - 1 - index) in config.motion.resolutions
            self.up_blocks.append(UpBlock3D(config, in_channels, out_channels, prev_output,
                                            add_upsample=index < levels - 1, use_motion=use_motion,
                                            cross_attention=index > 0, zero_init=zero_init))

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint every resnet/attention/audio/motion layer when training (outputs are unchanged)."""
        for module in self.modules():
            if isinstance(module, CheckpointedLayers):
                module.gradient_checkpointing = enabled

    def reader_blocks(self) -> list[tuple[str, ReferenceTransformerBlock]]:
        """The reference-reading blocks in module (DFS) order."""
        modules = self.named_modules()
        return [(name, module) for name, module in modules if isinstance(module, ReferenceTransformerBlock)]

    def prepare_reference(self, bank: ReferenceBank) -> ReferenceKV:
        """Project a ReferenceNet bank through each paired reader's attn1 once; reuse it for the whole video."""
        readers = self.reader_blocks()
        pairs = pair_blocks(
            [(name, feature.shape[-1]) for name, feature in zip(bank.names, bank.features, strict=True)],
            [(name, block.norm1.normalized_shape[0]) for name, block in readers],
        )
        features, blocks = dict(zip(bank.names, bank.features, strict=True)), dict(readers)
        reference = ReferenceKV()
        for writer, reader in pairs:
            attn = blocks[reader].attn1
            weight = attn.to_k.weight
            bank_features = features[writer].to(device=weight.device, dtype=weight.dtype)
            reference.keys[reader], reference.values[reader] = project_bank(attn, bank_features)
        return reference

    def forward(
        self,
        sample: torch.Tensor,
        timestep: int | float | torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *,
        audio_tokens: torch.Tensor | None = None,
        pose_features: torch.Tensor | None = None,
        masks: BranchMaskLevels | None = None,
        branch_weights: Sequence[float] | None = RELEASED_BRANCH_WEIGHTS,
        reference: ReferenceKV | None = None,
        reference_rows: Sequence[bool] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the model output (v) for latents ``sample`` (b, 4, f, h, w); returns the same shape.

        * ``encoder_hidden_states`` (b, T, cross_dim): CLIP image embedding as (b, 1, 768); zeros for uncond.
        * ``audio_tokens`` (b, f, tokens, audio_dim) from AudioProjModel (zeros for uncond; None = zeros).
        * ``pose_features`` (b or 1, C0, f, h, w) from PoseGuider, added after conv_in.
        * ``masks``: per-level (full, face, lips) masks for these f frames (required by the MM-HAA modules).
        * ``branch_weights``: (full, face, lips) MM-HAA weights; default [1, 1, 2] = released inference,
          None (or [1, 1, 1]) = the unweighted sum used in training and in the official eval path.
        * ``reference`` from :meth:`prepare_reference`; ``reference_rows`` (b,) says which batch rows read it
          (default all). For a CFG batch [uncond; cond] pass (False, True): uncond rows use plain self-attention.
        """
        batch, _, frames, height, width = sample.shape
        inputs = StepInputs(
            video_length=frames,
            temb=self._time_embedding(timestep, batch, sample.device).repeat_interleave(frames, dim=0),
            context=encoder_hidden_states.to(self.dtype),
            audio_tokens=self._audio_tokens(audio_tokens, batch, frames, sample.device),
            level_masks=self._level_masks(masks, batch, frames, height, width, sample.device),
            branch_weights=None if branch_weights is None else _three_weights(branch_weights),
            reference=reference,
            read_rows=_read_rows(reference, reference_rows, batch, sample.device),
        )
        hidden = self.conv_in(_to_frames(sample.to(self.dtype)))
        if pose_features is not None:
            hidden = hidden + _to_frames(pose_features.to(self.dtype).expand(batch, -1, -1, -1, -1))
        skips = [hidden]
        for down_block in self.down_blocks:
            hidden, block_skips = down_block(hidden, inputs)
            skips.extend(block_skips)
        hidden = self.mid_block(hidden, inputs)
        for up_block in self.up_blocks:
            block_skips, skips = skips[-len(up_block.resnets):], skips[: -len(up_block.resnets)]
            upsample_size = tuple(skips[-1].shape[-2:]) if skips else None
            hidden = up_block(hidden, block_skips, inputs, upsample_size)
        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        return rearrange(hidden, "(b f) c h w -> b c f h w", b=batch, f=frames)

    def _time_embedding(self, timestep: int | float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        timesteps = torch.as_tensor(timestep, device=device)
        if timesteps.dim() == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(batch)
        return self.time_embedding(self.time_proj(timesteps).to(self.dtype))

    def _audio_tokens(self, audio_tokens: torch.Tensor | None, batch: int, frames: int,
                      device: torch.device) -> torch.Tensor:
        audio_dim = self.config.audio.audio_attention_dim
        if audio_tokens is None:  # zero tokens (pose-driven mode); one zero token attends exactly like 32
            return torch.zeros(batch * frames, 1, audio_dim, device=device, dtype=self.dtype)
        shape = tuple(audio_tokens.shape)
        if len(shape) != 4 or shape[:2] != (batch, frames) or shape[-1] != audio_dim:
            raise InputError("audio_tokens", f"expected (batch={batch}, frames={frames}, tokens, {audio_dim}), got "
                             f"{tuple(audio_tokens.shape)}.", "Pass AudioProjModel outputs for the same frames.")
        return audio_tokens.to(self.dtype).flatten(0, 1)

    def _level_masks(self, masks: BranchMaskLevels | None, batch: int, frames: int, height: int, width: int,
                     device: torch.device) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        depths = [block.depth for block in self.down_blocks if block.audio_modules is not None]
        if not depths:
            return {}
        if masks is None:
            raise InputError("masks", "the MM-HAA audio modules need motion masks.",
                             "Pass branch masks (full, face, lips) with one tensor per latent level.")
        sizes, result = (height, width), {}
        for depth in range(max(depths) + 1):
            if depth in depths:
                result[depth] = level_masks(masks, depth, batch, frames, *sizes, self.dtype, device)
            sizes = ((sizes[0] + 1) // 2, (sizes[1] + 1) // 2)  # stride-2, pad-1, 3x3 conv
        return result


def _to_frames(video: torch.Tensor) -> torch.Tensor:
    """(b, C, f, H, W) -> (b*f, C, H, W)."""
    return rearrange(video, "b c f h w -> (b f) c h w")


def _three_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(w) for w in weights)
    if len(values) != 3:
        raise InputError("branch_weights", f"expected 3 weights (full, face, lip), got {len(values)}.",
                         "Use e.g. [1, 1, 2] (released) or [1, 1, 1].")
    return values  # type: ignore[return-value]


def _read_rows(reference: ReferenceKV | None, rows: Sequence[bool] | torch.Tensor | None, batch: int,
               device: torch.device) -> torch.Tensor | None:
    if reference is None:
        return None
    if rows is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    read = torch.as_tensor(rows, dtype=torch.bool, device=device)
    if read.shape != (batch,):
        raise InputError("reference_rows", f"expected {batch} flags, got shape {tuple(read.shape)}.",
                         "Give one flag per batch row, e.g. (False, True) for a [uncond; cond] CFG batch.")
    return read
