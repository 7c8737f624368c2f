"""Stage-II sampling: pose + masks + audio + reference image -> video latents (and frames).

The loop follows the official ``Pose2VideoPipeline`` (spec 3.2-3.4, 3.9-3.11):

* initial latents ``randn((1, 4, L, H/8, W/8))`` drawn on the CPU from the given ``torch.Generator`` in float32
  (bitwise equal to diffusers ``randn_tensor`` with a CPU generator; a float16 draw is the same numbers rounded);
* the ReferenceNet runs **once** (t = 0) and its projected banks are reused for every window and step;
* each step, each context window runs one UNet batch ``[uncond; cond]``: uncond = zero CLIP embedding, no
  reference attention, zero audio tokens; pose features, masks and branch weights are the same in both halves;
* classifier-free guidance ``u + s (c - u)`` per window, blended per frame with the window weights (the official
  plain average in the closed-loop schedule), then one DDIM step (eta 0) on the whole video.

Memory grows only with per-frame state: the latents, one prediction accumulator, the small mask pyramid and the
audio tokens. Pose-guider features and audio windows are computed per window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from mmgt_core.audio.wav2vec import audio_context_windows
from mmgt_core.errors import InputError
from mmgt_core.types import CancelFn, ProgressFn
from mmgt_core.video.conditioning import (
    BranchMasks,
    ImageLike,
    branch_masks_from_regions,
    check_output_size,
    check_pose_frames,
    clip_image_embeds,
    pose_window,
    reference_latent,
    zero_branch_masks,
)
from mmgt_core.video.context import ContextWindow, context_windows
from mmgt_core.video.decode import decode_latents, module_dtype_device
from mmgt_core.video.reference_bank import ReferenceKV
from mmgt_core.video.scheduler import DEFAULT_STEPS, inference_timesteps, make_scheduler, scheduler_step

LATENT_CHANNELS = 4
LATENT_STRIDE = 8
AUDIO_MARGIN = 2  # 5-frame audio window around every frame (spec 3.9)

StepCallback = Callable[[int, int, torch.Tensor], None]
"""on_step(step_index, timestep, guided_prediction (1, 4, L, h, w)) - for tests and previews."""


@dataclass
class SamplingSettings:
    """Everything about how to sample; the defaults are the released inference settings."""

    width: int = 512
    height: int = 512
    steps: int = DEFAULT_STEPS
    guidance_scale: float = 3.5
    branch_weights: tuple[float, float, float] = (1.0, 1.0, 2.0)
    context_frames: int = 12
    context_overlap: int = 4
    context_schedule: str = "open"  # "closed_loop" = the official wrap-around schedule
    context_blend: str = "linear"  # open schedule only: "linear", "cosine" or "flat"
    round_reference_to_fp16: bool = True  # the official casts the reference banks to fp16
    scheduler: str = "ddim"  # "ddim" (released), "dpmpp_2m" or "unipc" (video/scheduler.py)


@dataclass
class VideoConditioning:
    """The per-video inputs of the sampler.

    image_embeds: CLIP image embedding (1, D). reference_latent: VAE mean x 0.18215, (1, 4, H/8, W/8).
    pose_frames: (T, H', W', 3) uint8 or float [0, 1]; frames not at the output size are cover-resized.
    masks: branch masks for T frames. audio_tokens: AudioProj output (T, tokens, D_audio), or None for the
    pose-driven mode (zero audio tokens in both CFG halves, like the official pose2vid).
    """

    image_embeds: torch.Tensor
    reference_latent: torch.Tensor
    pose_frames: torch.Tensor
    masks: BranchMasks
    audio_tokens: Optional[torch.Tensor] = None

    @property
    def frames(self) -> int:
        """The output frame count: one video frame per pose frame."""
        return int(self.pose_frames.shape[0])


def project_audio(audio_proj: nn.Module, features: torch.Tensor, chunk_frames: int = 64) -> torch.Tensor:
    """wav2vec2 features (T, layers, hidden) -> audio tokens (T, tokens, D) via clamped 5-frame windows.

    Runs in chunks of frames so the (T, 5, layers, hidden) windows never exist for the whole clip at once.
    """
    if features.ndim != 3:
        raise InputError("audio_features", f"expected (frames, layers, hidden), got {tuple(features.shape)}",
                         "pass the output of wav2vec2_features.")
    dtype, device = module_dtype_device(audio_proj)
    pieces = []
    for start in range(0, features.shape[0], chunk_frames):
        frames = torch.arange(start, min(start + chunk_frames, features.shape[0]))
        windows = audio_context_windows(features, AUDIO_MARGIN, frames).to(device=device, dtype=dtype)
        with torch.no_grad():
            pieces.append(audio_proj(windows[None])[0])
    return torch.cat(pieces)


def prepare_conditioning(
    net: nn.Module,
    vae: nn.Module,
    clip_encoder: nn.Module | Callable[[torch.Tensor], object],
    reference_image: ImageLike,
    pose_frames: torch.Tensor,
    width: int,
    height: int,
    face_hands_mask: Optional[torch.Tensor] = None,
    lips_mask: Optional[torch.Tensor] = None,
    hands_mask: Optional[torch.Tensor] = None,
    mask_mode: str = "released",
    audio_features: Optional[torch.Tensor] = None,
) -> VideoConditioning:
    """Everything the sampler needs, from user-level inputs.

    reference_image: PIL or (H, W, 3) uint8/float; pose_frames: (T, H, W, 3); masks: (T, H, W) in [0, 1] (none
    given: empty regions); audio_features: wav2vec2 output (T, layers, hidden) or None for pose-driven mode.
    """
    check_output_size(width, height)
    check_pose_frames(pose_frames)
    frames = int(pose_frames.shape[0])
    if (face_hands_mask is None) != (lips_mask is None):
        raise InputError("masks", "give both the face+hands mask and the lips mask, or neither",
                         "connect both mask outputs of the pose stage.")
    if face_hands_mask is None:
        masks = zero_branch_masks(frames, width, height, mask_mode)
    else:
        masks = branch_masks_from_regions(face_hands_mask, lips_mask, hands_mask, width, height, mask_mode)
    tokens = None
    if audio_features is not None:
        tokens = project_audio(net.audioproj, audio_features)
    return VideoConditioning(
        image_embeds=clip_image_embeds(clip_encoder, reference_image),
        reference_latent=reference_latent(vae, reference_image, width, height),
        pose_frames=pose_frames,
        masks=masks,
        audio_tokens=tokens,
    )


def initial_latents(generator: Optional[torch.Generator], frames: int, width: int, height: int,
                    channels: int = LATENT_CHANNELS) -> torch.Tensor:
    """Official initial noise (1, C, T, H/8, W/8) float32, drawn on the generator's device (CPU by default)."""
    shape = (1, channels, frames, height // LATENT_STRIDE, width // LATENT_STRIDE)
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).cpu()


