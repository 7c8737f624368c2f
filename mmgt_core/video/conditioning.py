"""Stage-II conditioning: CLIP image embedding, reference latent, pose frames and the MM-HAA branch masks.

Everything here follows ``Pose2VideoPipeline`` of the official code (spec 3.2, 3.7, 3.8, 2.3-2.4):

* CLIP: ``ref.resize((224, 224))`` (PIL bicubic) then ``CLIPImageProcessor()`` defaults (shortest edge 224, center
  crop 224, OpenAI mean/std) -> ``image_embeds`` (1, D).
* Reference latent: the image resized to the output size with LANCZOS, scaled to [-1, 1],
  ``vae.encode(x).latent_dist.mean * 0.18215``. A reference of another aspect ratio than the output is
  **cover-resized and center-cropped** (the largest centered crop of the output's aspect ratio is resized in one
  LANCZOS pass); for the same aspect ratio that is exactly the official plain resize.
* Pose frames: RGB in [0, 1] at the output size (diffusers ``VaeImageProcessor(do_normalize=False)``: LANCZOS,
  ``/255``), converted one context window at a time so memory does not grow with the video length.
* Masks: the official pyramid (:mod:`mmgt_core.masks`) per latent level, flattened to ``(T, h_k * w_k)``, and the
  three branch masks ``full`` (attn2_0), ``face`` (attn2_1), ``lips`` (attn2_2; the official ``body_mask``)
  composed in one of three modes:

  =========== ============================= ============ =====
  mode        full                          face         lips
  =========== ============================= ============ =====
  released    1 + lips (default; Q10)       face+hands   lips
  paper       1 - (face+hands) (background) face+hands   lips
  training    hands                         face+hands   lips
  =========== ============================= ============ =====
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmgt_core.constants import SIZE_MULTIPLE
from mmgt_core.errors import InputError

CLIP_INPUT_SIZE = 224
MASK_MODES = ("released", "paper", "training")

ImageLike = Image.Image | torch.Tensor | np.ndarray
"""A PIL image, or an (H, W, 3) array/tensor: uint8 0..255 or float 0..1 (ComfyUI IMAGE frames)."""


@dataclass
class BranchMasks:
    """MM-HAA masks per latent level (level k: ``(T, h_k * w_k)`` float32), in branch order full/face/lips."""

    full: list[torch.Tensor]
    face: list[torch.Tensor]
    lips: list[torch.Tensor]

    @property
    def frames(self) -> int:
        """Number of frames the masks cover."""
        return int(self.full[0].shape[0])

    def select(self, frames: torch.Tensor) -> BranchMasks:
        """The masks of the given frame indices (one context window)."""
        return BranchMasks(*([level[frames] for level in levels] for levels in (self.full, self.face, self.lips)))


def check_output_size(width: int, height: int) -> None:
    """Raise InputError unless both sides are positive multiples of ``SIZE_MULTIPLE`` (64; any aspect ratio)."""
    if width <= 0 or height <= 0 or width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        raise InputError(
            "width/height",
            f"{width}x{height} is not supported: both sides must be multiples of {SIZE_MULTIPLE}.",
            f"use e.g. {max(SIZE_MULTIPLE, round(width / SIZE_MULTIPLE) * SIZE_MULTIPLE)}x"
            f"{max(SIZE_MULTIPLE, round(height / SIZE_MULTIPLE) * SIZE_MULTIPLE)}.",
        )


def to_pil(image: ImageLike) -> Image.Image:
    """A PIL RGB image from PIL / uint8 / float [0, 1] (H, W, 3) input (floats are rounded to 0..255)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise InputError("image", f"expected an (H, W, 3) image, got shape {tuple(array.shape)}",
                         "pass a single RGB image.")
    if array.dtype != np.uint8:
        array = np.clip(np.round(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]))


def cover_box(src_w: float, src_h: float, width: int, height: int) -> tuple[float, float, float, float]:
    """``(left, top, crop_w, crop_h)``: the largest centred crop of a ``src_w x src_h`` frame with the aspect ratio
    of ``width x height`` (the whole frame when the ratios agree). Resizing it to the output is a cover resize."""
    if src_w * height > src_h * width:  # source is wider: crop the sides
        crop_w, crop_h = src_h * width / height, float(src_h)
    else:
        crop_w, crop_h = float(src_w), src_w * height / width
    return (src_w - crop_w) / 2, (src_h - crop_h) / 2, crop_w, crop_h


