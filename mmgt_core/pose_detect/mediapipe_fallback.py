"""Offline fallback for the reference pose: MediaPipe Holistic landmarks mapped onto the 134-point DWPose layout.

Use it when the DWPose ONNX files are absent. It needs the optional extra ``mediapipe==0.10.21``, whose wheel ships
the Holistic models used here (``model_complexity=1``; complexities 0 and 2 would download a model, so they are not
used). ``mediapipe`` is imported only inside :func:`run_mediapipe`; everything else is plain numpy.

Holistic tracks ONE person: pose (33 BlazePose landmarks with visibility), face mesh (468, or 478 with irises) and
two hands (21 each). Mapping to the 134 layout (x, y in pixels, score):

* Body 0–17 (OpenPose-18) from BlazePose: nose 0; shoulders 12/11; elbows 14/13; wrists 16/15; hips 24/23;
  knees 26/25; ankles 28/27; eyes 5/2 (eye centres); ears 8/7 (right/left, the person's sides). Score = the
  landmark's visibility. Neck 1 = mean of the shoulders, score 1 if both shoulder visibilities > 0.3 else 0
  (DWPose's rule). APPROXIMATE: BlazePose hips sit slightly off COCO hips; scores are visibilities, not
  DWPose confidences.
* Feet 18–23 (left big toe, left small toe, left heel, right big toe, right small toe, right heel):
  APPROXIMATE: both toes of a foot take BlazePose's foot-index landmark (31 left, 32 right); heels 29/30.
  Scores = visibilities.
* Face 24–91 (iBUG-68) from the face mesh by :data:`FACE_MESH_TO_IBUG68`; where a table entry lists two mesh
  points, their mean is used. APPROXIMATE everywhere: the mesh has no points at the iBUG definitions, the
  jaw line especially (points 3, 4, 12, 13 are averages). Score 1.0 for every face point when a face is found.
* Hands 92–112 (the person's LEFT hand) and 113–133 (right): MediaPipe's 21-point hand order equals
  OpenPose/COCO-WholeBody's. Each found hand goes to the side whose BlazePose wrist (15 left, 16 right) is
  nearer to the hand's wrist point, so the result does not depend on how a detector labels handedness (a
  mirrored or selfie image flips labels). Score 1.0 per point of a found hand.
* Not found: a missing face puts all 68 points on the nose with score 0; a missing hand puts its 21 points on
  the BlazePose wrist of that side with score 0 (DWPose also keeps positions for unseen points, with low
  scores). A missing pose means no person.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..constants import KEYPOINT_SCORE_THRESHOLD

MEDIAPIPE_VERSION = "0.10.21"

# OpenPose-18 body index -> BlazePose landmark; the neck (1) is computed from the shoulders.
BODY_FROM_BLAZEPOSE: dict[int, int] = {
    0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28, 11: 23, 12: 25, 13: 27,
    14: 5, 15: 2, 16: 8, 17: 7,
}
BLAZE_LEFT_SHOULDER, BLAZE_RIGHT_SHOULDER = 11, 12
BLAZE_LEFT_WRIST, BLAZE_RIGHT_WRIST = 15, 16
BLAZE_NOSE = 0
# Feet 18..23 (COCO-WholeBody order) -> BlazePose: toes share the foot-index landmark (approximation).
FEET_FROM_BLAZEPOSE = (31, 31, 29, 32, 32, 30)

# iBUG-68 point -> face-mesh landmark(s); two indices mean "their midpoint". Left/right are the person's sides.
FACE_MESH_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # 0-16 jaw, from the person's right (image left for a frontal face) over the chin (8) to the left
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397, 288), (288, 361), (323,), (454,), (356,),
    # 17-21 right brow (outer -> inner), 22-26 left brow (inner -> outer)
    (70,), (63,), (105,), (66,), (107,),
    (336,), (296,), (334,), (293,), (300,),
    # 27-30 nose bridge (top -> tip), 31-35 nostrils (right -> left)
    (168,), (197,), (5,), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # 36-41 right eye (outer corner, upper lid x2, inner corner, lower lid x2), 42-47 left eye (inner corner first)
    (33,), (160,), (158,), (133,), (153,), (144,),
    (362,), (385,), (387,), (263,), (373,), (380,),
    # 48-59 outer lips (right corner, upper lip, left corner, lower lip), 60-67 inner lips
    (61,), (40,), (37,), (0,), (267,), (270,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (81,), (13,), (311,), (308,), (402,), (14,), (178,),
)

_BODY, _FEET, _FACE, _LEFT_HAND, _RIGHT_HAND = slice(0, 18), slice(18, 24), slice(24, 92), slice(92, 113), \
    slice(113, 134)


@dataclass
class HolisticLandmarks:
    """One person's MediaPipe landmarks in image pixels."""

    pose: np.ndarray  # (33, 3): x, y, visibility
    face: np.ndarray | None = None  # (468 or 478, 2) x, y
    hands: list[np.ndarray] = field(default_factory=list)  # 0-2 arrays of (21, 2) x, y, unlabeled