def check_conditioning(cond: VideoConditioning, settings: SamplingSettings) -> None:
    """Raise InputError for sizes and frame counts that do not fit together (names the input and the fix)."""
    check_output_size(settings.width, settings.height)
    check_pose_frames(cond.pose_frames)
    frames = cond.frames
    if cond.masks.frames != frames:
        raise InputError("masks", f"the motion masks have {cond.masks.frames} frames but the pose has {frames}",
                         "make the masks from the same pose sequence (one mask per pose frame).")
    if cond.audio_tokens is not None and cond.audio_tokens.shape[0] != frames:
        seconds = frames / 25.0
        raise InputError("audio", f"the audio gives {cond.audio_tokens.shape[0]} frames but the pose has {frames}",
                         f"trim or pad the audio to {frames} frames ({seconds:.2f} s at 25 fps), or generate the "
                         "pose from this audio.")
    latent_hw = (settings.height // LATENT_STRIDE, settings.width // LATENT_STRIDE)
    if tuple(cond.reference_latent.shape[-2:]) != latent_hw:
        raise InputError("reference_latent", f"latent size {tuple(cond.reference_latent.shape[-2:])} does not "
                         f"match the output {settings.width}x{settings.height}",
                         "encode the reference image at the output size.")
    if not 1 <= settings.steps <= 1000:
        raise InputError("steps", f"must be between 1 and 1000, got {settings.steps}", "use 30 (the default).")


def reference_for_video(net: nn.Module, cond: VideoConditioning, round_to_fp16: bool = True) -> ReferenceKV:
    """Run the ReferenceNet once and keep the conditional row's projected banks (shared by every window/step).

    Like the official, the pass runs on the batch [zero CLIP; CLIP] and only the conditional row is read. Batch 2
    also keeps GroupNorm valid when the deepest latent level is 1x1 (tiny outputs).
    """
    embeds = cond.image_embeds.reshape(1, 1, -1)
    latent = cond.reference_latent.expand(2, -1, -1, -1)
    with torch.no_grad():
        both = net.reference_kv(latent, torch.cat([torch.zeros_like(embeds), embeds]), round_to_fp16)
    return ReferenceKV(keys={name: key[1:] for name, key in both.keys.items()},
                       values={name: value[1:] for name, value in both.values.items()})


class VideoDenoiser:
    """The guided, window-blended model prediction for the whole video at one timestep.

    Holds the per-video state (reference banks, CFG context, windows); holds nothing per step, so a cancelled
    run leaves nothing behind.
    """

    def __init__(self, net: nn.Module, cond: VideoConditioning, settings: SamplingSettings,
                 reference: Optional[ReferenceKV] = None) -> None:
        check_conditioning(cond, settings)
        self.windows = context_windows(cond.frames, settings.context_frames, settings.context_overlap,
                                       settings.context_schedule, settings.context_blend)
        self.reference = reference or reference_for_video(net, cond, settings.round_reference_to_fp16)
        self._window = _WindowDenoiser(net, cond, settings, self.reference)
        self.frames = cond.frames

    def predict(self, latents: torch.Tensor, timestep: torch.Tensor, check_cancel: Optional[CancelFn] = None,
                window_done: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """Guided prediction (1, 4, T, h, w) float32: CFG per window, per-frame weighted blend of the windows."""
        guided = torch.zeros_like(latents, dtype=torch.float32)
        weight_sum = torch.zeros(self.frames)
        with torch.no_grad():
            for window in self.windows:
                if check_cancel is not None:
                    check_cancel()
                _accumulate(guided, weight_sum, window, self._window(latents, timestep, window))
                if window_done is not None:
                    window_done()
        return guided / weight_sum.view(1, 1, -1, 1, 1)


def sample_latents(
    net: nn.Module,
    cond: VideoConditioning,
    settings: Optional[SamplingSettings] = None,
    generator: Optional[torch.Generator] = None,
    latents: Optional[torch.Tensor] = None,
    progress: Optional[ProgressFn] = None,
    check_cancel: Optional[CancelFn] = None,
    on_step: Optional[StepCallback] = None,
) -> torch.Tensor:
    """Denoise the video; returns final latents (1, 4, T, H/8, W/8) float32 on the CPU.

    ``net`` is a :class:`mmgt_core.video.net.VideoNet` (reference_unet, denoising_unet, pose_guider, audioproj).
    ``latents`` replaces the initial noise (else drawn from ``generator``). ``progress(done, total)`` is called
    after every window of every step (total = steps x windows); ``check_cancel()`` before every window.
    """
    settings = settings or SamplingSettings()
    check_conditioning(cond, settings)
    scheduler = make_scheduler(settings.scheduler)  # fresh per run: nothing carries over from a cancelled run
    timesteps = inference_timesteps(scheduler, settings.steps)
    if latents is None:
        latents = initial_latents(generator, cond.frames, settings.width, settings.height)
    latents = latents.float().cpu() * scheduler.init_noise_sigma
    if check_cancel is not None:
        check_cancel()
    denoiser = VideoDenoiser(net, cond, settings)
    counter = _ProgressCounter(progress, len(timesteps) * len(denoiser.windows))
    for step_index, timestep in enumerate(timesteps):
        guided = denoiser.predict(latents, timestep, check_cancel, counter.tick)
        if on_step is not None:
            on_step(step_index, int(timestep), guided)
        latents = scheduler_step(scheduler, guided, timestep, latents)
    return latents


def generate_video(
    net: nn.Module,
    vae: nn.Module,
    cond: VideoConditioning,
    settings: Optional[SamplingSettings] = None,
    generator: Optional[torch.Generator] = None,
    progress: Optional[ProgressFn] = None,
    check_cancel: Optional[CancelFn] = None,
    decode_chunk_frames: int = 4,
) -> torch.Tensor:
    """Sample and decode: frames (T, H, W, 3) float32 in [0, 1]; progress counts windows, then decoded frames."""
    settings = settings or SamplingSettings()
    sampling_units = sampling_total(cond.frames, settings)
    grand_total = sampling_units + cond.frames

    def sampling_progress(done: int, _total: int) -> None:
        if progress is not None:
            progress(done, grand_total)

    def decode_progress(done: int, _total: int) -> None:
        if progress is not None:
            progress(sampling_units + done, grand_total)

    latents = sample_latents(net, cond, settings, generator, None, sampling_progress, check_cancel)
    return decode_latents(vae, latents, decode_chunk_frames, progress=decode_progress, check_cancel=check_cancel)


class _WindowDenoiser:
    """One guided prediction for one context window (CFG batch [uncond; cond] in a single UNet call)."""

    def __init__(self, net: nn.Module, cond: VideoConditioning, settings: SamplingSettings,
                 reference: ReferenceKV) -> None:
        self.net = net
        self.cond = cond
        self.settings = settings
        self.reference = reference
        self.guided = settings.guidance_scale > 1.0  # the official skips CFG at scale <= 1
        self.dtype, self.device = module_dtype_device(net.denoising_unet)
        embeds = cond.image_embeds.reshape(1, 1, -1).to(self.device, self.dtype)
        self.context = torch.cat([torch.zeros_like(embeds), embeds]) if self.guided else embeds
        self.rows = (False, True) if self.guided else (True,)

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, window: ContextWindow) -> torch.Tensor:
        frames = window.frames
        batch = len(self.rows)
        sample = latents[:, :, frames].to(self.device, self.dtype).expand(batch, -1, -1, -1, -1)
        prediction = self.net.denoising_unet(
            sample, timestep.to(self.device), self.context,
            audio_tokens=self._audio(frames, batch),
            pose_features=self._pose_features(frames),
            masks=self.cond.masks.select(frames),
            branch_weights=self.settings.branch_weights,
            reference=self.reference,
            reference_rows=self.rows,
        ).float().cpu()
        if not self.guided:
            return prediction
        uncond, conditional = prediction.chunk(2)
        return uncond + self.settings.guidance_scale * (conditional - uncond)

    def _pose_features(self, frames: torch.Tensor) -> torch.Tensor:
        pose = pose_window(self.cond.pose_frames, frames, self.settings.width, self.settings.height)
        pose_dtype, pose_device = module_dtype_device(self.net.pose_guider)
        return self.net.pose_guider(pose.to(pose_device, pose_dtype))

    def _audio(self, frames: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
        if self.cond.audio_tokens is None:
            return None
        tokens = self.cond.audio_tokens[frames].to(self.device, self.dtype)[None]
        return torch.cat([torch.zeros_like(tokens), tokens]) if batch == 2 else tokens


class _ProgressCounter:
    """Counts finished windows and reports them as progress(done, total)."""

    def __init__(self, progress: Optional[ProgressFn], total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _accumulate(guided: torch.Tensor, weight_sum: torch.Tensor, window: ContextWindow,
                prediction: torch.Tensor) -> None:
    """Add a window's weighted prediction into the per-frame accumulator (index_add handles repeated frames)."""
    weights = window.weights.view(1, 1, -1, 1, 1)
    guided.index_add_(2, window.frames, prediction * weights)
    weight_sum.index_add_(0, window.frames, window.weights)


def sampling_total(frames: int, settings: SamplingSettings) -> int:
    """Progress units of :func:`sample_latents`: steps x windows."""
    return settings.steps * len(context_windows(frames, settings.context_frames, settings.context_overlap,
                                                settings.context_schedule, "flat"))

