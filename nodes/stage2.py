"""Stage-II nodes: load the video net, VAE, CLIP image encoder and wav2vec2; encode audio; sample; decode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from types import SimpleNamespace
from typing import Any, Optional

import torch

from mmgt_core.audio.notices import audio_notices
from mmgt_core.audio.wav2vec import load_wav2vec2, wav2vec2_features
from mmgt_core.constants import (
    ENCODER_SAMPLE_RATE,
    LATENT_STRIDE,
    MOTION_MODULE_MAX_FRAMES,
    SIZE_MULTIPLE,
    VIDEO_FPS,
)
from mmgt_core.errors import InputError
from mmgt_core.keypoints import PoseSequence
from mmgt_core.memory import (
    ENCODER_WORKING_BYTES,
    available_memory_bytes,
    decode_chunk_that_fits,
    decoded_frames_bytes,
    stage2_window_bytes,
    vae_decode_bytes,
)
from mmgt_core.pipeline import VideoInputs, VideoPipeline
from mmgt_core.pretrained import load_vae
from mmgt_core.timeline import trim_audio
from mmgt_core.video.conditioning import MASK_MODES, clip_image_embeds, load_clip_image_encoder
from mmgt_core.video.context import SCHEDULES
from mmgt_core.video.net import load_video_net
from mmgt_core.video.scheduler import SCHEDULERS
from mmgt_core.video.settings import RELEASED, VideoSettings
from mmgt_core.video.vae_codec import ALREADY_UNSCALED, decode_latents, vae_scaling_factor

from . import host
from .common import (
    AUDIO_CATEGORY,
    KEYPOINTS_TYPE,
    LOGGER,
    SAMPLING_CATEGORY,
    ManagedModel,
    ModelLoader,
    audio_to_mono,
    node_errors,
)
from .model_files import all_problems, choices, validate_number

LARGE_DECODE_BYTES = 4 * 2**30  # a whole-video IMAGE decode above this gets a warning naming the streaming node
VIDEO_NET_TYPE = "MMGT_VIDEO_NET"
MMGT_VAE_TYPE = "MMGT_VAE"
IMAGE_ENCODER_TYPE = "MMGT_IMAGE_ENCODER"
WAV2VEC_TYPE = "MMGT_WAV2VEC2"
STAGE2_AUDIO_TYPE = "MMGT_STAGE2_AUDIO"
LATENTS_TYPE = "MMGT_LATENTS"
SILENT_AUDIO_RATE = ENCODER_SAMPLE_RATE  # the sample rate of the silent track a pose-only video gets
SAMPLE_NODE = "MMGT Sample Video"
CHUNK_FRAMES_INPUT = ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Frames decoded at once (lower uses less "
                                                                            "memory)."})
VAE_INPUTS = {"mmgt_vae": (MMGT_VAE_TYPE, {"tooltip": "MMGT Load VAE (diffusers folder)."}),
              "vae": ("VAE", {"tooltip": "Or ComfyUI's VAE (vae-ft-mse-840000)."})}
"""The decoding nodes' inputs: the chunk size and the two ways to give the VAE."""


@dataclass
class Stage2Audio:
    """wav2vec2 features (T, layers, hidden) at 25 fps, and the clip they came from."""

    features: torch.Tensor
    frames: int
    audio: dict[str, Any]


@dataclass
class VideoLatents:
    """Sample Video's result: the latents in the VAE's own space (unscaled, as core LATENT holds them), frames first,
    with the fps and the driving clip. ``samples`` is the very tensor of Sample Video's core LATENT output, so the
    video's latents are held once however both outputs are used."""

    samples: torch.Tensor  # (T, 4, H/8, W/8); a frames-first view of the sampler's (1, 4, T, H/8, W/8) result
    fps: float
    audio: Optional[dict[str, Any]] = None  # the driving clip, muxed into the output video

    @property
    def frame_count(self) -> int:
        return int(self.samples.shape[0])

    def driving_audio(self) -> tuple[Optional[torch.Tensor], int]:
        """The AUDIO dict's first clip as (channels, samples) and its rate; (None, SILENT_AUDIO_RATE) without."""
        if self.audio is None:
            return None, SILENT_AUDIO_RATE
        waveform = self.audio["waveform"]
        waveform = waveform[0] if waveform.ndim == 3 else waveform.reshape(-1, waveform.shape[-1])
        return waveform, int(self.audio["sample_rate"])


