"""Stage-II sampling: pose + masks + audio + reference image -> video latents (and frames).

The loop follows the official ``Pose2VideoPipeline`` (spec 3.2-3.4, 3.9-3.11):

* initial latents ``randn((1, 4, L, H/8, W/8))`` drawn on the CPU from the given ``torch.Generator`` in float32
  (bitwise equal to diffusers ``randn_tensor`` with a CPU generator; a float16 draw is the same numbers rounded);
* the ReferenceNet runs **once** (t = 0) and its projected banks are reused for every window and step;
* each step, each context window runs one UNet batch ``[uncond; cond]``: uncond = zero CLIP embedding, no
  reference attention, zero audio tokens; pose features, masks and branch weights are the same in both halves;
* classifier-free guidance ``u + s (c - u)`` per window, blended per frame with the window weights (the official
  plain average in the closed-loop schedule), then one DDIM step (eta 0) on the whole video (applied to each
  frame once its blend is complete, which is the same arithmetic).

Memory: length costs time, not memory. Pose frames and MM-HAA masks are drawn per context window (from
keypoints at the output size, or converted from a pose video window by window), pose-guider features and audio
windows are computed per window, and nothing of full resolution is kept for the whole video. At 10 minutes
(T = 15 000 frames at 25 fps) and 512x512 the only full-length tensors are:

=============================  ===============================  =============================================
tensor                         shape                            bytes at 512x512, T = 15 000
=============================  ===============================  =============================================
latents (float32, CPU)         (1, 4, T, 64, 64)                65 536 B/frame = 0.98 GB, updated in place:
                                                                DDIM steps each frame as soon as the last
                                                                window covering it has run, so only about one
                                                                window of predictions is held. The multistep
                                                                solvers (and ``on_step``) need the whole guided
                                                                prediction per step, one more 0.98 GB, and
                                                                keep about 2 more whole predictions. MMGT
                                                                Sample Video unscales it in place at the end;
                                                                its MMGT latents and core LATENT outputs are
                                                                two views of this one storage.
audio tokens (net dtype)       (T, 32, 768)                     49 152 B/frame in fp16/bf16 = 0.74 GB
                                                                (98 304 B/frame = 1.47 GB in fp32)
keypoints (float32)            (T, 134, 3)                      1 608 B/frame = 24 MB
=============================  ===============================  =============================================

(The wav2vec2 features the audio tokens are made from, (T, 12, 768) float32 = 36 864 B/frame = 0.55 GB, belong
to the caller.) A pose video given as images is the caller's memory too: it is only read window by window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from mmgt_core.audio.wav2vec import audio_context_windows
from mmgt_core.constants import LATENT_STRIDE, VIDEO_FPS
from mmgt_core.errors import InputError
from mmgt_core.keypoints import PoseSequence
from mmgt_core.types import CancelFn, ProgressFn
from mmgt_core.video.conditioning import (
    BranchMasks,
    ImageLike,
    ImagePoseFrames,
    KeypointBranchMasks,
    KeypointPoseFrames,
    branch_masks_from_regions,
    check_output_size,
    check_pose_frames,
    clip_image_embeds,
    keypoints_at_output,
    reference_latent,
    to_pil,
    zero_branch_masks,
)
from mmgt_core.video.context import ContextWindow, context_windows, window_count
from mmgt_core.video.reference_bank import ReferenceKV
from mmgt_core.video.scheduler import (
    ddim_step,
    inference_timesteps,
    make_scheduler,
    scheduler_step,
    updates_frames_independently,
)
from mmgt_core.video.settings import VideoSettings, check_scheduler
from mmgt_core.video.vae_codec import module_dtype_device

LATENT_CHANNELS = 4
AUDIO_MARGIN = 2  # 5-frame audio window around every frame (spec 3.9)

PoseFrameSource = ImagePoseFrames | KeypointPoseFrames
"""Anything with ``frames`` and ``window(indices, width, height) -> (1, 3, f, H, W)``."""

StepCallback = Callable[[int, int, torch.Tensor], None]
"""on_step(step_index, timestep, guided_prediction (1, 4, L, h, w)) - for tests and previews."""
FramesUpdate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""update(prediction, latents) -> next latents, for some frames ((1, 4, n, h, w) each): an elementwise step."""


