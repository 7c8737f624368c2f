"""Motion masks (the paper's Algorithm 1) and the mask pyramid that gates MM-HAA.

Algorithm 1, per frame, exactly as the official code draws it: a point counts when its score is ≥ 0.3 and its
truncated pixel coordinates are both > 0; a region's box spans ``[min, max)`` of those points (exclusive upper
bound) and is filled when it is non-empty. Regions: the face (points 24–91), the lips (72–91) and one box per hand
(92–112, 113–133). face+hands is their union; the background is ``1 − (face+hands)``.

The official face+hands video is a uint8 *sum* of the face and hand canvases, so overlapping pixels wrap to 254.
:func:`official_face_hands_levels` keeps that quirk for the pyramid (it changes the blurred result slightly); the
masks handed to users are the clean union.

The pyramid follows ``scripts/audio2vid.py``: resize to the level-0 latent grid (64×64 for 512 px), Gaussian blur
(face 31×31, lips/hands 21×21, OpenCV's automatic sigma), per-frame min-max to 0..255, then a PIL bilinear resize
to each latent level (H/8, H/16, H/32, H/64), divided by 255. OpenCV and PIL are used for those small images so
the numbers match the official ones bit for bit; frames travel as image channels, so there is no Python loop over
pixels, and only the tiny per-level resizes loop over frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from .constants import KEYPOINT_SCORE_THRESHOLD, LATENT_LEVELS, LATENT_STRIDE
from .errors import InputError
from .keypoints import FACE, LEFT_HAND, LIPS, RIGHT_HAND, PoseSequence

FACE_BLUR_KERNEL = 31
LIPS_BLUR_KERNEL = 21
HANDS_BLUR_KERNEL = 21


def _probe_cv_max_channels() -> int:
    """The most channels the installed OpenCV's resize and GaussianBlur accept (512 in 4.x, 128 in 5.x).

    OpenCV's CV_CN_MAX is not exposed to Python, so try a 2×2 image once at import (microseconds).
    """
    for channels in (512, 256, 128, 64, 32, 16, 8, 4):
        probe = np.zeros((2, 2, channels), np.uint8)
        try:
            cv2.resize(probe, (1, 1))
            cv2.GaussianBlur(probe, (3, 3), 0)
        except cv2.error:
            continue
        return channels
    return 1


_CV_MAX_CHANNELS = _probe_cv_max_channels()  # frames travel as channels, at most this many per OpenCV call


@dataclass
class MotionMasks:
    """Per-frame region masks at the video resolution, each (T, H, W) float32 in {0, 1}."""

    face: torch.Tensor
    lips: torch.Tensor
    hands: torch.Tensor

    @property
    def face_hands(self) -> torch.Tensor:
        """The paper's V_M^{f+h}: union of the face box and the hand boxes."""
        return torch.maximum(self.face, self.hands)

    @property
    def background(self) -> torch.Tensor:
        """The paper's V_M^b = 1 − V_M^{f+h}."""
        return 1.0 - self.face_hands


def region_boxes(keypoints: torch.Tensor, indices: range) -> torch.Tensor:
    """Per-frame Algorithm-1 boxes ``(T, 4)`` int64 ``[x0, y0, x1, y1)`` of the points in ``indices``.

    An empty box (no counted point, or a degenerate one) has ``x0 >= x1`` or ``y0 >= y1``.
    """
    points = keypoints[:, indices.start : indices.stop].float()
    xs = torch.trunc(points[..., 0]).long()
    ys = torch.trunc(points[..., 1]).long()
    counted = (points[..., 2] >= KEYPOINT_SCORE_THRESHOLD) & (xs > 0) & (ys > 0)
    big = torch.iinfo(torch.long).max
    x0 = torch.where(counted, xs, big).amin(1)
    y0 = torch.where(counted, ys, big).amin(1)
    x1 = torch.where(counted, xs, 0).amax(1)
    y1 = torch.where(counted, ys, 0).amax(1)
    return torch.stack([x0, y0, x1, y1], dim=1)


def motion_masks(sequence: PoseSequence) -> MotionMasks:
    """Algorithm 1 on every frame of ``sequence`` at its canvas size."""
    def canvas(region: range) -> torch.Tensor:
        return _box_canvas(region_boxes(sequence.keypoints, region), sequence.width, sequence.height)

    return MotionMasks(face=canvas(FACE).float(), lips=canvas(LIPS).float(),
                       hands=(canvas(LEFT_HAND) | canvas(RIGHT_HAND)).float())


