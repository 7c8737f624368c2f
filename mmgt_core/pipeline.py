"""The whole MMGT pipeline as plain functions, shared by the ComfyUI nodes and the command line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from .keypoints import PoseSequence, from_official_feature, mask_leg_normalized, to_official_feature
from .masks import motion_masks
from .render import render_pose_video
from .types import OptionalCancel, OptionalProgress
from .video.conditioning import branch_masks_from_regions, reference_latent, zero_branch_masks
from .video.sampler import SamplingSettings, VideoConditioning, project_audio, sample_latents

VIDEO_FPS = 25.0


def pose_from_features(smga: torch.nn.Module, features: torch.Tensor, reference_pose: PoseSequence, seed: int,
                       steps: int = 50, guidance: float = 2.0, overlap: int = 8, best_of: int = 1,
                       smoothing: str = "none", dtype: Optional[torch.dtype] = None,
                       progress: OptionalProgress = None, check_cancel: OptionalCancel = None) -> PoseSequence:
    """SMGA keypoints for every frame of Stage-I ``features``; frame 0 is the reference pose (official assembly)."""
    from .smga.generate import generate_pose_sequence

    reference_feature = mask_leg_normalized(to_official_feature(reference_pose)[:1])[0]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    poses = generate_pose_sequence(smga, features, reference_feature, generator, steps=steps, guidance=guidance,
                                   overlap=overlap, best_of=best_of, smooth=smoothing, progress=progress,
                                   check_cancel=check_cancel, dtype=dtype)
    return from_official_feature(poses, reference_pose.width, reference_pose.height, VIDEO_FPS)


def smga_total_steps(frames: int, steps: int, overlap: int, window: int = 80) -> int:
    """Diffusion steps over all windows (for progress bars)."""
    from .smga.generate import total_diffusion_steps

    return total_diffusion_steps(frames, steps, window, overlap)


def branch_masks_for(face_hands: torch.Tensor, lips: torch.Tensor, hands: Optional[torch.Tensor], frames: int,
                     width: int, height: int, mask_mode: str):
    """MM-HAA masks from region masks; empty masks (pose-only runs without keypoints) give the no-mask layout."""
    if face_hands.abs().sum() == 0 and lips.abs().sum() == 0:
        return zero_branch_masks(frames, width, height, mask_mode)
    return branch_masks_from_regions(face_hands, lips, hands, width, height, mask_mode)


def video_conditioning(net: Any, vae: Any, image_embeds: torch.Tensor, reference_image: Any,
                       pose_frames: torch.Tensor, face_hands: torch.Tensor, lips: torch.Tensor,
                       hands: Optional[torch.Tensor], wav2vec_features: Optional[torch.Tensor], width: int,
                       height: int, mask_mode: str = "released") -> VideoConditioning:
    """Everything the sampler needs for one video, computed once."""
    frames = int(pose_frames.shape[0])
    tokens = project_audio(net.audioproj, wav2vec_features[:frames]) if wav2vec_features is not None else None
    return VideoConditioning(
        image_embeds=image_embeds,
        reference_latent=reference_latent(vae, reference_image, width, height),
        pose_frames=pose_frames[..., :3],
        masks=branch_masks_for(face_hands, lips, hands, frames, width, height, mask_mode),
        audio_tokens=tokens,
    )


@dataclass
class VideoOptions:
    """Stage-II choices (defaults: the released inference) plus the Stage-I ones the CLI needs."""

    width: int = 512
    height: int = 512
    seed: int = 42
    steps: int = 30
    cfg: float = 3.5
    branch_weights: tuple[float, float, float] = (1.0, 1.0, 2.0)
    mask_mode: str = "released"
    context_frames: int = 12
    context_overlap: int = 4
    context_schedule: str = "open"
    scheduler: str = "ddim"
    smga_steps: int = 50
    smga_guidance: float = 2.0
    smga_overlap: int = 8
    decode_chunk: int = 4
    extra: dict[str, Any] = field(default_factory=dict)

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(width=self.width, height=self.height, steps=self.steps, guidance_scale=self.cfg,
                                branch_weights=self.branch_weights, context_frames=self.context_frames,
                                context_overlap=self.context_overlap, context_schedule=self.context_schedule,
                                scheduler=self.scheduler)


def render_video(net: Any, vae: Any, cond: VideoConditioning, options: VideoOptions,
                 progress: OptionalProgress = None, check_cancel: OptionalCancel = None) -> torch.Tensor:
    """Sample and decode: (T, H, W, 3) float32 frames in [0, 1]."""
    from .video.decode import decode_latents

    generator = torch.Generator(device="cpu").manual_seed(options.seed)
    latents = sample_latents(net, cond, options.sampling(), generator, progress=progress, check_cancel=check_cancel)
    return decode_latents(vae, latents, options.decode_chunk, check_cancel=check_cancel)


def pose_frames_and_masks(pose: PoseSequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drawn pose frames (uint8) and the face+hands, lips and hands masks of a keypoint sequence."""
    masks = motion_masks(pose)
    return render_pose_video(pose), masks.face_hands, masks.lips, masks.hands


ImageEmbedder = Callable[[np.ndarray], torch.Tensor]