class LoadVideoNet(ModelLoader):
    DESCRIPTION = ("Loads the Stage-II video network: the official net-*.pth (ReferenceNet, 3D UNet with motion and "
                   "MM-HAA audio modules, PoseGuider, AudioProj; opened safely and loaded strictly) or an MMGT "
                   ".safetensors.")
    RETURN_TYPES = (VIDEO_NET_TYPE,)
    RETURN_NAMES = ("video_net",)
    COMPONENT = "video_net"
    PICK = ("checkpoint", "net-32500.pth (official) or a converted .safetensors in models/mmgt.")

    def load(self, checkpoint: str, dtype: str) -> tuple[ManagedModel]:
        handle = self.managed("MMGT Load Video Net", load_video_net, checkpoint, "the video net", "diffusion", dtype)[1]
        return (ManagedModel(handle),)


class LoadVAE(ModelLoader):
    DESCRIPTION = "Loads a diffusers AutoencoderKL folder (sd-vae-ft-mse) from models/mmgt for MMGT."
    RETURN_TYPES = (MMGT_VAE_TYPE,)
    RETURN_NAMES = ("mmgt_vae",)
    COMPONENT = "vae"
    PICK = ("folder", "A diffusers VAE folder, e.g. sd-vae-ft-mse.")

    def load(self, folder: str, dtype: str) -> tuple[host.ModelHandle]:
        return (self.managed("MMGT Load VAE", load_vae, folder, "the VAE", "vae", dtype)[1],)


class LoadImageEncoder(ModelLoader):
    DESCRIPTION = ("Loads the CLIP ViT-L/14 image encoder with projection (image_encoder folder of "
                   "sd-image-variations-diffusers) from models/mmgt, with the official preprocessing.")
    RETURN_TYPES = (IMAGE_ENCODER_TYPE,)
    RETURN_NAMES = ("image_encoder",)
    COMPONENT = "image_encoder"
    PICK = ("folder", "A CLIPVisionModelWithProjection folder.")

    def load(self, folder: str, dtype: str) -> tuple[host.ModelHandle]:
        return (self.managed("MMGT Load Image Encoder", load_clip_image_encoder, folder, "the CLIP image encoder",
                             "encoder", dtype)[1],)


class LoadWav2Vec2(ModelLoader):
    DESCRIPTION = "Loads wav2vec2-base-960h (a local Hugging Face folder in models/mmgt) for the MM-HAA audio features."
    RETURN_TYPES = (WAV2VEC_TYPE,)
    RETURN_NAMES = ("wav2vec2",)
    COMPONENT = "wav2vec2"
    PICK = ("folder", "facebook/wav2vec2-base-960h folder (runs in float32, like the official features).")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"folder": (choices(cls.COMPONENT), {"tooltip": cls.PICK[1]})}}  # no dtype widget

    def load(self, folder: str) -> tuple[host.ModelHandle]:
        with node_errors("MMGT Load wav2vec2"):
            model = load_wav2vec2(host.resolve_model_path(folder))
            return (host.manage_model(model, "wav2vec2", "encoder", torch.float32),)


class Stage2AudioFeatures:
    DESCRIPTION = ("wav2vec2 features for MM-HAA exactly as the official AudioProcessor makes them (CNN features "
                   "resampled to 25 fps before the transformer, all layer outputs), for any length of audio.")
    CATEGORY = AUDIO_CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (STAGE2_AUDIO_TYPE, "INT", "STRING")
    RETURN_NAMES = ("audio_features", "frames", "notes")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO", {"tooltip": "Speech (any rate, any channels; mixed to mono)."}),
                             "wav2vec2": (WAV2VEC_TYPE, {"tooltip": "From MMGT Load wav2vec2."})}}

    def encode(self, audio: dict[str, Any], wav2vec2: host.ModelHandle) -> tuple[Stage2Audio, int, str]:
        with node_errors("MMGT Stage-II Audio Features"):
            mono, rate = audio_to_mono(audio)
            with host.compute_with([wav2vec2], stage="Stage-II audio features (wav2vec2)",
                                   workload=f"{mono.shape[0] / rate:.1f} s of audio",
                                   lower=None, memory_required=ENCODER_WORKING_BYTES):
                features, frames = wav2vec2_features(wav2vec2.module, mono, rate)
            notes = audio_notices(mono, rate, stage="II")
        for note in notes:
            LOGGER.warning("[MMGT Stage-II Audio Features] %s", note)
        return Stage2Audio(features, frames, audio), frames, "\n".join(notes) or f"{frames} frames of audio features."


