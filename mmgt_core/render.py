"""DWPose-style drawing of the 134 keypoints, pixel-identical to the official drawing at 512×512.

Order and rules follow the official ``draw_pose``: body limbs (filled ellipses, half-width 4) → canvas × 0.9 →
body joints (radius 4) → hands (20 coloured edges of thickness 2, then blue joints of radius 4) → face (white
dots of radius 3). A body joint is drawn when its score is > 0.3; a face or hand point when its score is ≥ 0.3
and its truncated pixel coordinates are > 0. Arithmetic is done in float32 like the official NumPy code, so the
rounding of ellipse centres and angles matches. On other canvas sizes the pen sizes scale with the short side
(they equal the official ones whenever the short side is 512).
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np
import torch

from .constants import KEYPOINT_SCORE_THRESHOLD
from .keypoints import (
    FACE,
    LEFT_HAND,
    RIGHT_HAND,
    PoseSequence,
    mask_leg_pixels,
)

# OpenPose limb pairs (1-based, as in the official table); only the first 17 are drawn.
LIMB_SEQUENCE = [
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13), (13, 14),
    (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
]
BODY_COLORS = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]
HAND_EDGES = [
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
]
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)


def _hand_edge_colors() -> list[tuple[int, int, int]]:
    """Edge i: HSV(i/20, 1, 1)·255, channel order reversed and truncated to uint8 (the official quirk)."""
    colors = []
    for i in range(len(HAND_EDGES)):
        rgb = np.array(colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0)) * 255
        colors.append(tuple(int(c) for c in rgb[::-1].astype(np.uint8)))
    return colors


HAND_EDGE_COLORS = _hand_edge_colors()


def _pen_sizes(width: int, height: int) -> dict[str, int]:
    scale = min(width, height) / 512.0
    return {name: max(1, round(size * scale)) for name, size in
            {"stick": 4, "joint": 4, "hand_line": 2, "hand_joint": 4, "face_dot": 3}.items()}


def _draw_body(canvas: np.ndarray, points: np.ndarray, pens: dict[str, int]) -> np.ndarray:
    visible = points[:18, 2] > KEYPOINT_SCORE_THRESHOLD
    for limb_index, (a, b) in enumerate(LIMB_SEQUENCE):
        a, b = a - 1, b - 1
        if not (visible[a] and visible[b]):
            continue
        xs = points[[a, b], 0]
        ys = points[[a, b], 1]
        mean_x, mean_y = np.mean(xs), np.mean(ys)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly(
            (int(mean_x), int(mean_y)), (int(length / 2), pens["stick"]), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, polygon, BODY_COLORS[limb_index])
    canvas = (canvas * 0.9).astype(np.uint8)
    for joint in range(18):
        if visible[joint]:
            center = (int(points[joint, 0]), int(points[joint, 1]))
            cv2.circle(canvas, center, pens["joint"], BODY_COLORS[joint], thickness=-1)
    return canvas


def _point_pixels(points: np.ndarray) -> np.ndarray:
    """Truncated pixel coordinates of face/hand points; points with score < 0.3 become (−1, −1) → skipped."""
    pixels = np.trunc(points[:, :2]).astype(np.int64)
    pixels[points[:, 2] < KEYPOINT_SCORE_THRESHOLD] = -1
    return pixels


def _draw_hand(canvas: np.ndarray, points: np.ndarray, pens: dict[str, int]) -> None:
    pixels = _point_pixels(points)
    for edge_index, (a, b) in enumerate(HAND_EDGES):
        (x1, y1), (x2, y2) = pixels[a], pixels[b]
        if x1 > 0 and y1 > 0 and x2 > 0 and y2 > 0:
            cv2.line(canvas, (int(x1), int(y1)), (int(x2), int(y2)), HAND_EDGE_COLORS[edge_index],
                     thickness=pens["hand_line"])
    for x, y in pixels:
        if x > 0 and y > 0:
            cv2.circle(canvas, (int(x), int(y)), pens["hand_joint"], HAND_JOINT_COLOR, thickness=-1)


def _draw_face(canvas: np.ndarray, points: np.ndarray, pens: dict[str, int]) -> None:
    for x, y in _point_pixels(points):
        if x > 0 and y > 0:
            cv2.circle(canvas, (int(x), int(y)), pens["face_dot"], FACE_COLOR, thickness=-1)


def draw_pose_frame(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Draw one frame of (134, 3) float32 pixel keypoints onto a black ``height``×``width`` RGB uint8 canvas."""
    points = np.asarray(points, dtype=np.float32)
    pens = _pen_sizes(width, height)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas = _draw_body(canvas, points, pens)
    for hand in (LEFT_HAND, RIGHT_HAND):
        _draw_hand(canvas, points[hand.start : hand.stop], pens)
    _draw_face(canvas, points[FACE.start : FACE.stop], pens)
    return canvas


def render_pose_video(sequence: PoseSequence, mask_legs: bool = True, progress=None, check_cancel=None
                      ) -> torch.Tensor:
    """Draw every frame: returns (T, H, W, 3) uint8. ``mask_legs`` hides knees and ankles as the official does."""
    keypoints = mask_leg_pixels(sequence.keypoints) if mask_legs else sequence.keypoints
    frames = keypoints.float().cpu().numpy()
    out = np.empty((frames.shape[0], sequence.height, sequence.width, 3), dtype=np.uint8)
    for index, points in enumerate(frames):
        if check_cancel is not None:
            check_cancel()
        out[index] = draw_pose_frame(points, sequence.width, sequence.height)
        if progress is not None:
            progress(index + 1, frames.shape[0])
    return torch.from_numpy(out)