SamplingSettings = VideoSettings
"""The former name of :class:`~mmgt_core.video.settings.VideoSettings` (one type; kept for callers and tests)."""


@dataclass
class VideoConditioning:
    """The per-video inputs of the sampler.

    image_embeds: CLIP image embedding (1, D). reference_latent: VAE mean x 0.18215, (1, 4, H/8, W/8).
    pose_frames: (T, H', W', 3) uint8 or float [0, 1] (frames not at the output size are cover-resized), or a
    source that draws each window's frames when asked (:class:`KeypointPoseFrames`, :class:`ImagePoseFrames`).
    masks: branch masks for T frames, or a source computing a window's masks on demand
    (:class:`KeypointBranchMasks`). audio_tokens: AudioProj output (T, tokens, D_audio), or None for the
    pose-driven mode (zero audio tokens in both CFG halves, like the official pose2vid).
    """

    image_embeds: torch.Tensor
    reference_latent: torch.Tensor
    pose_frames: torch.Tensor | PoseFrameSource
    masks: BranchMasks | KeypointBranchMasks
    audio_tokens: Optional[torch.Tensor] = None

    @property
    def pose(self) -> PoseFrameSource:
        """The pose frames as a per-window source."""
        if isinstance(self.pose_frames, (torch.Tensor, np.ndarray)):
            return ImagePoseFrames(self.pose_frames)
        return self.pose_frames

    @property
    def frames(self) -> int:
        """The output frame count: one video frame per pose frame."""
        if isinstance(self.pose_frames, (torch.Tensor, np.ndarray)):
            return int(self.pose_frames.shape[0])
        return int(self.pose_frames.frames)


def project_audio(audio_proj: nn.Module, features: torch.Tensor, chunk_frames: int = 64) -> torch.Tensor:
    """wav2vec2 features (T, layers, hidden) -> audio tokens (T, tokens, D) via clamped 5-frame windows.

    Runs in chunks of frames so the (T, 5, layers, hidden) windows never exist for the whole clip at once.
    """
    if features.ndim != 3:
        raise InputError("audio_features", f"expected (frames, layers, hidden), got {tuple(features.shape)}",
                         "pass the output of wav2vec2_features.")
    dtype, device = module_dtype_device(audio_proj)
    tokens: Optional[torch.Tensor] = None  # filled chunk by chunk: no list of pieces plus a concatenated copy
    for start in range(0, features.shape[0], chunk_frames):
        frames = torch.arange(start, min(start + chunk_frames, features.shape[0]))
        windows = audio_context_windows(features, AUDIO_MARGIN, frames).to(device=device, dtype=dtype)
        with torch.no_grad():
            piece = audio_proj(windows[None])[0]
        if tokens is None:
            tokens = piece.new_empty((features.shape[0], *piece.shape[1:]))
        tokens[start:start + piece.shape[0]] = piece
    return tokens


