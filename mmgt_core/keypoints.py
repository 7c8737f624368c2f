"""The 134-point whole-body keypoint layout MMGT uses, its official normalisation, and POSE_KEYPOINT conversion.

Layout (0-based keypoint index; the official 402-vector is ``[x0, y0, s0, x1, y1, s1, ...]``):

* 0–17   OpenPose body-18 (0 nose, 1 neck, 2 R-shoulder, 3 R-elbow, 4 R-wrist, 5 L-shoulder, 6 L-elbow,
         7 L-wrist, 8 R-hip, 9 R-knee, 10 R-ankle, 11 L-hip, 12 L-knee, 13 L-ankle, 14 R-eye, 15 L-eye,
         16 R-ear, 17 L-ear)
* 18–23  six foot points
* 24–91  68 face landmarks (iBUG-68 order); 72–91 are the 20 mouth points
* 92–112 left hand (21, OpenPose hand order); 113–133 right hand (21)

Coordinates are pixels on a declared canvas. The official code works in a 512×512 pixel space and normalises
all 402 values (scores included) with ``x/500 − 0.6``. For another canvas we map it onto that space by scaling
its short side to 512 and centring it ("cover" rule): a 512×512 canvas maps to itself, and the person keeps the
scale the model was trained on. Points outside the central square land outside [0, 512], which the official
range [−200, 800] px still covers for aspect ratios up to about 2:1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .constants import KEYPOINT_SCORE_THRESHOLD, VIDEO_FPS
from .errors import InputError

NUM_KEYPOINTS = 134
FEATURE_DIM = NUM_KEYPOINTS * 3
OFFICIAL_CANVAS = 512

BODY = range(0, 18)
FEET = range(18, 24)
FACE = range(24, 92)
LIPS = range(72, 92)
LEFT_HAND = range(92, 113)
RIGHT_HAND = range(113, 134)
HANDS = range(92, 134)
LEGS = (9, 10, 12, 13)

_NORM_LOW = -200.0
_NORM_HIGH = 800.0
FINITE_CHECK_ELEMENTS = 1 << 18
"""Values per block of :func:`all_finite` (1 MiB of float32): bounds its temporaries whatever the length."""


@dataclass
class PoseSequence:
    """A keypoint sequence: ``keypoints`` (T, 134, 3) float32 pixel x, y and score on a ``width``×``height`` canvas."""

    keypoints: torch.Tensor
    width: int
    height: int
    fps: float = VIDEO_FPS
    speech_weights: torch.Tensor | None = None
    """(T,) in [0, 1] or None: how strongly MM-HAA's face and lip audio attention acts on each frame (the silence
    gate of MMGT Motion Controls fades it in pauses); None = fully (the official behaviour). Kept while the frame
    count stays; operations that change the frames drop it."""

    def __post_init__(self) -> None:
        validate_keypoints(self.keypoints, "keypoints")
        validate_canvas(self.width, self.height)
        if not self.fps > 0:
            raise InputError("fps", f"must be positive, got {self.fps}.", "Use the video frame rate, e.g. 25.")
        self.fps = float(self.fps)
        if self.speech_weights is not None and tuple(self.speech_weights.shape) != (self.num_frames,):
            raise InputError("speech_weights", f"shape {tuple(self.speech_weights.shape)} does not match "
                             f"{self.num_frames} frames.", "Pass one weight per frame.")

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[0])

    def with_keypoints(self, keypoints: torch.Tensor) -> PoseSequence:
        """A copy with other keypoints on the same canvas and frame rate (speech weights kept if the count is)."""
        same_frames = keypoints.shape[0] == self.num_frames
        return PoseSequence(keypoints, self.width, self.height, self.fps,
                            self.speech_weights if same_frames else None)

    def frames(self, indices: torch.Tensor) -> PoseSequence:
        """The sequence of the given frame indices (one context window), speech weights included."""
        weights = None if self.speech_weights is None else self.speech_weights[indices]
        return PoseSequence(self.keypoints[indices], self.width, self.height, self.fps, weights)


def validate_canvas(width: int, height: int, name: str = "canvas") -> None:
    """Reject canvases that cannot hold a picture."""
    if int(width) < 1 or int(height) < 1:
        raise InputError(name, f"size {width}×{height} px is empty.", "Use a canvas of at least 1×1 pixel.")


def validate_keypoints(keypoints: torch.Tensor, name: str = "keypoints", allow_empty: bool = False) -> None:
    """Check the (T, 134, 3) shape, a floating dtype, finite values and (unless allowed) at least one frame."""
    if not isinstance(keypoints, torch.Tensor):
        raise InputError(name, f"expected a torch.Tensor, got {type(keypoints).__name__}.")
    if keypoints.ndim != 3 or tuple(keypoints.shape[1:]) != (NUM_KEYPOINTS, 3):
        raise InputError(
            name,
            f"expected shape (frames, 134, 3), got {tuple(keypoints.shape)}.",
            "Pass whole-body keypoints in the 134-point DWPose layout (x, y, score per point).",
        )
    if not keypoints.is_floating_point():
        raise InputError(name, f"expected a floating-point tensor, got {keypoints.dtype}.")
    if keypoints.shape[0] == 0 and not allow_empty:
        raise InputError(name, "the sequence has no frames.", "Give at least one frame of keypoints.")
    if not all_finite(keypoints):
        bad_frames = (~torch.isfinite(keypoints)).flatten(1).any(1).nonzero().flatten().tolist()
        raise InputError(
            name,
            f"contains NaN or infinite values in frames {bad_frames[:10]}.",
            "Mark missing points with score 0 instead of NaN coordinates.",
        )


def all_finite(values: torch.Tensor, block_elements: int = FINITE_CHECK_ELEMENTS) -> bool:
    """True when no value is NaN or infinite; checked a block of leading rows (frames) at a time, because
    ``torch.isfinite`` makes an abs copy and three boolean masks the size of what it checks."""
    rows = values.reshape(1) if values.ndim == 0 else values
    row_elements = max(1, rows.numel() // max(1, rows.shape[0]))
    return all(bool(torch.isfinite(block).all()) for block in rows.split(max(1, block_elements // row_elements)))


def normalize(values: torch.Tensor) -> torch.Tensor:
    """Official normalisation of every value (coordinates and scores): ``(x + 200) / 1000 · 2 − 1``."""
    return ((values - _NORM_LOW) / (_NORM_HIGH - _NORM_LOW)) * 2 - 1


def denormalize(values: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``(y + 1) / 2 · 1000 − 200``, as a new tensor."""
    return denormalize_(values.to(torch.result_type(values, 1.0), copy=True))


