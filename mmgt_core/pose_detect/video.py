"""Video-driven mode: whole-body keypoints of one person in every frame of a video (DWPose, frame by frame).

Each frame goes through the same steps as a reference image (``dwpose.py``): detect-space resize, YOLOX person
boxes, then RTMPose on ONE box, the box of the person being followed (:class:`~.track.PersonTracker`: the largest
at the start, then the same person by overlap). Frames are processed one at a time and only their (134, 3)
result is kept, so memory does not grow with the video beyond the keypoints themselves. Frames where the person
is not found are filled by :func:`~.track.fill_gaps` (interpolation up to ``max_gap`` frames, else an error naming
the frames).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import torch

from ..keypoints import PoseSequence
from ..types import OptionalCancel, OptionalProgress
from .dwpose import assemble_openpose_134, check_image, detect_to_original, resize_for_detection
from .track import DEFAULT_MAX_GAP, PersonTracker, fill_gaps


class FramePoseEstimator(Protocol):
    """What video detection needs from a pose estimator (``DWPoseEstimator`` has it; tests pass stand-ins)."""

    def detect_people(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def estimate_pose(self, image_bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def detect_video_keypoints(
    frames: Sequence[np.ndarray] | Iterable[np.ndarray],
    estimator: FramePoseEstimator,
    fps: float,
    num_frames: int | None = None,
    max_gap: int = DEFAULT_MAX_GAP,
    progress: OptionalProgress = None,
    check_cancel: OptionalCancel = None,
) -> tuple[PoseSequence, list[str]]:
    """Keypoints (T, 134, 3) of the followed person in RGB uint8 ``frames``, at the video's own ``fps``.

    ``frames`` may be a sequence or any iterator (give ``num_frames`` for progress then). Returns the sequence, in
    the frames' pixels, and notes for the user (gaps filled, other people ignored).
    """
    total = len(frames) if num_frames is None and hasattr(frames, "__len__") else (num_frames or 0)
    tracker = PersonTracker()
    found: list[np.ndarray] = []
    missing: list[bool] = []
    crowded = 0
    size: tuple[int, int] | None = None
    for index, frame in enumerate(frames):
        if check_cancel is not None:
            check_cancel()
        image_rgb = check_image(np.asarray(frame), "image")
        frame_wh = (image_rgb.shape[1], image_rgb.shape[0])
        size = size or frame_wh
        image_bgr = resize_for_detection(np.ascontiguousarray(image_rgb[..., ::-1]))
        boxes, _ = estimator.detect_people(image_bgr)
        crowded += int(len(boxes) > 1)
        chosen = tracker.choose(boxes)
        if chosen is None:
            found.append(np.zeros((134, 3), np.float32))
            missing.append(True)
        else:
            points, scores = estimator.estimate_pose(image_bgr, np.asarray(boxes[chosen]))
            keypoints = assemble_openpose_134(points, scores)
            detect_wh = (image_bgr.shape[1], image_bgr.shape[0])
            keypoints[:, :2] = detect_to_original(keypoints[:, :2], detect_wh, frame_wh)
            found.append(keypoints.astype(np.float32))
            missing.append(False)
        if progress is not None:
            progress(index + 1, max(total, index + 1))
    if size is None:
        from ..errors import InputError

        raise InputError("image", "the video has no frames.", "Connect the images of a video (Get Video Components).")
    filled, gaps = fill_gaps(np.stack(found), np.array(missing), max_gap, input_name="image", fps=fps)
    notes = [f"{len(found)} frame(s) at {fps:g} fps; the person was found in {len(found) - sum(missing)}."]
    if gaps:
        listed = ", ".join(f"{a}–{b}" if a != b else f"{a}" for a, b in gaps[:10])
        notes.append(f"filled {sum(missing)} frame(s) without the person by interpolation: frames {listed}.")
    if crowded:
        notes.append(f"{crowded} frame(s) showed several people; the largest at the start was followed "
                     f"({tracker.switches_refused} frame(s) where only someone else was seen).")
    sequence = PoseSequence(torch.from_numpy(filled), size[0], size[1], float(fps))
    return sequence, notes