def build_conditioning(
    net: nn.Module,
    vae: nn.Module,
    image_embeds: torch.Tensor,
    reference_image: ImageLike,
    width: int,
    height: int,
    mask_mode: str = "released",
    keypoints: Optional[PoseSequence] = None,
    pose_frames: Optional[torch.Tensor] = None,
    face_hands_mask: Optional[torch.Tensor] = None,
    lips_mask: Optional[torch.Tensor] = None,
    hands_mask: Optional[torch.Tensor] = None,
    audio_features: Optional[torch.Tensor] = None,
    hide_legs: bool = True,
) -> VideoConditioning:
    """Everything the sampler needs, from user-level inputs, without drawing anything for the whole video.

    keypoints: the pose on the reference image's canvas; the pose frames and MM-HAA masks are drawn from it per
    context window at the output size. pose_frames: an external pose video (T, H, W, 3), converted per window
    (it replaces drawing from keypoints). face_hands/lips/hands masks: (T, H, W) region masks that override the
    keypoint masks (hand-painted masks). audio_features: wav2vec2 output (T' >= T, layers, hidden), or None for
    the pose-driven mode. Frame counts must agree (InputError naming the input otherwise).
    """
    check_output_size(width, height)
    on_output = keypoints_at_output(keypoints, width, height) if keypoints is not None else None
    if pose_frames is not None:
        pose: PoseFrameSource = ImagePoseFrames(pose_frames)
        if keypoints is not None and keypoints.num_frames != pose.frames:
            raise InputError("keypoints", f"have {keypoints.num_frames} frames but the pose video has {pose.frames}",
                             "give keypoints and pose frames of the same video (one per output frame).")
    elif on_output is not None:
        pose = KeypointPoseFrames(on_output, mask_legs=hide_legs)
    else:
        raise InputError("keypoints", "neither keypoints nor pose frames were given",
                         "connect MMGT keypoints (from Audio to Pose or Load Keypoints) or a pose video.")
    frames = pose.frames
    if (face_hands_mask is None) != (lips_mask is None):
        raise InputError("masks", "give both the face+hands mask and the lips mask, or neither",
                         "connect both mask outputs of the pose stage.")
    if face_hands_mask is not None:
        if face_hands_mask.shape[0] != frames:
            raise InputError("face_hands_mask", f"has {face_hands_mask.shape[0]} frames but the pose has {frames}",
                             "make the masks from the same pose sequence (one mask per pose frame).")
        masks: BranchMasks | KeypointBranchMasks = branch_masks_from_regions(face_hands_mask, lips_mask, hands_mask,
                                                                           width, height, mask_mode)
    elif on_output is not None:
        masks = KeypointBranchMasks(on_output, mask_mode)
    else:
        masks = zero_branch_masks(frames, width, height, mask_mode)
    tokens = None
    if audio_features is not None:
        if audio_features.shape[0] < frames:
            raise InputError("audio_features", f"cover {audio_features.shape[0]} frames but the pose has {frames}",
                             "use a pose made from the same audio (25 fps), or trim the pose.")
        tokens = project_audio(net.audioproj, audio_features[:frames])
    return VideoConditioning(
        image_embeds=image_embeds,
        reference_latent=reference_latent(vae, reference_image, width, height),
        pose_frames=pose,
        masks=masks,
        audio_tokens=tokens,
    )


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
    """:func:`build_conditioning` for a pose video and region masks, with the CLIP embedding computed here."""
    check_output_size(width, height)
    check_pose_frames(pose_frames)
    image = to_pil(reference_image)
    return build_conditioning(net, vae, clip_image_embeds(clip_encoder, image), image, width, height, mask_mode,
                              pose_frames=pose_frames, face_hands_mask=face_hands_mask, lips_mask=lips_mask,
                              hands_mask=hands_mask, audio_features=audio_features)


def initial_latents(generator: Optional[torch.Generator], frames: int, width: int, height: int,
                    channels: int = LATENT_CHANNELS) -> torch.Tensor:
    """Official initial noise (1, C, T, H/8, W/8) float32, drawn on the generator's device (CPU by default)."""
    shape = (1, channels, frames, height // LATENT_STRIDE, width // LATENT_STRIDE)
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).cpu()


