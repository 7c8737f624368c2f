"""The whole MMGT pipeline: Stage I as a function, Stage II as one pipeline object (nodes, CLI, training, bench)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .constants import SMGA_WINDOW_FRAMES, VIDEO_FPS
from .errors import InputError
from .keypoints import PoseSequence, from_official_feature, mask_leg_normalized, to_official_feature
from .types import OptionalCancel, OptionalProgress
from .video.sampler import VideoConditioning, build_conditioning, sample_latents, window_predictions
from .video.settings import VideoSettings


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


def smga_total_steps(frames: int, steps: int, overlap: int, window: int = SMGA_WINDOW_FRAMES) -> int:
    """Diffusion steps over all windows (for progress bars)."""
    from .smga.generate import total_diffusion_steps

    return total_diffusion_steps(frames, steps, window, overlap)


@dataclass
class VideoInputs:
    """What one Stage-II video is made from (see :func:`~mmgt_core.video.sampler.build_conditioning`).

    reference_image: PIL or (H, W, 3) uint8/float. keypoints: the driving pose on the reference image's canvas
    (pose frames and masks are drawn from it per window). pose_frames: an external pose video (T, H, W, 3).
    face_hands_mask / lips_mask / hands_mask: (T, H, W) overrides of the keypoint masks. audio_features: wav2vec2
    features (T' >= T, layers, hidden), None for pose-driven video. image_embeds: a CLIP embedding computed by the
    caller (e.g. the host's CLIP vision model); else the pipeline's image encoder makes it.
    """

    reference_image: Any
    keypoints: Optional[PoseSequence] = None
    pose_frames: Optional[torch.Tensor] = None
    face_hands_mask: Optional[torch.Tensor] = None
    lips_mask: Optional[torch.Tensor] = None
    hands_mask: Optional[torch.Tensor] = None
    audio_features: Optional[torch.Tensor] = None
    image_embeds: Optional[torch.Tensor] = None
    hide_legs: bool = True  # pose frames drawn from keypoints hide knees and ankles, as the official drawing does


@dataclass
class VideoResult:
    """Final latents (1, 4, T, H/8, W/8) float32, and the decoded frames (T, H, W, 3) unless only latents asked."""

    latents: torch.Tensor
    frames: Optional[torch.Tensor] = None


class VideoPipeline:
    """Stage II as one object (diffusers-style): components, then ``__call__(inputs, settings, ...)``.

    Nodes, the CLI, training validation and the benchmarks all render through it. ``net`` is a
    :class:`~mmgt_core.video.net.VideoNet`, ``vae`` a diffusers ``AutoencoderKL`` (or an adapter with its
    encode/decode), ``image_encoder`` a CLIP vision model or callable (optional when inputs carry image_embeds).
    """

    def __init__(self, net: Any, vae: Any, image_encoder: Any = None) -> None:
        self.net, self.vae, self.image_encoder = net, vae, image_encoder

    def conditioning(self, inputs: VideoInputs, settings: VideoSettings) -> VideoConditioning:
        """CLIP embedding, reference latent, audio tokens, and per-window pose/mask sources."""
        from .video.conditioning import clip_image_embeds, to_pil

        image = to_pil(inputs.reference_image)  # converted once; the pose is never drawn at this size
        embeds = inputs.image_embeds
        if embeds is None:
            if self.image_encoder is None:
                raise InputError("image_encoder", "no CLIP image encoder and no image embedding were given",
                                 "connect an image encoder (CLIP ViT-L/14).")
            embeds = clip_image_embeds(self.image_encoder, image)
        return build_conditioning(
            self.net, self.vae, embeds, image, settings.width, settings.height, settings.mask_mode,
            keypoints=inputs.keypoints, pose_frames=inputs.pose_frames, face_hands_mask=inputs.face_hands_mask,
            lips_mask=inputs.lips_mask, hands_mask=inputs.hands_mask, audio_features=inputs.audio_features,
            hide_legs=inputs.hide_legs)

    def sample(self, cond: VideoConditioning, settings: VideoSettings, generator: Optional[torch.Generator] = None,
               progress: OptionalProgress = None, check_cancel: OptionalCancel = None,
               on_step: Any = None) -> torch.Tensor:
        """The denoising loop: final latents (1, 4, T, H/8, W/8) float32 on the CPU."""
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        return sample_latents(self.net, cond, settings, generator, progress=progress, check_cancel=check_cancel,
                              on_step=on_step)

    def decode(self, latents: torch.Tensor, settings: VideoSettings, progress: OptionalProgress = None,
               check_cancel: OptionalCancel = None) -> torch.Tensor:
        """VAE decode, ``settings.decode_chunk`` frames at a time: (T, H, W, 3) float32 in [0, 1]."""
        from .video.vae_codec import decode_latents

        return decode_latents(self.vae, latents, settings.decode_chunk, progress=progress, check_cancel=check_cancel)

    def __call__(self, inputs: VideoInputs, settings: Optional[VideoSettings] = None,
                 generator: Optional[torch.Generator] = None, progress: OptionalProgress = None,
                 check_cancel: OptionalCancel = None, output: str = "frames") -> VideoResult:
        """Render one video. ``output="latent"`` stops before the VAE decode (the node graph decodes later).

        ``generator`` defaults to a CPU generator seeded with ``settings.seed``; ``progress(done, total)`` counts
        sampling windows, then decoded frames; ``check_cancel()`` runs before every window and decode chunk.
        """
        settings = settings or VideoSettings()
        if output not in ("frames", "latent"):
            raise InputError("output", f"unknown output '{output}'", "use 'frames' or 'latent'.")
        cond = self.conditioning(inputs, settings)
        sampling_units = window_predictions(cond.frames, settings)
        decoding = output == "frames"
        grand_total = sampling_units + (cond.frames if decoding else 0)

        def shifted(offset: int) -> OptionalProgress:  # a stage's own count, reported on the whole run's scale
            return None if progress is None else lambda done, _total: progress(offset + done, grand_total)

        latents = self.sample(cond, settings, generator, shifted(0), check_cancel)
        if not decoding:
            return VideoResult(latents)
        return VideoResult(latents, self.decode(latents, settings, shifted(sampling_units), check_cancel))