class _ComfyVAE:
    """Adapts ComfyUI's VAE object (IMAGE in/out, unscaled latents) to the diffusers calls the core makes."""

    def __init__(self, vae: Any) -> None:
        self.vae = vae

    def encode(self, pixels: torch.Tensor) -> Any:
        latent = self.vae.encode(((pixels + 1) / 2).permute(0, 2, 3, 1))
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=latent, mode=lambda: latent))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.vae.decode(latents)
        return images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2) * 2 - 1


def _pick_vae(vae: Any, mmgt_vae: Optional[host.ModelHandle], node: str) -> Any:
    if mmgt_vae is not None:
        return mmgt_vae.module
    if vae is not None:
        return _ComfyVAE(vae)
    raise InputError("vae", f"{node} needs a VAE.", "Connect ComfyUI's Load VAE (vae-ft-mse) or MMGT Load VAE.")


def _image_embeds(image: torch.Tensor, image_encoder: Optional[host.ModelHandle], clip_vision: Any) -> torch.Tensor:
    if image_encoder is not None:
        with host.compute_with([image_encoder], stage="the CLIP image embedding", workload="one 224x224 image",
                               lower=None, memory_required=ENCODER_WORKING_BYTES):
            return clip_image_embeds(image_encoder.module, image[0])
    if clip_vision is not None:
        return clip_vision.encode_image(image[:1]).image_embeds.float().cpu()
    raise InputError("image_encoder", "no CLIP image encoder was connected.",
                     "Connect ComfyUI's Load CLIP Vision (ViT-L/14) or MMGT Load Image Encoder.")