def denormalize_(values: torch.Tensor) -> torch.Tensor:
    """:func:`denormalize` in place on a floating-point tensor (the same operations, so the same bits); returns it."""
    return values.add_(1).div_(2).mul_(_NORM_HIGH - _NORM_LOW).add_(_NORM_LOW)


def mask_leg_normalized(feature: torch.Tensor) -> torch.Tensor:
    """Official ``mask_leg`` on (…, 402) features: knees and ankles (9, 10, 12, 13) set to 0 in all 3 channels."""
    out = feature.clone()
    for k in LEGS:
        out[..., 3 * k : 3 * k + 3] = 0
    return out


def mask_leg_pixels(keypoints: torch.Tensor) -> torch.Tensor:
    """Leg masking in pixel space (what the official drawing does): points 9, 10, 12, 13 become (0, 0, 0)."""
    out = keypoints.clone()
    out[..., list(LEGS), :] = 0
    return out


def to_official_pixels(keypoints: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Canvas pixels → official 512-space pixels (identity for 512×512)."""
    return _cover_map_(keypoints.clone(), width, height, lambda value, scale, offset: value.mul_(scale).add_(offset))


def from_official_pixels(keypoints: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Official 512-space pixels → canvas pixels (inverse of :func:`to_official_pixels`)."""
    return from_official_pixels_(keypoints.clone(), width, height)


def from_official_pixels_(keypoints: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """:func:`from_official_pixels` in place (floating-point ``keypoints``); returns them."""
    return _cover_map_(keypoints, width, height, lambda value, scale, offset: value.sub_(offset).div_(scale))


def _cover_map_(keypoints: torch.Tensor, width: int, height: int,
                move_: Callable[[torch.Tensor, float, float], torch.Tensor]) -> torch.Tensor:
    """Apply ``move_(coordinate, scale, offset)`` in place to x and y of ``keypoints`` (returned), for the cover
    rule that maps the canvas onto the official 512 space (short side → 512, centred); nothing for 512×512."""
    if width == OFFICIAL_CANVAS and height == OFFICIAL_CANVAS:
        return keypoints
    scale = OFFICIAL_CANVAS / min(width, height)
    for axis, size in ((0, width), (1, height)):
        move_(keypoints[..., axis], scale, (OFFICIAL_CANVAS - size * scale) / 2)
    return keypoints


def to_official_feature(sequence: PoseSequence) -> torch.Tensor:
    """A pose sequence as the official normalised (T, 402) feature the SMGA consumes."""
    pixels = to_official_pixels(sequence.keypoints.float(), sequence.width, sequence.height)
    return normalize(pixels.reshape(pixels.shape[0], FEATURE_DIM))


def from_official_feature(feature: torch.Tensor, width: int, height: int, fps: float = VIDEO_FPS) -> PoseSequence:
    """Official normalised (T, 402) features → a pose sequence on a ``width``×``height`` canvas.

    The keypoints are the one full-length tensor made: a float32 copy of ``feature`` converted in place.
    """
    if feature.ndim != 2 or feature.shape[1] != FEATURE_DIM:
        raise InputError("feature", f"expected shape (frames, 402), got {tuple(feature.shape)}.")
    keypoints = torch.empty(feature.shape[0], NUM_KEYPOINTS, 3, dtype=torch.float32, device=feature.device)
    denormalize_(keypoints.view(feature.shape).copy_(feature))
    return PoseSequence(from_official_pixels_(keypoints, width, height), width, height, fps)


# ---------------------------------------------------------------------------------------------------------------
# ComfyUI POSE_KEYPOINT, in its two flavours
# ---------------------------------------------------------------------------------------------------------------
#
# Per frame: {"people": [person, ...], "canvas_width": W, "canvas_height": H}. Two producers write different people:
#
# * "openpose" (comfyui_controlnet_aux's DWPose/OpenPose nodes): "pose_keypoints_2d" 18×3, "face_keypoints_2d"
#   68×3 or 70×3 (68, 69 = pupils), "hand_left_keypoints_2d" = points 92–112, "hand_right_keypoints_2d" =
#   113–133. No feet: they become score 0 going in and are dropped going out. Invisible points are (0, 0, 0);
#   coordinates are pixels or normalised to [0, 1].
# * "sdpose" (ComfyUI core's SDPose Keypoint Extractor, comfy_extras/nodes_sdpose.py): the same, plus
#   "foot_keypoints_2d" 6×3 (points 18–23); the face has 70 points whose last two are copies of the body's eyes
#   (14, 15); every point keeps its raw score; pixels. Core names the hands the other way round:
#   "hand_right_keypoints_2d" holds points 92–112 and "hand_left_keypoints_2d" 113–133. We follow its indices,
#   not its names, so that core's drawing and ours put each hand in the same place.
#
# The flavour of an input is read from the data: any person with a "foot_keypoints_2d" entry makes it "sdpose".

POSE_KEYPOINT_FLAVOURS: tuple[str, ...] = ("openpose", "sdpose")
_BODY_KEY = "pose_keypoints_2d"
_FACE_KEY = "face_keypoints_2d"
_FEET_KEY = "foot_keypoints_2d"
_PART_RANGES_BY_FLAVOUR: dict[str, dict[str, range]] = {
    "openpose": {_BODY_KEY: BODY, _FACE_KEY: FACE, "hand_left_keypoints_2d": LEFT_HAND,
                 "hand_right_keypoints_2d": RIGHT_HAND},
    "sdpose": {_BODY_KEY: BODY, _FEET_KEY: FEET, _FACE_KEY: FACE, "hand_right_keypoints_2d": LEFT_HAND,
               "hand_left_keypoints_2d": RIGHT_HAND},
}
_ALL_KEYS = (_BODY_KEY, _FEET_KEY, _FACE_KEY, "hand_left_keypoints_2d", "hand_right_keypoints_2d")


def _part_points(values: Sequence[float] | None, count: int, part: str) -> torch.Tensor:
    """Parse one flat [x, y, c, ...] list into (count, 3); missing parts become zeros."""
    if not values:
        return torch.zeros(count, 3)
    points = torch.tensor([float(v) for v in values], dtype=torch.float32)
    if points.numel() % 3:
        raise InputError("pose_keypoint", f"'{part}' has {points.numel()} numbers, not a multiple of 3.")
    points = points.reshape(-1, 3)
    if part == _FACE_KEY and points.shape[0] == 70:
        points = points[:68]  # OpenPose pupils / SDPose eye copies (68, 69) have no place in the 134 layout
    if points.shape[0] != count:
        raise InputError("pose_keypoint", f"'{part}' has {points.shape[0]} points, expected {count}.")
    return points


def pose_keypoint_flavour(pose_keypoint: list[dict[str, Any]] | dict[str, Any]) -> str:
    """"sdpose" when any person carries "foot_keypoints_2d" (ComfyUI core's form), else "openpose"."""
    frames = [pose_keypoint] if isinstance(pose_keypoint, dict) else list(pose_keypoint or [])
    for frame in frames:
        for person in frame.get("people") or []:
            if isinstance(person, dict) and _FEET_KEY in person:
                return "sdpose"
    return "openpose"


def _person_to_points(person: dict[str, Any], flavour: str) -> torch.Tensor:
    points = torch.zeros(NUM_KEYPOINTS, 3)
    for part, index_range in _PART_RANGES_BY_FLAVOUR[flavour].items():
        points[index_range.start : index_range.stop] = _part_points(person.get(part), len(index_range), part)
    return points


def _looks_normalized(frames: list[torch.Tensor]) -> bool:
    """True when every visible coordinate lies in [0, 1] (normalised OpenPose JSON)."""
    coords = torch.cat([f[f[:, 2] > 0][:, :2] for f in frames])
    return coords.numel() == 0 or bool(coords.abs().max() <= 1.0 + 1e-6)


def from_pose_keypoint(
    pose_keypoint: list[dict[str, Any]] | dict[str, Any], fps: float = VIDEO_FPS, width: int | None = None,
    height: int | None = None,
) -> tuple[PoseSequence, list[str]]:
    """Convert ComfyUI ``POSE_KEYPOINT`` frames (either flavour, detected) into a :class:`PoseSequence`.

    Several people: the largest (bounding box of its visible points) is taken in the first frame with people, and
    the same person is then followed by overlap (a newcomer does not take over). A frame without that person
    repeats the previous frame's pose (or the first found pose at the start). Returns the sequence and notes
    saying which flavour came in and what was chosen or filled in.
    """
    from .pose_detect.track import PersonTracker, keypoint_box  # here: pose_detect imports this module

    frames_in = [pose_keypoint] if isinstance(pose_keypoint, dict) else list(pose_keypoint or [])
    if not frames_in:
        raise InputError("pose_keypoint", "is empty (no frames).", "Connect a DWPose/OpenPose estimator output.")
    flavour = pose_keypoint_flavour(frames_in)
    notes: list[str] = [f"POSE_KEYPOINT flavour: {flavour}"]
    canvas_w = width or int(frames_in[0].get("canvas_width") or 0)
    canvas_h = height or int(frames_in[0].get("canvas_height") or 0)
    tracker = PersonTracker()
    box_threshold = KEYPOINT_SCORE_THRESHOLD if flavour == "sdpose" else 0.0  # SDPose keeps raw low scores
    chosen: list[torch.Tensor | None] = []
    multi_frames: list[int] = []
    for index, frame in enumerate(frames_in):
        people = [p for p in frame.get("people") or [] if isinstance(p, dict) and any(p.get(k) for k in _ALL_KEYS)]
        candidates = [_person_to_points(p, flavour) for p in people]
        if len(candidates) > 1:
            multi_frames.append(index)
        boxes = np.array([keypoint_box(c.numpy(), threshold=box_threshold) for c in candidates]).reshape(-1, 4)
        pick = tracker.choose(boxes)
        chosen.append(None if pick is None else candidates[pick])
    empty_frames = [i for i, c in enumerate(chosen) if c is None]
    if len(empty_frames) == len(frames_in):
        raise InputError("pose_keypoint", "no person was found in any frame.", "Use an image or video with a person.")
    first_found = next(c for c in chosen if c is not None)
    frames: list[torch.Tensor] = []
    for points in chosen:
        frames.append((frames[-1] if frames else first_found).clone() if points is None else points)
    if empty_frames:
        notes.append(f"{len(empty_frames)} frame(s) had no person (or not the followed one) and repeat the pose "
                     f"before: {empty_frames[:10]}")
    if multi_frames:
        notes.append(f"{len(multi_frames)} frame(s) had several people; the largest at the start was followed: "
                     f"{multi_frames[:10]}")
    keypoints = torch.stack(frames)
    if _looks_normalized(frames):
        if not (canvas_w and canvas_h):
            raise InputError("pose_keypoint", "has normalised coordinates but no canvas size.",
                             "Set canvas_width/canvas_height, or give the width and height.")
        keypoints[..., 0] *= canvas_w
        keypoints[..., 1] *= canvas_h
        notes.append("coordinates were normalised to [0, 1]; scaled to the canvas")
    elif not (canvas_w and canvas_h):
        raise InputError("pose_keypoint", "has no canvas_width/canvas_height.", "Give the width and height.")
    if flavour == "openpose":
        notes.append("feet (points 18–23) are not in OpenPose POSE_KEYPOINT and were set invisible")
    return PoseSequence(keypoints, canvas_w, canvas_h, fps), notes


def _flat(points: torch.Tensor) -> list[float]:
    return [round(float(v), 4) for v in points.reshape(-1)]


def _eye_centres(face: torch.Tensor) -> torch.Tensor:
    """OpenPose pupils (2, 3): the mean of each eye's visible contour points (iBUG 36–41, 42–47)."""
    pupils = torch.zeros(2, 3)
    for row, eye in enumerate((face[36:42], face[42:48])):
        seen = eye[eye[:, 2] > 0]
        if seen.shape[0]:
            pupils[row] = seen.mean(0)
    return pupils


def to_pose_keypoint(sequence: PoseSequence, normalized: bool = False, flavour: str = "openpose"
                     ) -> list[dict[str, Any]]:
    """Convert a :class:`PoseSequence` into ComfyUI ``POSE_KEYPOINT`` frames (one person per frame).

    ``"openpose"``: invisible points (score < 0.3) are written as (0, 0, 0), visible ones keep their score, the two
    pupils are synthesised from the eye contours and feet are dropped; ``normalized`` writes [0, 1] coordinates.
    ``"sdpose"`` (ComfyUI core's form): pixels, feet kept, every score kept as it is.
    """
    if flavour not in POSE_KEYPOINT_FLAVOURS:
        raise InputError("flavour", f"unknown POSE_KEYPOINT flavour {flavour!r}.",
                         f"Use one of {', '.join(POSE_KEYPOINT_FLAVOURS)}.")
    if flavour == "sdpose" and normalized:
        raise InputError("normalized", "ComfyUI core's SDPose form is in pixels.",
                         "Switch 'normalized' off, or write the openpose flavour.")
    frames: list[dict[str, Any]] = []
    scale = torch.tensor([sequence.width, sequence.height, 1.0]) if normalized else torch.ones(3)
    for points in sequence.keypoints.float():
        if flavour == "openpose":
            points = points.clone()
            points[points[:, 2] < KEYPOINT_SCORE_THRESHOLD] = 0
            face = points[FACE.start : FACE.stop]
            face = torch.cat([face, _eye_centres(face)])
        else:
            face = torch.cat([points[FACE.start : FACE.stop], points[[14, 15]]])  # core appends the body's eyes
        person = {_FACE_KEY: _flat(face / scale)}
        for part, index_range in _PART_RANGES_BY_FLAVOUR[flavour].items():
            if part != _FACE_KEY:
                person[part] = _flat(points[index_range.start : index_range.stop] / scale)
        frames.append({"people": [person], "canvas_width": sequence.width, "canvas_height": sequence.height})
    return frames