def official_face_hands_uint8(masks: MotionMasks) -> torch.Tensor:
    """The official face+hands canvas: uint8 sum of face and hands (overlaps wrap to 254)."""
    return (masks.face > 0.5).to(torch.uint8) * 255 + (masks.hands > 0.5).to(torch.uint8) * 255


def to_uint8(mask: torch.Tensor) -> torch.Tensor:
    """A [0, 1] float mask as 0..255 uint8 (rounded)."""
    return (mask.float().clamp(0, 1) * 255).round().to(torch.uint8)


def latent_level_sizes(width: int, height: int, levels: int = LATENT_LEVELS) -> list[tuple[int, int]]:
    """(h, w) of the latent grid at each UNet depth: H/8, H/16, H/32, H/64 (and the same for W)."""
    factor = LATENT_STRIDE * 2 ** (levels - 1)
    if width % factor or height % factor or width <= 0 or height <= 0:
        raise InputError(
            "size",
            f"{width}×{height} px cannot be split into {levels} latent levels.",
            f"Use a width and height that are multiples of {factor}.",
        )
    return [(height // (LATENT_STRIDE * 2**k), width // (LATENT_STRIDE * 2**k)) for k in range(levels)]


def _minmax_to_uint8(frames: np.ndarray) -> np.ndarray:
    """cv2.normalize(NORM_MINMAX, 0, 255) per frame; an all-constant frame becomes 0 as in OpenCV."""
    out = np.empty_like(frames)
    for index, frame in enumerate(frames):  # one cheap call per (tiny) frame keeps OpenCV's exact rounding
        out[index] = cv2.normalize(frame, None, 0, 255, cv2.NORM_MINMAX)
    return out


def _resize_blur_hwc(canvas_hwc: np.ndarray, kernel: int, level0_size: tuple[int, int]) -> np.ndarray:
    """One OpenCV call each: (H, W, C ≤ ``_CV_MAX_CHANNELS``) uint8 → resized and blurred (C, h0, w0) uint8."""
    h0, w0 = level0_size
    resized = cv2.resize(canvas_hwc, (w0, h0))
    if resized.ndim == 2:
        resized = resized[..., None]
    blurred = cv2.GaussianBlur(resized, (kernel, kernel), 0)
    return blurred[None] if blurred.ndim == 2 else blurred.transpose(2, 0, 1)


def _blur_hwc(canvas_hwc: np.ndarray, kernel: int, level0_size: tuple[int, int]) -> np.ndarray:
    """Frames as channels (H, W, C) uint8 → resized, blurred, min-max normalised (C, h0, w0) uint8.

    The channel axis goes to OpenCV in slices it accepts; both ops treat channels independently, so the
    numbers do not depend on the slicing.
    """
    channels = canvas_hwc.shape[2] if canvas_hwc.ndim == 3 else 1
    if channels <= _CV_MAX_CHANNELS:
        blurred = _resize_blur_hwc(canvas_hwc, kernel, level0_size)
    else:
        blurred = np.concatenate([
            _resize_blur_hwc(np.ascontiguousarray(canvas_hwc[..., i : i + _CV_MAX_CHANNELS]), kernel, level0_size)
            for i in range(0, channels, _CV_MAX_CHANNELS)])
    return _minmax_to_uint8(np.ascontiguousarray(blurred))


def blurred_level0(mask_uint8: torch.Tensor, kernel: int, level0_size: tuple[int, int]) -> np.ndarray:
    """Resize (INTER_LINEAR) to the level-0 grid, Gaussian blur and min-max normalise: (T, h0, w0) uint8."""
    frames = mask_uint8.cpu().numpy().astype(np.uint8, copy=False)
    chunks = [_blur_hwc(np.ascontiguousarray(frames[i : i + _CV_MAX_CHANNELS].transpose(1, 2, 0)), kernel,
                        level0_size) for i in range(0, frames.shape[0], _CV_MAX_CHANNELS)]
    return np.concatenate(chunks, axis=0)


def pyramid_from_level0(level0: np.ndarray, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """PIL-bilinear resize of each level-0 frame to every level, ``(T, h_k, w_k)`` float32 in [0, 1]."""
    levels: list[torch.Tensor] = []
    for h, w in sizes:
        if (h, w) == level0.shape[1:]:
            resized = level0
        else:
            resized = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in level0])
        levels.append(torch.from_numpy(resized.astype(np.float32) / 255.0))
    return levels


def mask_pyramid(mask: torch.Tensor, kernel: int, width: int | None = None, height: int | None = None
                 ) -> list[torch.Tensor]:
    """The official mask pyramid of a (T, H, W) mask (float in [0, 1], or uint8) at the latent levels.

    Returns 4 tensors ``(T, h_k, w_k)`` for k = 0..3 (level 0 = H/8 × W/8). ``width``/``height`` give the video
    size when the mask is at another resolution (it is resized like the official 512 → 64 step).
    """
    if mask.ndim != 3 or mask.shape[0] == 0:
        raise InputError("mask", f"expected (frames, H, W) with at least one frame, got {tuple(mask.shape)}.")
    height = height or int(mask.shape[1])
    width = width or int(mask.shape[2])
    sizes = latent_level_sizes(width, height)
    mask_uint8 = mask if mask.dtype == torch.uint8 else to_uint8(mask)
    return pyramid_from_level0(blurred_level0(mask_uint8, kernel, sizes[0]), sizes)


@dataclass
class MaskPyramids:
    """Blurred masks at the 4 latent levels for each region, as MM-HAA consumes them."""

    face_hands: list[torch.Tensor]
    lips: list[torch.Tensor]
    hands: list[torch.Tensor]


def motion_mask_pyramids(masks: MotionMasks, official_overlap: bool = True) -> MaskPyramids:
    """Pyramids of face+hands (31×31 blur), lips and hands (21×21), as the official inference prepares them.

    ``official_overlap`` keeps the official 254 value where the face and hand boxes overlap.
    """
    face_hands = official_face_hands_uint8(masks) if official_overlap else to_uint8(masks.face_hands)
    return MaskPyramids(
        face_hands=mask_pyramid(face_hands, FACE_BLUR_KERNEL),
        lips=mask_pyramid(to_uint8(masks.lips), LIPS_BLUR_KERNEL),
        hands=mask_pyramid(to_uint8(masks.hands), HANDS_BLUR_KERNEL),
    )


def _box_canvas(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``(T, 4)`` boxes as ``(T, H, W)`` bool canvases (the outer product of row and column spans)."""
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1) for i in range(4))
    valid = (x0 < x1) & (y0 < y1)
    cols, rows = torch.arange(width).view(1, width), torch.arange(height).view(1, height)
    inside_cols = (cols >= x0) & (cols < x1) & valid
    inside_rows = (rows >= y0) & (rows < y1)
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def region_canvases(keypoints: torch.Tensor, width: int, height: int, official_overlap: bool = True
                     ) -> dict[str, torch.Tensor]:
    """Algorithm-1 canvases of some frames as (T, H, W) uint8 0/255: face+hands, lips and hands.

    ``official_overlap`` keeps the official uint8 sum for face+hands (overlapping pixels wrap to 254).
    """
    face = _box_canvas(region_boxes(keypoints, FACE), width, height)
    hands = _box_canvas(region_boxes(keypoints, LEFT_HAND), width, height) | \
        _box_canvas(region_boxes(keypoints, RIGHT_HAND), width, height)
    lips = _box_canvas(region_boxes(keypoints, LIPS), width, height)
    if official_overlap:
        face_hands = face.to(torch.uint8) * 255 + hands.to(torch.uint8) * 255  # uint8 wrap: overlap -> 254
    else:
        face_hands = (face | hands).to(torch.uint8) * 255
    return {"face_hands": face_hands, "lips": lips.to(torch.uint8) * 255, "hands": hands.to(torch.uint8) * 255}


REGION_BLUR_KERNELS = {"face_hands": FACE_BLUR_KERNEL, "lips": LIPS_BLUR_KERNEL, "hands": HANDS_BLUR_KERNEL}


def keypoint_mask_pyramids(sequence: PoseSequence, official_overlap: bool = True, chunk: int = 32
                           ) -> MaskPyramids:
    """Mask pyramids straight from keypoints, ``chunk`` frames at a time, never holding full-size masks.

    The same pipeline as :func:`motion_mask_pyramids` (canvas -> :func:`mask_pyramid`), so the numbers are
    equal; memory stays at one chunk of canvases at the sequence's canvas size (draw at the output size).
    """
    width, height = sequence.width, sequence.height
    latent_level_sizes(width, height)
    parts: dict[str, list[list[torch.Tensor]]] = {name: [] for name in REGION_BLUR_KERNELS}
    for start in range(0, sequence.num_frames, max(1, chunk)):
        canvases = region_canvases(sequence.keypoints[start : start + chunk], width, height, official_overlap)
        for name, canvas in canvases.items():
            parts[name].append(mask_pyramid(canvas, REGION_BLUR_KERNELS[name]))
    return MaskPyramids(**{name: [torch.cat(levels) for levels in zip(*chunks)] for name, chunks in parts.items()})