def cover_points(points: Any, src_w: float, src_h: float, width: int, height: int) -> Any:
    """Pixel points (..., 2+) of a ``src_w x src_h`` frame moved in place onto its ``width x height`` cover resize
    (numpy array or tensor; further columns such as scores are kept); returns ``points``."""
    left, top, crop_w, crop_h = cover_box(src_w, src_h, width, height)
    points[..., 0] = (points[..., 0] - left) * (width / crop_w)
    points[..., 1] = (points[..., 1] - top) * (height / crop_h)
    return points


def cover_resize(image: Image.Image, width: int, height: int, resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """Resize to ``width x height`` keeping the aspect ratio: the centered crop of that aspect, one resize."""
    if image.size == (width, height):
        return image.copy()
    left, top, crop_w, crop_h = cover_box(*image.size, width, height)
    return image.resize((width, height), resample=resample, box=(left, top, left + crop_w, top + crop_h))


# ---------------------------------------------------------------------------------------------------------------
# CLIP image embedding


def load_clip_image_encoder(model_dir: str | Path, device: torch.device | str = "cpu",
                            dtype: torch.dtype = torch.float32) -> nn.Module:
    """A local ``CLIPVisionModelWithProjection`` folder (e.g. ``sd-image-variations-diffusers/image_encoder``)."""
    from transformers import CLIPVisionModelWithProjection

    from mmgt_core.pretrained import load_pretrained

    model = load_pretrained(CLIPVisionModelWithProjection, model_dir, "CLIP image encoder", kind="image_encoder")
    return model.to(device=device, dtype=dtype).eval()


def clip_pixel_values(image: ImageLike) -> torch.Tensor:
    """Official CLIP input (1, 3, 224, 224): PIL bicubic resize to 224x224, then CLIPImageProcessor defaults."""
    from mmgt_core.quiet import quiet_loading

    resized = to_pil(image).resize((CLIP_INPUT_SIZE, CLIP_INPUT_SIZE), resample=Image.Resampling.BICUBIC)
    with quiet_loading():  # transformers 5 without torchvision announces its PIL fallback (the official path is PIL)
        from transformers import CLIPImageProcessor

        processor = CLIPImageProcessor()
    return processor.preprocess(resized, return_tensors="pt").pixel_values


def clip_image_embeds(encoder: nn.Module | Callable[[torch.Tensor], Any], image: ImageLike) -> torch.Tensor:
    """``image_embeds`` (1, D) float32 of the reference image, from a loaded CLIP vision model or callable.

    ``encoder`` is a ``CLIPVisionModelWithProjection`` or any callable mapping pixel values (1, 3, 224, 224) to
    an object with ``image_embeds`` or to the (1, D) tensor itself (e.g. a host's CLIP vision wrapper).
    """
    pixels = clip_pixel_values(image)
    if isinstance(encoder, nn.Module):
        parameter = next(encoder.parameters())
        pixels = pixels.to(device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        output = encoder(pixels)
    embeds = getattr(output, "image_embeds", output)
    if isinstance(embeds, (tuple, list)):
        embeds = embeds[0]
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2:
        raise InputError("clip_vision", "the CLIP vision model did not return (1, D) image embeddings",
                         "use a CLIP vision model with a projection head (ViT-L/14 from sd-image-variations).")
    return embeds.float().cpu()


# ---------------------------------------------------------------------------------------------------------------
# Reference image -> VAE latent


def reference_pixels(image: ImageLike, width: int, height: int) -> torch.Tensor:
    """The VAE input (1, 3, H, W) in [-1, 1]: cover-resize (LANCZOS) to the output size."""
    check_output_size(width, height)
    resized = cover_resize(to_pil(image), width, height)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None] * 2.0 - 1.0


def reference_latent(vae: nn.Module, image: ImageLike, width: int, height: int) -> torch.Tensor:
    """``vae.encode(pixels).latent_dist.mean`` x the VAE's scale (0.18215) -> (1, 4, H/8, W/8) in its dtype."""
    from mmgt_core.video.vae_codec import encode_images

    return encode_images(vae, reference_pixels(image, width, height))


# ---------------------------------------------------------------------------------------------------------------
# Pose frames


def check_pose_frames(frames: torch.Tensor | np.ndarray) -> None:
    """Raise InputError unless ``frames`` is a non-empty (T, H, W, 3) stack."""
    shape = tuple(frames.shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[0] == 0:
        raise InputError("pose_frames", f"expected pose images as (frames, H, W, 3), got {shape}",
                         "pass the rendered pose video (one RGB image per frame).")


def pose_window(frames: torch.Tensor | np.ndarray, indices: torch.Tensor | Sequence[int], width: int,
                height: int) -> torch.Tensor:
    """Pose frames ``indices`` as the PoseGuider input (1, 3, f, H, W) float32 in [0, 1].

    Frames already at the output size are only converted (uint8 /255, floats as given); others are
    cover-resized with LANCZOS through uint8, like ``VaeImageProcessor(do_normalize=False)`` on PIL frames.
    """
    picked = [frames[int(index)] for index in indices]
    if all(tuple(frame.shape[:2]) == (height, width) for frame in picked):  # one vectorised conversion
        stacked = torch.stack([torch.as_tensor(np.asarray(f)) if not isinstance(f, torch.Tensor) else f.detach().cpu()
                               for f in picked])
        channels_first = stacked.permute(3, 0, 1, 2).contiguous()
        if channels_first.dtype == torch.uint8:
            return (channels_first.float() / 255.0)[None]
        return channels_first.float().clamp(0, 1)[None]
    tensors = [_pose_frame(frame, width, height) for frame in picked]
    return torch.stack(tensors, dim=1)[None]


def _pose_frame(frame: torch.Tensor | np.ndarray, width: int, height: int) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(frame)) if not isinstance(frame, torch.Tensor) else frame.detach().cpu()
    if tuple(tensor.shape[:2]) == (height, width):
        values = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float().clamp(0, 1)
        return values.permute(2, 0, 1)
    resized = np.asarray(cover_resize(to_pil(tensor), width, height), dtype=np.float32) / 255.0
    return torch.from_numpy(resized).permute(2, 0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Masks


def compose_branch_masks(face_hands: Sequence[torch.Tensor], lips: Sequence[torch.Tensor],
                         hands: Optional[Sequence[torch.Tensor]] = None, mode: str = "released") -> BranchMasks:
    """Branch masks from per-level pyramids (each level (T, h, w) or (T, h*w)) in the chosen mode."""
    if mode not in MASK_MODES:
        raise InputError("mask_mode", f"unknown mode '{mode}'", f"use one of {MASK_MODES}.")
    if mode == "training" and hands is None:
        raise InputError("hands_mask", "mask mode 'training' uses the hands mask as the full mask, but none was given",
                         "connect a hands mask or use mask mode 'released'.")
    face = [_flat(level) for level in face_hands]
    lips = [_flat(level) for level in lips]
    if mode == "released":
        full = [1.0 + level for level in lips]
    elif mode == "paper":
        full = [(1.0 - level).clamp(0.0, 1.0) for level in face]
    else:
        full = [_flat(level) for level in hands]
    return BranchMasks(full=full, face=face, lips=lips)


def branch_masks_from_regions(face_hands: torch.Tensor, lips: torch.Tensor, hands: Optional[torch.Tensor],
                              width: int, height: int, mode: str = "released") -> BranchMasks:
    """Branch masks from (T, H, W) region masks in [0, 1] (or uint8), via the official blur + level pyramid."""
    from mmgt_core import masks as motion

    check_output_size(width, height)
    _check_mask("face_hands_mask", face_hands)
    _check_mask("lips_mask", lips, frames=face_hands.shape[0])
    levels_face = motion.mask_pyramid(cover_crop_mask(face_hands, width, height), motion.FACE_BLUR_KERNEL,
                                      width, height)
    levels_lips = motion.mask_pyramid(cover_crop_mask(lips, width, height), motion.LIPS_BLUR_KERNEL, width, height)
    levels_hands = None
    if hands is not None:
        _check_mask("hands_mask", hands, frames=face_hands.shape[0])
        levels_hands = motion.mask_pyramid(cover_crop_mask(hands, width, height), motion.HANDS_BLUR_KERNEL,
                                           width, height)
    return compose_branch_masks(levels_face, levels_lips, levels_hands, mode)


def cover_crop_mask(mask: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Center-crop (T, H, W) masks to the output aspect ratio (the pose frames get the same cover crop)."""
    mask_h, mask_w = int(mask.shape[1]), int(mask.shape[2])
    _, _, crop_w, crop_h = cover_box(mask_w, mask_h, width, height)
    keep_w, keep_h = round(crop_w), round(crop_h)
    left, top = (mask_w - keep_w) // 2, (mask_h - keep_h) // 2
    return mask[:, top:top + keep_h, left:left + keep_w]


def zero_branch_masks(frames: int, width: int, height: int, mode: str = "released") -> BranchMasks:
    """Masks for a run without motion masks: every region empty (released full mask = 1)."""
    from mmgt_core.masks import latent_level_sizes

    check_output_size(width, height)
    levels = [torch.zeros(frames, h * w) for h, w in latent_level_sizes(width, height)]
    return compose_branch_masks(levels, levels, levels, "released" if mode == "training" else mode)


def _flat(level: torch.Tensor) -> torch.Tensor:
    return level.reshape(level.shape[0], -1).float()


def _check_mask(name: str, mask: torch.Tensor, frames: Optional[int] = None) -> None:
    if mask.ndim != 3:
        raise InputError(name, f"expected (frames, H, W), got {tuple(mask.shape)}", "pass one mask per frame.")
    if frames is not None and mask.shape[0] != frames:
        raise InputError(name, f"has {mask.shape[0]} frames but the face+hands mask has {frames}",
                         "generate all masks from the same pose sequence.")


# ---------------------------------------------------------------------------------------------------------------
# Conditions drawn on demand, one context window at a time


def keypoints_at_output(sequence: Any, width: int, height: int) -> Any:
    """The keypoints moved from their canvas onto the output frame with the reference image's cover crop.

    The reference image is cover-resized (centred crop of the output aspect, one resize) to ``width x height``;
    the same map applied to the keypoints keeps them on the person, so pose frames and masks can be drawn
    straight at the output size instead of at the (possibly huge) reference image size.
    """
    from mmgt_core.keypoints import PoseSequence

    check_output_size(width, height)
    if (sequence.width, sequence.height) == (width, height):
        return sequence
    points = cover_points(sequence.keypoints.float().clone(), sequence.width, sequence.height, width, height)
    return PoseSequence(points, width, height, sequence.fps, sequence.speech_weights)


class ImagePoseFrames:
    """A pose video given as images (T, H, W, 3); each window is converted (and resized) when it is needed."""

    def __init__(self, images: torch.Tensor | np.ndarray) -> None:
        check_pose_frames(images)
        self.images = images

    @property
    def frames(self) -> int:
        return int(self.images.shape[0])

    def window(self, indices: torch.Tensor | Sequence[int], width: int, height: int) -> torch.Tensor:
        """PoseGuider input (1, 3, f, H, W) float32 in [0, 1] for frames ``indices``."""
        return pose_window(self.images, indices, width, height)


class KeypointPoseFrames:
    """Pose frames drawn from keypoints at the output size, one window at a time (never the whole video)."""

    def __init__(self, sequence: Any, mask_legs: bool = True) -> None:
        self.sequence = sequence
        self.mask_legs = mask_legs

    @property
    def frames(self) -> int:
        return int(self.sequence.num_frames)

    def draw(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Drawn frames (f, H, W, 3) uint8 on the sequence's canvas (legs hidden per window, no full copy)."""
        from mmgt_core.keypoints import mask_leg_pixels
        from mmgt_core.render import draw_pose_frame

        points = self.sequence.keypoints[torch.as_tensor(indices, dtype=torch.long)]
        points = (mask_leg_pixels(points) if self.mask_legs else points).float().numpy()
        width, height = self.sequence.width, self.sequence.height
        return torch.from_numpy(np.stack([draw_pose_frame(frame, width, height) for frame in points]))

    def window(self, indices: torch.Tensor | Sequence[int], width: int, height: int) -> torch.Tensor:
        """PoseGuider input (1, 3, f, H, W) float32 in [0, 1]: frames drawn now (resized if off the output size)."""
        drawn = self.draw(indices)
        return pose_window(drawn, range(drawn.shape[0]), width, height)


class KeypointBranchMasks:
    """MM-HAA branch masks computed from keypoints for the frames a window asks for (same numbers as whole).

    With speech weights on the sequence (the silence gate), each frame's face+hands and lips masks are scaled by
    its weight, so the face and lip audio branches fade out in pauses (released mode: full = 1 + weight * lips).
    """

    def __init__(self, sequence: Any, mode: str = "released") -> None:
        from mmgt_core.masks import latent_level_sizes

        if mode not in MASK_MODES:
            raise InputError("mask_mode", f"unknown mode '{mode}'", f"use one of {MASK_MODES}.")
        latent_level_sizes(sequence.width, sequence.height)  # the canvas must tile into the latent levels
        self.sequence = sequence
        self.mode = mode

    @property
    def frames(self) -> int:
        return int(self.sequence.num_frames)

    def select(self, frames: torch.Tensor | Sequence[int]) -> BranchMasks:
        """The branch masks of the given frame indices (one context window)."""
        from mmgt_core.masks import keypoint_mask_pyramids

        window = self.sequence.frames(torch.as_tensor(frames, dtype=torch.long))
        pyramids = keypoint_mask_pyramids(window)
        face_hands, lips = pyramids.face_hands, pyramids.lips
        if window.speech_weights is not None:  # the silence gate: face and lip audio attention fade in pauses
            weights = window.speech_weights.float()[:, None, None]
            face_hands = [level * weights for level in face_hands]
            lips = [level * weights for level in lips]
        return compose_branch_masks(face_hands, lips, pyramids.hands, self.mode)

    def whole(self) -> BranchMasks:
        """Every frame at once (for short clips and tests)."""
        return self.select(torch.arange(self.frames))