class SampleVideo:
    DESCRIPTION = ("Renders the video latents: ReferenceNet on the reference image (once), the 3D UNet with the "
                   "pose, MM-HAA audio attention gated by the motion masks, DDIM v-prediction with CFG (or "
                   "DPM-Solver++ 2M / UniPC in fewer steps). Give it the keypoints: each context window's pose "
                   "frames and masks are drawn from them at the output size when needed, so any length fits in "
                   "bounded memory. A pose video (IMAGE) and hand-painted masks (MASK) are optional overrides. Any "
                   f"size whose sides are multiples of {SIZE_MULTIPLE}.")
    CATEGORY = SAMPLING_CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = (LATENTS_TYPE, "LATENT")
    RETURN_NAMES = ("latents", "latent")
    OUTPUT_TOOLTIPS = ("For MMGT Decode Video (keeps the fps and the driving audio).",
                       "The same frames as core LATENT (frames as the batch, SD VAE scale) for core VAE Decode, "
                       "VAE Decode (Tiled) and latent previews.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        full, face, lips = RELEASED.branch_weights
        return {"required": {
            "video_net": (VIDEO_NET_TYPE, {"tooltip": "From MMGT Load Video Net."}),
            "reference_image": ("IMAGE", {"tooltip": "The person to animate (cover-resized to the output size)."}),
            "width": ("INT", {"default": RELEASED.width, "min": SIZE_MULTIPLE, "max": 2048, "step": SIZE_MULTIPLE,
                              "tooltip": f"Output width, a multiple of {SIZE_MULTIPLE}."}),
            "height": ("INT", {"default": RELEASED.height, "min": SIZE_MULTIPLE, "max": 2048, "step": SIZE_MULTIPLE,
                               "tooltip": f"Output height, a multiple of {SIZE_MULTIPLE}."}),
            "seed": ("INT", {"default": RELEASED.seed, "min": 0, "max": 2**63 - 1, "tooltip": "Noise seed."}),
            "steps": ("INT", {"default": RELEASED.steps, "min": 1, "max": 200,
                              "tooltip": f"Sampler steps (official: {RELEASED.steps} DDIM steps)."}),
            "cfg": ("FLOAT", {"default": RELEASED.guidance_scale, "min": 1.0, "max": 20.0, "step": 0.1,
                              "tooltip": f"Guidance scale (official: {RELEASED.guidance_scale})."}),
            "full_weight": ("FLOAT", {"default": full, "min": 0.0, "max": 5.0, "step": 0.1,
                                      "tooltip": "MM-HAA branch weight of the full/background branch."}),
            "face_weight": ("FLOAT", {"default": face, "min": 0.0, "max": 5.0, "step": 0.1,
                                      "tooltip": "MM-HAA branch weight of the face+hands branch."}),
            "lips_weight": ("FLOAT", {"default": lips, "min": 0.0, "max": 5.0, "step": 0.1,
                                      "tooltip": "MM-HAA branch weight of the lips branch (the released script "
                                                 "effectively uses 1, 1, 2)."}),
            "mask_mode": (list(MASK_MODES), {"default": RELEASED.mask_mode, "tooltip": "released: full = 1 + lips "
                                             "(the released script); paper: background mask; training: hands mask."}),
            "context_frames": ("INT", {"default": RELEASED.context_frames, "min": 4, "max": MOTION_MODULE_MAX_FRAMES,
                                       "tooltip": "Frames per context window."}),
            "context_overlap": ("INT", {"default": RELEASED.context_overlap, "min": 0, "max": 16,
                                        "tooltip": "Frames shared by neighbouring windows (blended)."}),
            "context_schedule": (list(SCHEDULES), {"default": RELEASED.context_schedule, "tooltip": "open: no "
                                 "wrap-around; closed_loop: the official schedule (last window wraps to the first "
                                 "frames)."}),
            "scheduler": (list(SCHEDULERS), {"default": RELEASED.scheduler, "tooltip": "ddim: the released sampler "
                          "(use 30 steps). dpmpp_2m (DPM-Solver++ 2M) or unipc: same model setup, fewer steps (e.g. "
                          "15); their quality on the real weights is not measured yet."}),
        }, "optional": {
            "keypoints": (KEYPOINTS_TYPE, {"tooltip": "The driving pose (MMGT Audio to Pose, Load Keypoints, ...): "
                                                      "pose frames and motion masks are drawn from it per window."}),
            "pose_frames": ("IMAGE", {"tooltip": "Optional external pose video, one frame per output frame "
                                                 "(replaces drawing the keypoints; resized per window)."}),
            "face_hands_mask": ("MASK", {"tooltip": "Optional override: face+hands mask per frame (e.g. hand-painted; "
                                                    "default: from the keypoints)."}),
            "lips_mask": ("MASK", {"tooltip": "Optional override: lips mask per frame (with face_hands_mask)."}),
            "audio_features": (STAGE2_AUDIO_TYPE, {"tooltip": "From MMGT Stage-II Audio Features; leave empty for "
                                                              "pose-driven video without audio conditioning."}),
            "hands_mask": ("MASK", {"tooltip": "Optional override: hands mask (used by mask mode 'training')."}),
            "image_encoder": (IMAGE_ENCODER_TYPE, {"tooltip": "MMGT Load Image Encoder (official preprocessing)."}),
            "clip_vision": ("CLIP_VISION", {"tooltip": "Or ComfyUI's CLIP Vision (ViT-L/14)."}),
            **VAE_INPUTS,
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width: int | None = None, height: int | None = None) -> bool | str:
        return all_problems(validate_number(cls, "width", width, multiple_of=SIZE_MULTIPLE),
                             validate_number(cls, "height", height, multiple_of=SIZE_MULTIPLE))

    def sample(self, video_net: ManagedModel, reference_image: torch.Tensor, **inputs: Any
               ) -> tuple[VideoLatents, dict[str, Any]]:
        """ComfyUI passes every input by name: the optional ones fill :class:`SampleVideoOptions`, the widgets
        :class:`VideoSettings` (:func:`video_settings`)."""
        options = SampleVideoOptions(**{name: inputs.pop(name) for name in SAMPLE_OPTION_NAMES if name in inputs})
        with node_errors(SAMPLE_NODE):
            settings = video_settings(**inputs)
            video_inputs = options.video_inputs(reference_image)
            pipeline = VideoPipeline(video_net.module, _pick_vae(options.vae, options.mmgt_vae, SAMPLE_NODE))
            latents = _render_latents(pipeline, video_net, options, video_inputs, settings)
        audio = options.audio_features.audio if options.audio_features is not None else None
        video = VideoLatents(unscaled_frames_first(latents, vae_scaling_factor(pipeline.vae)), float(VIDEO_FPS), audio)
        return video, {"samples": video.samples}


def video_settings(cfg: float = RELEASED.guidance_scale, full_weight: float = RELEASED.branch_weights[0],
                   face_weight: float = RELEASED.branch_weights[1], lips_weight: float = RELEASED.branch_weights[2],
                   **same_names: Any) -> VideoSettings:
    """Sample Video's widgets as VideoSettings: ``cfg`` and the three branch weights are named differently there;
    width, height, seed, steps, mask_mode, context_* and scheduler keep their names (missing ones: released)."""
    return replace(RELEASED, guidance_scale=cfg, branch_weights=(full_weight, face_weight, lips_weight), **same_names)


@dataclass
class SampleVideoOptions:
    """Sample Video's optional inputs: the driving pose and audio, overrides, and the encoders to use."""

    keypoints: Optional[PoseSequence] = None
    pose_frames: Optional[torch.Tensor] = None
    face_hands_mask: Optional[torch.Tensor] = None
    lips_mask: Optional[torch.Tensor] = None
    audio_features: Optional[Stage2Audio] = None
    hands_mask: Optional[torch.Tensor] = None
    image_encoder: Optional[host.ModelHandle] = None
    clip_vision: Any = None
    mmgt_vae: Optional[host.ModelHandle] = None
    vae: Any = None

    def video_inputs(self, reference_image: torch.Tensor) -> VideoInputs:
        """What the pipeline renders from (the CLIP embedding of the reference is computed here)."""
        return VideoInputs(
            reference_image=reference_image[0], keypoints=self.keypoints, pose_frames=self.pose_frames,
            face_hands_mask=self.face_hands_mask, lips_mask=self.lips_mask, hands_mask=self.hands_mask,
            audio_features=self.audio_features.features if self.audio_features is not None else None,
            image_embeds=_image_embeds(reference_image, self.image_encoder, self.clip_vision))

    def frame_count(self) -> int | str:
        """How many frames will be rendered, for messages ("no" without a pose)."""
        if self.keypoints is not None:
            return self.keypoints.num_frames
        return len(self.pose_frames) if self.pose_frames is not None else "no"


SAMPLE_OPTION_NAMES = tuple(field.name for field in fields(SampleVideoOptions))


def _render_latents(pipeline: VideoPipeline, video_net: ManagedModel, options: SampleVideoOptions,
                    inputs: VideoInputs, settings: VideoSettings) -> torch.Tensor:
    """Conditioning (with our VAE loaded too, for the reference latent), then the denoising loop, each under the
    host's model management with the memory one context window needs."""
    fit = {"stage": f"Stage II ({SAMPLE_NODE})", "lower": "width/height or context_frames",
           "workload": f"{settings.width}x{settings.height}, {settings.context_frames}-frame windows "
                       f"({options.frame_count()} frames)",
           "memory_required": stage2_window_bytes(settings.width, settings.height, settings.context_frames, 2,
                                                  video_net.dtype)}
    managed_vae = [options.mmgt_vae] if options.mmgt_vae is not None else []
    with host.compute_with([video_net.handle, *managed_vae], **fit):
        cond = pipeline.conditioning(inputs, settings)
    with host.compute_with([video_net.handle], **fit):  # a core VAE's encode may have evicted the net
        return pipeline.sample(cond, settings, progress=host.progress_reporter(settings.steps),
                               check_cancel=host.check_cancel)


class DecodeVideo:
    DESCRIPTION = ("Decodes MMGT video latents to frames (IMAGE), a few frames at a time to bound memory, and "
                   "returns the driving audio cut to the video's length (silence in pose-only mode) and the fps, "
                   "ready for Create Video → Save Video.")
    CATEGORY = SAMPLING_CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "FLOAT", "AUDIO")
    RETURN_NAMES = ("frames", "fps", "audio")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"latents": (LATENTS_TYPE, {"tooltip": "From MMGT Sample Video."}),
                             "chunk_frames": CHUNK_FRAMES_INPUT}, "optional": {**VAE_INPUTS}}

    def decode(self, latents: VideoLatents, chunk_frames: int, mmgt_vae: Optional[host.ModelHandle] = None,
               vae: Any = None) -> tuple[torch.Tensor, float, dict[str, Any]]:
        with node_errors("MMGT Decode Video"):
            _check_decode_fits(latents.samples)
            with vae_for_decoding(latents, chunk_frames, mmgt_vae, vae, "MMGT Decode Video") as (decoder, chunk):
                frames = decode_latents(decoder, latents.samples, chunk, scaling_factor=ALREADY_UNSCALED,
                                        progress=host.progress_reporter(latents.frame_count),
                                        check_cancel=host.check_cancel)
        return frames, latents.fps, _audio_for(latents, frames.shape[0])


