"""Stage-II nodes: load the video net, VAE, CLIP image encoder and wav2vec2; encode audio; sample; decode."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional

import torch

from mmgt_core.audio.wav2vec import load_wav2vec2, wav2vec2_features
from mmgt_core.errors import InputError
from mmgt_core.keypoints import PoseSequence
from mmgt_core.pipeline import VideoInputs, VideoPipeline, available_memory_bytes, decoded_frames_bytes
from mmgt_core.timeline import trim_audio
from mmgt_core.video.conditioning import MASK_MODES, clip_image_embeds, load_clip_image_encoder
from mmgt_core.video.context import SCHEDULES
from mmgt_core.video.decode import decode_latents, load_vae
from mmgt_core.video.net import VideoNet, load_video_net
from mmgt_core.video.settings import RELEASED, VideoSettings

from . import host
from .common import node_errors
from .pose import KEYPOINTS_TYPE
from .stage1 import DEVICE_INPUT, DTYPE_INPUT, _device_dtype, _weight_files, audio_to_mono

logger = logging.getLogger(__name__)

LARGE_DECODE_BYTES = 4 * 2**30  # a whole-video IMAGE decode above this gets a warning naming the streaming node
VIDEO_NET_TYPE = "MMGT_VIDEO_NET"
MMGT_VAE_TYPE = "MMGT_VAE"
IMAGE_ENCODER_TYPE = "MMGT_IMAGE_ENCODER"
WAV2VEC_TYPE = "MMGT_WAV2VEC2"
STAGE2_AUDIO_TYPE = "MMGT_STAGE2_AUDIO"
LATENTS_TYPE = "MMGT_LATENTS"


@dataclass
class LoadedVideoNet:
    net: VideoNet
    device: torch.device
    dtype: torch.dtype
    offload: bool

    def on_device(self) -> VideoNet:
        return self.net.to(self.device)

    def release(self) -> None:
        """Send the weights back to the offload device when offloading was chosen."""
        if self.offload:
            self.net.to(host.offload_device())
            host.soft_empty_cache()


@dataclass
class Stage2Audio:
    """wav2vec2 features (T, layers, hidden) at 25 fps, and the clip they came from."""

    features: torch.Tensor
    frames: int
    audio: dict[str, Any]


@dataclass
class VideoLatents:
    latents: torch.Tensor  # (1, 4, T, H/8, W/8)
    fps: float
    audio: Optional[dict[str, Any]] = None  # the driving clip, muxed into the output video


def _folders(keyword: str) -> list[str]:
    found = [d for d in host.list_model_dirs() if keyword in d.lower()]
    return found or [f"(put the {keyword} folder in models/mmgt)"]


class LoadVideoNet:
    DESCRIPTION = ("Loads the Stage-II video network: the official net-*.pth (ReferenceNet, 3D UNet with motion and "
                   "MM-HAA audio modules, PoseGuider, AudioProj; opened safely and loaded strictly) or an MMGT "
                   ".safetensors.")
    CATEGORY = "MMGT/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (VIDEO_NET_TYPE,)
    RETURN_NAMES = ("video_net",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "checkpoint": (_weight_files(".pth", ".pt", ".safetensors"),
                           {"tooltip": "net-32500.pth (official) or a converted .safetensors in models/mmgt."}),
            "dtype": DTYPE_INPUT,
            "device": DEVICE_INPUT,
            "offload": (host.OFFLOAD_CHOICES, {"default": "none", "tooltip": "model_cpu_offload: keep the weights "
                                               "on the CPU between runs (saves GPU memory, slower start)."}),
        }}

    def load(self, checkpoint: str, dtype: str, device: str, offload: str) -> tuple[LoadedVideoNet]:
        with node_errors("MMGT Load Video Net"):
            target, torch_dtype = _device_dtype(device, dtype)
            offloading = offload == "model_cpu_offload"
            net = load_video_net(host.resolve_model_path(checkpoint), dtype=torch_dtype,
                                 device=host.offload_device() if offloading else target)
        return (LoadedVideoNet(net, target, torch_dtype, offloading),)


class LoadVAE:
    DESCRIPTION = "Loads a diffusers AutoencoderKL folder (sd-vae-ft-mse) from models/mmgt for MMGT."
    CATEGORY = "MMGT/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (MMGT_VAE_TYPE,)
    RETURN_NAMES = ("mmgt_vae",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"folder": (_folders("vae"), {"tooltip": "A diffusers VAE folder, e.g. sd-vae-ft-mse."}),
                             "dtype": DTYPE_INPUT, "device": DEVICE_INPUT}}

    def load(self, folder: str, dtype: str, device: str) -> tuple[Any]:
        with node_errors("MMGT Load VAE"):
            target, torch_dtype = _device_dtype(device, dtype)
            return (load_vae(host.resolve_model_path(folder), target, torch_dtype),)


class LoadImageEncoder:
    DESCRIPTION = ("Loads the CLIP ViT-L/14 image encoder with projection (image_encoder folder of "
                   "sd-image-variations-diffusers) from models/mmgt, with the official preprocessing.")
    CATEGORY = "MMGT/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (IMAGE_ENCODER_TYPE,)
    RETURN_NAMES = ("image_encoder",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"folder": (_folders("image_encoder"), {"tooltip": "A CLIPVisionModelWithProjection "
                                                                               "folder."}),
                             "dtype": DTYPE_INPUT, "device": DEVICE_INPUT}}

    def load(self, folder: str, dtype: str, device: str) -> tuple[Any]:
        with node_errors("MMGT Load Image Encoder"):
            target, torch_dtype = _device_dtype(device, dtype)
            return (load_clip_image_encoder(host.resolve_model_path(folder), device=target, dtype=torch_dtype),)


class LoadWav2Vec2:
    DESCRIPTION = "Loads wav2vec2-base-960h (a local Hugging Face folder in models/mmgt) for the MM-HAA audio features."
    CATEGORY = "MMGT/loaders"
    FUNCTION = "load"
    RETURN_TYPES = (WAV2VEC_TYPE,)
    RETURN_NAMES = ("wav2vec2",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"folder": (_folders("wav2vec"), {"tooltip": "facebook/wav2vec2-base-960h folder."}),
                             "device": DEVICE_INPUT}}

    def load(self, folder: str, device: str) -> tuple[Any]:
        with node_errors("MMGT Load wav2vec2"):
            return (load_wav2vec2(host.resolve_model_path(folder), device=host.torch_device(device)),)


class Stage2AudioFeatures:
    DESCRIPTION = ("wav2vec2 features for MM-HAA exactly as the official AudioProcessor makes them (CNN features "
                   "resampled to 25 fps before the transformer, all layer outputs), for any length of audio.")
    CATEGORY = "MMGT/audio"
    FUNCTION = "encode"
    RETURN_TYPES = (STAGE2_AUDIO_TYPE, "INT")
    RETURN_NAMES = ("audio_features", "frames")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": ("AUDIO", {"tooltip": "Speech (any rate, any channels; mixed to mono)."}),
                             "wav2vec2": (WAV2VEC_TYPE, {"tooltip": "From MMGT Load wav2vec2."})}}

    def encode(self, audio: dict[str, Any], wav2vec2: Any) -> tuple[Stage2Audio, int]:
        with node_errors("MMGT Stage-II Audio Features"):
            mono, rate = audio_to_mono(audio)
            features, frames = wav2vec2_features(wav2vec2, mono, rate)
        return Stage2Audio(features, frames, audio), frames


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


def _pick_vae(vae: Any, mmgt_vae: Any, node: str) -> Any:
    if mmgt_vae is not None:
        return mmgt_vae
    if vae is not None:
        return _ComfyVAE(vae)
    raise InputError("vae", f"{node} needs a VAE.", "Connect ComfyUI's Load VAE (vae-ft-mse) or MMGT Load VAE.")


def _image_embeds(image: torch.Tensor, image_encoder: Any, clip_vision: Any) -> torch.Tensor:
    if image_encoder is not None:
        return clip_image_embeds(image_encoder, image[0])
    if clip_vision is not None:
        return clip_vision.encode_image(image[:1]).image_embeds.float().cpu()
    raise InputError("image_encoder", "no CLIP image encoder was connected.",
                     "Connect ComfyUI's Load CLIP Vision (ViT-L/14) or MMGT Load Image Encoder.")


class SampleVideo:
    DESCRIPTION = ("Renders the video latents: ReferenceNet on the reference image (once), the 3D UNet with the "
                   "pose, MM-HAA audio attention gated by the motion masks, DDIM v-prediction with CFG. Give it "
                   "the keypoints: each context window's pose frames and masks are drawn from them at the output "
                   "size when needed, so any length fits in bounded memory. A pose video (IMAGE) and hand-painted "
                   "masks (MASK) are optional overrides. Any size whose sides are multiples of 64.")
    CATEGORY = "MMGT/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = (LATENTS_TYPE,)
    RETURN_NAMES = ("latents",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        full, face, lips = RELEASED.branch_weights
        return {"required": {
            "video_net": (VIDEO_NET_TYPE, {"tooltip": "From MMGT Load Video Net."}),
            "reference_image": ("IMAGE", {"tooltip": "The person to animate (cover-resized to the output size)."}),
            "width": ("INT", {"default": RELEASED.width, "min": 64, "max": 2048, "step": 64,
                              "tooltip": "Output width, a multiple of 64."}),
            "height": ("INT", {"default": RELEASED.height, "min": 64, "max": 2048, "step": 64,
                               "tooltip": "Output height, a multiple of 64."}),
            "seed": ("INT", {"default": RELEASED.seed, "min": 0, "max": 2**63 - 1, "tooltip": "Noise seed."}),
            "steps": ("INT", {"default": RELEASED.steps, "min": 1, "max": 200,
                              "tooltip": f"DDIM steps (official: {RELEASED.steps})."}),
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
            "context_frames": ("INT", {"default": RELEASED.context_frames, "min": 4, "max": 32,
                                       "tooltip": "Frames per context window."}),
            "context_overlap": ("INT", {"default": RELEASED.context_overlap, "min": 0, "max": 16,
                                        "tooltip": "Frames shared by neighbouring windows (blended)."}),
            "context_schedule": (list(SCHEDULES), {"default": RELEASED.context_schedule, "tooltip": "open: no "
                                 "wrap-around; closed_loop: the official schedule (last window wraps to the first "
                                 "frames)."}),
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
            "mmgt_vae": (MMGT_VAE_TYPE, {"tooltip": "MMGT Load VAE (diffusers folder)."}),
            "vae": ("VAE", {"tooltip": "Or ComfyUI's VAE (vae-ft-mse-840000)."}),
        }}

    def sample(self, video_net: LoadedVideoNet, reference_image: torch.Tensor,
               pose_frames: Optional[torch.Tensor] = None, face_hands_mask: Optional[torch.Tensor] = None,
               lips_mask: Optional[torch.Tensor] = None, width: int = RELEASED.width, height: int = RELEASED.height,
               seed: int = RELEASED.seed, steps: int = RELEASED.steps, cfg: float = RELEASED.guidance_scale,
               full_weight: float = RELEASED.branch_weights[0], face_weight: float = RELEASED.branch_weights[1],
               lips_weight: float = RELEASED.branch_weights[2], mask_mode: str = RELEASED.mask_mode,
               context_frames: int = RELEASED.context_frames, context_overlap: int = RELEASED.context_overlap,
               context_schedule: str = RELEASED.context_schedule, keypoints: Optional[PoseSequence] = None,
               audio_features: Optional[Stage2Audio] = None, hands_mask: Optional[torch.Tensor] = None,
               image_encoder: Any = None, clip_vision: Any = None, mmgt_vae: Any = None, vae: Any = None
               ) -> tuple[VideoLatents]:
        """ComfyUI passes every input by name; the positional order is the pre-keypoint one, kept for callers."""
        with node_errors("MMGT Sample Video"):
            settings = VideoSettings(width=width, height=height, seed=seed, steps=steps, guidance_scale=cfg,
                                     branch_weights=(full_weight, face_weight, lips_weight), mask_mode=mask_mode,
                                     context_frames=context_frames, context_overlap=context_overlap,
                                     context_schedule=context_schedule)
            inputs = VideoInputs(
                reference_image=reference_image[0], keypoints=keypoints, pose_frames=pose_frames,
                face_hands_mask=face_hands_mask, lips_mask=lips_mask, hands_mask=hands_mask,
                audio_features=audio_features.features if audio_features is not None else None,
                image_embeds=_image_embeds(reference_image, image_encoder, clip_vision))
            net = video_net.on_device()
            try:
                pipeline = VideoPipeline(net, _pick_vae(vae, mmgt_vae, "MMGT Sample Video"))
                result = pipeline(inputs, settings, progress=host.progress_reporter(steps),
                                  check_cancel=host.check_cancel, output="latent")
            finally:
                video_net.release()
        return (VideoLatents(result.latents, 25.0, audio_features.audio if audio_features is not None else None),)


class DecodeVideo:
    DESCRIPTION = ("Decodes MMGT video latents to frames (IMAGE), a few frames at a time to bound memory, and "
                   "returns the driving audio cut to the video's length (silence in pose-only mode) and the fps, "
                   "ready for Create Video → Save Video.")
    CATEGORY = "MMGT/sampling"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "FLOAT", "AUDIO")
    RETURN_NAMES = ("frames", "fps", "audio")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "latents": (LATENTS_TYPE, {"tooltip": "From MMGT Sample Video."}),
            "chunk_frames": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Frames decoded at once (lower "
                                                                                   "uses less memory)."}),
        }, "optional": {
            "mmgt_vae": (MMGT_VAE_TYPE, {"tooltip": "MMGT Load VAE (diffusers folder)."}),
            "vae": ("VAE", {"tooltip": "Or ComfyUI's VAE."}),
        }}

    def decode(self, latents: VideoLatents, chunk_frames: int, mmgt_vae: Any = None, vae: Any = None
               ) -> tuple[torch.Tensor, float, dict[str, Any]]:
        with node_errors("MMGT Decode Video"):
            _check_decode_fits(latents.latents)
            frames = decode_latents(_pick_vae(vae, mmgt_vae, "MMGT Decode Video"), latents.latents, chunk_frames,
                                    progress=host.progress_reporter(latents.latents.shape[2]),
                                    check_cancel=host.check_cancel)
        return frames, latents.fps, _audio_for(latents, frames.shape[0])


def _check_decode_fits(latents: torch.Tensor) -> None:
    """Warn before a large whole-video IMAGE decode, and refuse one that cannot fit in the memory left."""
    frames, height, width = latents.shape[2], latents.shape[3] * 8, latents.shape[4] * 8
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
    logger.warning("MMGT Decode Video: %s. %s", message, streaming)


def _audio_for(latents: VideoLatents, frames: int) -> dict[str, Any]:
    """The driving audio cut or padded to exactly the video's duration (silence when there was none)."""
    if latents.audio is None:
        rate = 16000
        return {"waveform": torch.zeros(1, 1, round(frames / latents.fps * rate)), "sample_rate": rate}
    waveform = latents.audio["waveform"]
    waveform = waveform if waveform.ndim == 3 else waveform.reshape(1, -1, waveform.shape[-1])
    rate = int(latents.audio["sample_rate"])
    return {"waveform": trim_audio(waveform.float(), rate, frames, latents.fps), "sample_rate": rate}


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
