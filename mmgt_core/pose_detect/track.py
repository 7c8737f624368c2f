"""Following one person through a video: pick the largest at the start, then keep the same one by continuity.

The tracker works on person boxes (x0, y0, x1, y1), one frame at a time, so it serves both the batched DWPose
detection (boxes from YOLOX) and POSE_KEYPOINT input (boxes around each person's visible points). A second person
who walks in, even a bigger one, does not take the track: a box is only followed if it overlaps the last tracked
box or lies close to it. When nobody qualifies the frame is a gap; :func:`fill_gaps` interpolates short gaps and
refuses long ones with the frame range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..constants import KEYPOINT_SCORE_THRESHOLD
from ..errors import InputError
from .select import box_areas

MIN_IOU = 0.2  # a box overlapping the last tracked box at least this much is the same person
CENTRE_RADIUS = 0.5  # else: centre within this many box sizes of the last centre (grows with frames unseen) ...
CENTRE_RADIUS_GROWTH = 0.25  # ... by this much per frame unseen, so a person back from a short gap is found again
MAX_SIZE_RATIO = 2.0  # and a box area within this factor of the last one
DEFAULT_MAX_GAP = 12  # frames without the tracked person that are interpolated (about 0.5 s at 25 fps)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with (N, 4) boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = box_areas(box[None])[0] + box_areas(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def keypoint_box(points: np.ndarray, threshold: float = KEYPOINT_SCORE_THRESHOLD) -> np.ndarray:
    """Bounding box (4,) of a (K, 3) pose's points scored above ``threshold`` (all zeros when fewer than two)."""
    points = np.asarray(points, dtype=np.float64)
    seen = points[points[:, 2] > threshold, :2]
    if len(seen) < 2:
        return np.zeros(4)
    return np.concatenate((seen.min(0), seen.max(0)))


@dataclass
class PersonTracker:
    """Chooses, frame by frame, the box of the person followed so far (``None``: not in this frame)."""

    last_box: np.ndarray | None = None
    frames_unseen: int = 0
    switches_refused: int = field(default=0)

    def choose(self, boxes: np.ndarray) -> int | None:
        """Index into (N, 4) ``boxes`` of the tracked person, or None when that person is not there."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        areas = box_areas(boxes)
        usable = areas > 0
        if not usable.any():
            self.frames_unseen += 1
            return None
        if self.last_box is None:
            chosen = int(np.argmax(np.where(usable, areas, -1.0)))
        else:
            chosen = self._continue(boxes, areas, usable)
            if chosen is None:
                self.frames_unseen += 1
                self.switches_refused += 1
                return None
        self.last_box, self.frames_unseen = boxes[chosen], 0
        return chosen

    def _continue(self, boxes: np.ndarray, areas: np.ndarray, usable: np.ndarray) -> int | None:
        last = self.last_box
        assert last is not None
        overlaps = np.where(usable, box_iou(last, boxes), 0.0)
        if overlaps.max() >= MIN_IOU:
            return int(np.argmax(overlaps))
        last_area = max(float(box_areas(last[None])[0]), 1e-6)
        size = np.sqrt(last_area)
        centre = (last[:2] + last[2:]) / 2
        distances = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1)
        radius = size * (CENTRE_RADIUS + CENTRE_RADIUS_GROWTH * self.frames_unseen)
        ratio = areas / last_area
        near = usable & (distances <= radius) & (ratio <= MAX_SIZE_RATIO) & (ratio >= 1 / MAX_SIZE_RATIO)
        if not near.any():
            return None
        return int(np.argmin(np.where(near, distances, np.inf)))


def gap_ranges(missing: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) frame ranges where ``missing`` (T,) bool is True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], np.asarray(missing, dtype=bool), [0])).astype(np.int8)))
    return [(int(first), int(end) - 1) for first, end in zip(edges[::2], edges[1::2])]


def fill_gaps(keypoints: np.ndarray, missing: np.ndarray, max_gap: int, input_name: str = "image",
              fps: float | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Fill frames without the tracked person: linear interpolation inside, the nearest pose at either end.

    A point is interpolated only where it is visible on both sides; otherwise the nearer side's point is held.
    Any gap longer than ``max_gap`` frames raises InputError naming its frame range. Returns the filled (T, K, 3)
    array and the gap ranges that were filled.
    """
    keypoints = np.array(keypoints, dtype=np.float32, copy=True)
    missing = np.asarray(missing, dtype=bool)
    total = len(missing)
    if missing.all():
        raise InputError(input_name, f"no person was found in any of the {total} frame(s).",
                         "Use a video that shows one person's head, shoulders and arms.")
    ranges = gap_ranges(missing)
    too_long = [(a, b) for a, b in ranges if b - a + 1 > max_gap]
    if too_long:
        def describe(a: int, b: int) -> str:
            seconds = f" ({a / fps:.2f}–{(b + 1) / fps:.2f} s)" if fps else ""
            return f"frames {a}–{b}{seconds}"
        listed = ", ".join(describe(a, b) for a, b in too_long[:5])
        raise InputError(
            input_name,
            f"the tracked person is missing for longer than {max_gap} frame(s) at {listed}.",
            "Trim those frames from the video, or raise max_gap_frames to fill them by interpolation.")
    for first, last in ranges:
        before, after = first - 1, last + 1
        if before < 0:
            keypoints[first : last + 1] = keypoints[after]
            continue
        if after >= total:
            keypoints[first : last + 1] = keypoints[before]
            continue
        left, right = keypoints[before], keypoints[after]
        both = (left[:, 2] > 0) & (right[:, 2] > 0)
        for frame in range(first, last + 1):
            weight = (frame - before) / (after - before)
            nearer = left if weight <= 0.5 else right
            blended = left * (1 - weight) + right * weight
            keypoints[frame] = np.where(both[:, None], blended, nearer)
    return keypoints, ranges