def _check_decode_fits(samples: torch.Tensor) -> None:
    """Warn before a large whole-video IMAGE decode of ``samples`` (T, 4, h, w), and refuse one that cannot fit in
    the memory left."""
    frames, height, width = samples.shape[0], samples.shape[2] * LATENT_STRIDE, samples.shape[3] * LATENT_STRIDE
    needed = decoded_frames_bytes(frames, width, height)
    if needed < LARGE_DECODE_BYTES:
        return
    available = available_memory_bytes()
    message = (f"decoding {frames} frames at {width}x{height} returns one IMAGE batch of about "
               f"{needed / 2**30:.1f} GiB")
    streaming = ("Use MMGT Save Video instead: it decodes and writes the mp4 chunk by chunk in memory independent "
                 "of the length (keep MMGT Decode Video for short clips).")
    if available is not None and needed > available:
        raise InputError("latents", f"{message}, more than the {available / 2**30:.1f} GiB of memory available.",
                         streaming)
    LOGGER.warning("[MMGT Decode Video]: %s. %s", message, streaming)


@contextmanager
def vae_for_decoding(latents: VideoLatents, chunk_frames: int, mmgt_vae: Optional[host.ModelHandle], vae: Any,
                     node: str) -> Iterator[tuple[Any, int]]:
    """The decoder to use (loaded through ComfyUI's model management when it is ours) and the chunk size that fits
    the free memory; a core VAE loads itself through ComfyUI."""
    decoder = _pick_vae(vae, mmgt_vae, node)
    if mmgt_vae is None:
        yield decoder, chunk_frames
        return
    height, width = (side * LATENT_STRIDE for side in latents.samples.shape[-2:])
    with host.compute_with([mmgt_vae], stage=node, workload=f"{chunk_frames} frames at {width}x{height}",
                           lower="chunk_frames",
                           memory_required=vae_decode_bytes(width, height, chunk_frames, mmgt_vae.dtype)):
        # fewer frames at once when the GPU has less room than asked for
        yield decoder, decode_chunk_that_fits(host.free_memory_bytes(mmgt_vae.load_device), width, height,
                                              mmgt_vae.dtype, chunk_frames)


