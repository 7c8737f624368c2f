"""Choosing one person among detections, and deciding whether a 134-point pose shows a person at all."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..constants import KEYPOINT_SCORE_THRESHOLD

PersonRule = Literal["largest", "first"]
PERSON_RULES: tuple[str, ...] = ("largest", "first")

# A pose counts as "a person" when at least this many body joints are confident. The neck (1) is left out because
# DWPose derives it from the shoulders, so it would double-count them.
MIN_CONFIDENT_BODY_JOINTS = 3
_BODY_JOINTS_WITHOUT_NECK = (0, *range(2, 18))


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of (N, 4) x0, y0, x1, y1 boxes; inverted boxes count as empty."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    widths = np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None)
    heights = np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)
    return widths * heights


def select_person(boxes: np.ndarray, rule: PersonRule = "largest") -> int:
    """Index of the chosen box among (N, 4) boxes in detector order (highest score first).

    ``"largest"`` takes the biggest box (ties: the higher-scored one); ``"first"`` takes the highest-scored
    detection, which is what the official MMGT code does (``whole_keypoints[:1]``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("select_person needs at least one box")
    if rule == "first":
        return 0
    if rule == "largest":
        return int(np.argmax(box_areas(boxes)))  # argmax keeps the first (higher-scored) of equal areas
    raise ValueError(f"unknown person rule {rule!r}; expected one of {PERSON_RULES}")


def count_confident_body_joints(keypoints: np.ndarray, threshold: float = KEYPOINT_SCORE_THRESHOLD) -> int:
    """How many body-18 joints (neck excluded) of a (134, 3) pose have a score above ``threshold``."""
    scores = np.asarray(keypoints)[list(_BODY_JOINTS_WITHOUT_NECK), 2]
    return int(np.count_nonzero(scores > threshold))


def looks_like_a_person(keypoints: np.ndarray, threshold: float = KEYPOINT_SCORE_THRESHOLD) -> bool:
    """True when enough body joints are confident for the pose to be worth animating."""
    return count_confident_body_joints(keypoints, threshold) >= MIN_CONFIDENT_BODY_JOINTS