def mediapipe_available() -> bool:
    """True when the optional ``mediapipe`` package can be imported."""
    return importlib.util.find_spec("mediapipe") is not None


def body_from_pose(pose: np.ndarray) -> np.ndarray:
    """(18, 3) OpenPose body from (33, 3) BlazePose x, y, visibility; neck by DWPose's shoulder rule."""
    body = np.zeros((18, 3), dtype=np.float64)
    for openpose_index, blaze_index in BODY_FROM_BLAZEPOSE.items():
        body[openpose_index] = pose[blaze_index]
    shoulders = pose[[BLAZE_LEFT_SHOULDER, BLAZE_RIGHT_SHOULDER]]
    body[1, :2] = shoulders[:, :2].mean(axis=0)
    body[1, 2] = float(np.all(shoulders[:, 2] > KEYPOINT_SCORE_THRESHOLD))
    return body


def face_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG-68 points from (468+, 2) face-mesh points."""
    return np.stack([mesh[list(indices)].mean(axis=0) for indices in FACE_MESH_TO_IBUG68])


def assign_hands(hands: Sequence[np.ndarray], left_wrist: np.ndarray,
                 right_wrist: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(left, right) hands of the person: each hand goes to the side whose body wrist is nearer to its wrist."""
    if len(hands) > 2:
        raise ValueError(f"expected at most 2 hands, got {len(hands)}")

    def distance(hand: np.ndarray, wrist: np.ndarray) -> float:
        return float(np.linalg.norm(hand[0, :2] - wrist[:2]))

    if len(hands) == 0:
        return None, None
    if len(hands) == 1:
        hand = hands[0]
        return (hand, None) if distance(hand, left_wrist) <= distance(hand, right_wrist) else (None, hand)
    first, second = hands
    keep_order = distance(first, left_wrist) + distance(second, right_wrist)
    swapped = distance(second, left_wrist) + distance(first, right_wrist)
    return (first, second) if keep_order <= swapped else (second, first)


def _points_with_score(points: np.ndarray | None, fallback_xy: np.ndarray, count: int) -> np.ndarray:
    """(count, 3): the points with score 1, or ``count`` copies of ``fallback_xy`` with score 0 when absent."""
    if points is None:
        return np.concatenate((np.tile(fallback_xy[:2], (count, 1)), np.zeros((count, 1))), axis=1)
    return np.concatenate((np.asarray(points, np.float64)[:count, :2], np.ones((count, 1))), axis=1)


def landmarks_to_134(landmarks: HolisticLandmarks) -> np.ndarray:
    """(134, 3) float32 DWPose-layout keypoints (pixels, score) from MediaPipe Holistic landmarks."""
    pose = np.asarray(landmarks.pose, dtype=np.float64)
    if pose.shape != (33, 3):
        raise ValueError(f"pose landmarks must be (33, 3), got {pose.shape}")
    keypoints = np.zeros((134, 3), dtype=np.float64)
    keypoints[_BODY] = body_from_pose(pose)
    keypoints[_FEET] = pose[list(FEET_FROM_BLAZEPOSE)]
    face = None if landmarks.face is None else face_from_mesh(np.asarray(landmarks.face, np.float64))
    keypoints[_FACE] = _points_with_score(face, pose[BLAZE_NOSE], 68)
    left_wrist, right_wrist = pose[BLAZE_LEFT_WRIST], pose[BLAZE_RIGHT_WRIST]
    left, right = assign_hands(landmarks.hands, left_wrist, right_wrist)
    keypoints[_LEFT_HAND] = _points_with_score(left, left_wrist, 21)
    keypoints[_RIGHT_HAND] = _points_with_score(right, right_wrist, 21)
    return keypoints.astype(np.float32)


def _to_pixels(landmark_list: Any, width: int, height: int, with_visibility: bool = False) -> np.ndarray:
    rows = [(lm.x * width, lm.y * height) + ((lm.visibility,) if with_visibility else ())
            for lm in landmark_list.landmark]
    return np.array(rows, dtype=np.float64)


def run_mediapipe(image_rgb: np.ndarray) -> HolisticLandmarks | None:
    """Run MediaPipe Holistic on an (H, W, 3) uint8 RGB image; None when it finds no person.

    Raises ImportError when mediapipe is not installed (callers check :func:`mediapipe_available` first).
    """
    holistic_module = importlib.import_module("mediapipe.python.solutions.holistic")
    height, width = image_rgb.shape[:2]
    with holistic_module.Holistic(static_image_mode=True, model_complexity=1, smooth_landmarks=False,
                                  enable_segmentation=False, refine_face_landmarks=False) as holistic:
        result = holistic.process(np.ascontiguousarray(image_rgb))
    if result.pose_landmarks is None:
        return None
    pose = _to_pixels(result.pose_landmarks, width, height, with_visibility=True)
    face = None if result.face_landmarks is None else _to_pixels(result.face_landmarks, width, height)
    hands = [_to_pixels(hand, width, height) for hand in (result.left_hand_landmarks, result.right_hand_landmarks)
             if hand is not None]
    return HolisticLandmarks(pose=pose, face=face, hands=hands)