def unscaled_frames_first(latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """The sampler's latents (1, 4, T, h, w), scaled by the VAE factor for the UNet, unscaled in place and viewed
    frames first (T, 4, h, w): core LATENT's layout and scale (SD1.5's latent format scales inside the model, never
    in the LATENT itself). No copy: both of Sample Video's outputs share this one storage."""
    return latents.detach().div_(scaling_factor)[0].transpose(0, 1)


def _audio_for(latents: VideoLatents, frames: int) -> dict[str, Any]:
    """The driving audio cut or padded to exactly the video's duration (silence when there was none)."""
    waveform, rate = latents.driving_audio()
    if waveform is None:
        return {"waveform": torch.zeros(1, 1, round(frames / latents.fps * rate)), "sample_rate": rate}
    return {"waveform": trim_audio(waveform[None].float(), rate, frames, latents.fps), "sample_rate": rate}


NODE_CLASS_MAPPINGS = {
    "MMGT_LoadVideoNet": LoadVideoNet,
    "MMGT_LoadVAE": LoadVAE,
    "MMGT_LoadImageEncoder": LoadImageEncoder,
    "MMGT_LoadWav2Vec2": LoadWav2Vec2,
    "MMGT_Stage2AudioFeatures": Stage2AudioFeatures,
    "MMGT_SampleVideo": SampleVideo,
    "MMGT_DecodeVideo": DecodeVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MMGT_LoadVideoNet": "MMGT Load Video Net",
    "MMGT_LoadVAE": "MMGT Load VAE",
    "MMGT_LoadImageEncoder": "MMGT Load Image Encoder",
    "MMGT_LoadWav2Vec2": "MMGT Load wav2vec2",
    "MMGT_Stage2AudioFeatures": "MMGT Stage-II Audio Features",
    "MMGT_SampleVideo": "MMGT Sample Video",
    "MMGT_DecodeVideo": "MMGT Decode Video",
}