def check_conditioning(cond: VideoConditioning, settings: VideoSettings) -> None:
    """Raise InputError for sizes and frame counts that do not fit together (names the input and the fix)."""
    check_output_size(settings.width, settings.height)
    check_scheduler(settings.scheduler)
    if isinstance(cond.pose_frames, (torch.Tensor, np.ndarray)):
        check_pose_frames(cond.pose_frames)
    frames = cond.frames
    if cond.masks.frames != frames:
        raise InputError("masks", f"the motion masks have {cond.masks.frames} frames but the pose has {frames}",
                         "make the masks from the same pose sequence (one mask per pose frame).")
    if cond.audio_tokens is not None and cond.audio_tokens.shape[0] != frames:
        seconds = frames / VIDEO_FPS
        raise InputError("audio", f"the audio gives {cond.audio_tokens.shape[0]} frames but the pose has {frames}",
                         f"trim or pad the audio to {frames} frames ({seconds:.2f} s at {VIDEO_FPS} fps), or generate "
                         "the pose from this audio.")
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

    def __init__(self, net: nn.Module, cond: VideoConditioning, settings: VideoSettings,
                 reference: Optional[ReferenceKV] = None) -> None:
        check_conditioning(cond, settings)
        self.windows = context_windows(cond.frames, settings.context_frames, settings.context_overlap,
                                       settings.context_schedule, settings.context_blend)
        self.reference = reference or reference_for_video(net, cond, settings.round_reference_to_fp16)
        self._window = _WindowDenoiser(net, cond, settings, self.reference)
        self.frames = cond.frames
        self._finished_after = _finished_after(self.windows)

    def predict(self, latents: torch.Tensor, timestep: torch.Tensor, check_cancel: Optional[CancelFn] = None,
                window_done: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """Guided prediction (1, 4, T, h, w) float32: CFG per window, per-frame weighted blend of the windows."""
        guided = torch.zeros_like(latents, dtype=torch.float32)
        weight_sum = torch.zeros(self.frames)
        for _index, window, prediction in self._window_predictions(latents, timestep, check_cancel, window_done):
            _accumulate(guided, weight_sum, window, prediction)
        return guided.div_(weight_sum.view(1, 1, -1, 1, 1))

    def step_in_place(self, latents: torch.Tensor, timestep: torch.Tensor, update: FramesUpdate,
                      check_cancel: Optional[CancelFn] = None,
                      window_done: Optional[Callable[[], None]] = None) -> None:
        """:meth:`predict` followed by an elementwise scheduler update, without a whole-video prediction.

        Once the last window covering a frame has run, that frame's blended prediction is final, and
        ``update(prediction, latents)`` (on those frames) writes their next latents into ``latents``; later windows
        never read them. Only the frames of windows still to run are held (about one window), not a second tensor
        of the video's size. Same additions in the same order as :meth:`predict`, so the result is bit for bit the
        same as predicting the whole video first.
        """
        pending: dict[int, torch.Tensor] = {}
        pending_weight: dict[int, torch.Tensor] = {}
        for index, window, prediction in self._window_predictions(latents, timestep, check_cancel, window_done):
            weighted = prediction * window.weights.view(1, 1, -1, 1, 1)
            for position, frame in enumerate(window.frames.tolist()):
                if frame in pending:
                    pending[frame] = pending[frame] + weighted[:, :, position]
                    pending_weight[frame] = pending_weight[frame] + window.weights[position]
                else:
                    pending[frame], pending_weight[frame] = weighted[:, :, position], window.weights[position]
            finished = self._finished_after[index]
            if finished:
                frames = torch.tensor(finished)
                guided = torch.stack([pending.pop(frame) for frame in finished], dim=2)
                guided.div_(torch.stack([pending_weight.pop(frame) for frame in finished]).view(1, 1, -1, 1, 1))
                latents[:, :, frames] = update(guided, latents[:, :, frames])

    def _window_predictions(self, latents: torch.Tensor, timestep: torch.Tensor, check_cancel: Optional[CancelFn],
                            window_done: Optional[Callable[[], None]]
                            ) -> Iterator[tuple[int, ContextWindow, torch.Tensor]]:
        """(index, window, guided prediction) for every window in order."""
        # the next window's pose frames and masks are drawn on a helper thread while this window runs on the
        # model, so drawing per window (instead of holding them for the whole video) costs no wall time on a GPU
        with torch.no_grad(), ThreadPoolExecutor(max_workers=1) as drawer:
            upcoming = drawer.submit(self._window.prepare, self.windows[0])
            for index, window in enumerate(self.windows):
                if check_cancel is not None:
                    check_cancel()
                prepared = upcoming.result()
                if index + 1 < len(self.windows):
                    upcoming = drawer.submit(self._window.prepare, self.windows[index + 1])
                yield index, window, self._window(latents, timestep, window, prepared)
                if window_done is not None:
                    window_done()


def _ddim_update(scheduler: Any, timestep: torch.Tensor) -> FramesUpdate:
    """The DDIM update at ``timestep`` as a :data:`FramesUpdate`."""
    return lambda prediction, frames_latents: ddim_step(scheduler, prediction, timestep, frames_latents)


def _finished_after(windows: list[ContextWindow]) -> list[list[int]]:
    """For each window, the frames (ascending) that no later window covers: final once it has run."""
    last_window = {}
    for index, window in enumerate(windows):
        for frame in window.frames.tolist():
            last_window[frame] = index
    finished: list[list[int]] = [[] for _ in windows]
    for frame in sorted(last_window):
        finished[last_window[frame]].append(frame)
    return finished


def sample_latents(
    net: nn.Module,
    cond: VideoConditioning,
    settings: Optional[VideoSettings] = None,
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
    settings = settings or VideoSettings()
    check_conditioning(cond, settings)
    scheduler = make_scheduler(settings.scheduler)  # fresh per run: nothing carries over from a cancelled run
    timesteps = inference_timesteps(scheduler, settings.steps)
    if latents is None:  # drawn here, so scaled in place: one tensor of the video's size, not two
        latents = initial_latents(generator, cond.frames, settings.width, settings.height)
        latents.mul_(scheduler.init_noise_sigma)
    else:  # the caller's tensor stays as it is
        latents = latents.float().cpu() * scheduler.init_noise_sigma
    if check_cancel is not None:
        check_cancel()
    denoiser = VideoDenoiser(net, cond, settings)
    counter = _ProgressCounter(progress, len(timesteps) * len(denoiser.windows))
    # DDIM updates each frame alone, so frames are stepped as their windows finish (no whole-video prediction);
    # the multistep solvers, and a caller who wants every step's whole prediction, take the whole-video path
    frame_by_frame = on_step is None and updates_frames_independently(scheduler)
    for step_index, timestep in enumerate(timesteps):
        if frame_by_frame:
            denoiser.step_in_place(latents, timestep, _ddim_update(scheduler, timestep), check_cancel, counter.tick)
            continue
        guided = denoiser.predict(latents, timestep, check_cancel, counter.tick)
        if on_step is not None:
            on_step(step_index, int(timestep), guided)
        latents = scheduler_step(scheduler, guided, timestep, latents)
    return latents


@dataclass
class WindowConditions:
    """What one context window needs besides the latents: PoseGuider input (1, 3, f, H, W) and branch masks."""

    pose: torch.Tensor
    masks: BranchMasks


class _WindowDenoiser:
    """One guided prediction for one context window (CFG batch [uncond; cond] in a single UNet call)."""

    def __init__(self, net: nn.Module, cond: VideoConditioning, settings: VideoSettings,
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
        self.pose = cond.pose

    def prepare(self, window: ContextWindow) -> WindowConditions:
        """The window's pose frames (PoseGuider input) and branch masks, drawn now (no model call)."""
        pose = self.pose.window(window.frames, self.settings.width, self.settings.height)
        return WindowConditions(pose, self.cond.masks.select(window.frames))

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor, window: ContextWindow,
                 prepared: Optional[WindowConditions] = None) -> torch.Tensor:
        frames = window.frames
        batch = len(self.rows)
        prepared = prepared or self.prepare(window)
        sample = latents[:, :, frames].to(self.device, self.dtype).expand(batch, -1, -1, -1, -1)
        pose_dtype, pose_device = module_dtype_device(self.net.pose_guider)
        prediction = self.net.denoising_unet(
            sample, timestep.to(self.device), self.context,
            audio_tokens=self._audio(frames, batch),
            pose_features=self.net.pose_guider(prepared.pose.to(pose_device, pose_dtype)),
            masks=prepared.masks,
            branch_weights=self.settings.branch_weights,
            reference=self.reference,
            reference_rows=self.rows,
        ).float().cpu()
        if not self.guided:
            return prediction
        uncond, conditional = prediction.chunk(2)
        return uncond + self.settings.guidance_scale * (conditional - uncond)

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


def window_predictions(frames: int, settings: VideoSettings) -> int:
    """How many window predictions :func:`sample_latents` makes (its progress total): steps x windows per step."""
    return settings.steps * window_count(frames, settings.context_frames, settings.context_overlap,
                                         settings.context_schedule)

