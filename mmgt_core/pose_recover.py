"""Keypoints recovered from a DWPose-style pose drawing (when only the skeleton video exists), for the motion masks.

What a drawing determines, and how it is read back (colours from ``render.py``):

* body joints: each is a disc of its own colour (``BODY_COLORS``), drawn over limbs dimmed to 90 %; the joint is
  the centre of its colour's largest blob;
* hand points: blue discs joined by edges of 20 known colours; a disc is identified by the edge colours touching
  it (the wrist touches the five finger roots, a joint the edge in and the edge out, a fingertip one edge), and
  assigned to the left or right hand by the nearer body wrist; touching discs are split by k-means;
* face: the white dots; what is recovered is the face region (all dots) and, among them, the mouth: the densest
  cluster of dots below the nose (body joint 0). Recovered face points are the dots themselves, in no particular
  iBUG order except that mouth dots are put in the lips range (72–91) and the others in the rest of the face.

What a drawing cannot give back: which face dot is which landmark (only the regions are meaningful), knees and
ankles (hidden by the default drawing; knee 12's colour is the hand-joint blue), points hidden under others, and
scores (recovered points get 1, missing ones 0). Drawings in another style (OpenPose body only, other colours,
anti-aliased or on a non-black background) are refused with "not a DWPose drawing", and so are drawings whose
colours lossy video compression changed (an H.264 pose video): the colours are the only key to what is what.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .constants import VIDEO_FPS
from .errors import InputError
from .keypoints import FACE, LEFT_HAND, LIPS, RIGHT_HAND, PoseSequence
from .render import BODY_COLORS, FACE_COLOR, HAND_EDGE_COLORS, HAND_EDGES, HAND_JOINT_COLOR, _pen_sizes
from .types import OptionalCancel, OptionalProgress

COLOUR_TOLERANCE = 24.0  # max distance (RGB) to a palette colour; absorbs slight colour shifts only
MIN_PALETTE_SHARE = 0.85  # share of drawn (non-black) pixels that must be palette colours
MIN_DISC_SHARE = 0.4  # blobs smaller than this share of a disc are specks, not points
BLACK_LEVEL = 30  # brighter than this (max channel) counts as drawn
LEG_JOINTS = (9, 10, 12, 13)
UNIDENTIFIED_SCORE = 0.5  # a hand disc whose point number is unknown: counted by the masks, not by identity
_LIMB_COLOURS = [tuple(int(c * 0.9) for c in colour) for colour in BODY_COLORS]
NOT_DWPOSE_FIX = ("Use the drawing itself (the IMAGE output of MMGT Render Pose or of a DWPose node of "
                  "comfyui_controlnet_aux, or a lossless video/PNG frames of it: H.264 compression changes the "
                  "colours too much), black background, not resized with smoothing; or give keypoints instead.")


@dataclass
class _Palette:
    colours: np.ndarray  # (C, 3) float
    names: list[str]


def _palette() -> _Palette:
    # Hand-joint blue first: knee 12 has the same colour, and a tie goes to the first entry (knees are not drawn).
    names: list[str] = ["hand_joint", "face"]
    colours: list[tuple[int, int, int]] = [HAND_JOINT_COLOR, FACE_COLOR]
    for prefix, group in (("joint", BODY_COLORS), ("limb", _LIMB_COLOURS), ("edge", HAND_EDGE_COLORS)):
        for index, colour in enumerate(group):
            names.append(f"{prefix}{index}")
            colours.append(colour)
    return _Palette(np.array(colours, np.float32), names)


PALETTE = _palette()
LABEL = {name: index for index, name in enumerate(PALETTE.names)}


def classify_pixels(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) index into PALETTE of each drawn pixel's nearest colour (−1: background or no close colour), and
    the drawn-pixel mask."""
    drawn = frame.max(axis=2) > BLACK_LEVEL
    labels = np.full(frame.shape[:2], -1, np.int32)
    pixels = frame[drawn].astype(np.float32)
    if len(pixels):
        distances = np.linalg.norm(pixels[:, None, :] - PALETTE.colours[None], axis=2)
        nearest = distances.argmin(1)
        nearest[distances[np.arange(len(pixels)), nearest] > COLOUR_TOLERANCE] = -1
        labels[drawn] = nearest
    return labels, drawn


def check_dwpose_drawing(labels: np.ndarray, drawn: np.ndarray, frame_index: int, input_name: str) -> None:
    """Refuse a frame that is not a DWPose-style drawing: too few palette pixels, or no body joint colour at all."""
    total = int(drawn.sum())
    if total == 0:
        return  # an empty frame: nobody drawn (handled as a gap by the caller)
    share = float((labels[drawn] >= 0).mean())
    joints = sum(1 for j in range(18) if (labels == LABEL[f"joint{j}"]).any())
    if share < MIN_PALETTE_SHARE or joints < 2:
        raise InputError(input_name, f"frame {frame_index} is not a DWPose drawing, or one whose colours video "
                                     f"compression changed ({share:.0%} of its drawn pixels have DWPose colours, "
                                     f"{joints} body joint colour(s) found).", NOT_DWPOSE_FIX)


def _blobs(mask: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """(centroid (x, y), area) of each connected component of a boolean mask."""
    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [(centroids[i], int(stats[i, cv2.CC_STAT_AREA])) for i in range(1, count)]


def _disc_centres(mask: np.ndarray, radius: int) -> list[np.ndarray]:
    """Centres of the discs of ``radius`` in ``mask``; blobs of several touching discs are split by k-means."""
    disc_area = max(1.0, np.pi * (radius + 0.5) ** 2)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    centres: list[np.ndarray] = []
    for i in range(1, count):
        area = stats[i, cv2.CC_STAT_AREA]
        if area < MIN_DISC_SHARE * disc_area:
            continue  # a speck: a compression artefact or a sliver of a covered disc, not a point
        discs = int(round(area / disc_area))
        if discs <= 1:
            centres.append(centroids[i])
            continue
        ys, xs = np.nonzero(labels == i)
        points = np.stack((xs, ys), 1).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.1)
        cv2.setRNGSeed(0)
        _, _, means = cv2.kmeans(points, min(discs, len(points)), None, criteria, 3, cv2.KMEANS_PP_CENTERS)
        centres.extend(_outer_discs_to_extent(np.asarray(means, np.float64), xs, ys, radius))
    return centres


def _outer_discs_to_extent(means: np.ndarray, xs: np.ndarray, ys: np.ndarray, radius: int) -> list[np.ndarray]:
    """k-means pulls the outermost discs of a merged blob inwards; the blob's extent says exactly where their
    centres are (a disc of ``radius`` reaches ``radius`` pixels past its centre), so move them there."""
    means = means.copy()
    means[means[:, 0].argmin(), 0] = xs.min() + radius
    means[means[:, 0].argmax(), 0] = xs.max() - radius
    means[means[:, 1].argmin(), 1] = ys.min() + radius
    means[means[:, 1].argmax(), 1] = ys.max() - radius
    return list(means)


def _recover_body(labels: np.ndarray, out: np.ndarray) -> None:
    for joint in range(18):
        if joint in LEG_JOINTS:
            continue
        found = _blobs(labels == LABEL[f"joint{joint}"])
        if found:
            centre, _ = max(found, key=lambda blob: blob[1])
            out[joint] = (centre[0], centre[1], 1.0)


def _touching_edges(labels: np.ndarray, centre: np.ndarray, radius: int) -> set[int]:
    """Hand edge indices whose colour appears in a ring just outside a hand disc."""
    height, width = labels.shape
    x, y = int(round(centre[0])), int(round(centre[1]))
    reach = radius + 3
    x0, x1, y0, y1 = max(0, x - reach), min(width, x + reach + 1), max(0, y - reach), min(height, y + reach + 1)
    window = labels[y0:y1, x0:x1]
    ys, xs = np.mgrid[y0:y1, x0:x1]
    ring = (np.hypot(xs - centre[0], ys - centre[1]) <= reach) & (np.hypot(xs - centre[0], ys - centre[1]) > radius)
    first_edge = LABEL["edge0"]
    found = window[ring]
    return {int(v) - first_edge for v in np.unique(found) if first_edge <= v < first_edge + len(HAND_EDGES)}


def _hand_point_index(edges: set[int], centre: np.ndarray, wrist: np.ndarray | None, radius: int) -> int | None:
    """Which of the 21 hand points a disc is, from the edges touching it (None: cannot tell)."""
    roots = {0, 4, 8, 12, 16}
    if len(edges & roots) >= 2:
        return 0
    candidates: set[int] | None = None
    for edge in edges:
        ends = set(HAND_EDGES[edge])
        candidates = ends if candidates is None else candidates & ends
    if not candidates:
        return None
    if len(candidates) == 1:
        return next(iter(candidates))
    near, far = sorted(candidates)  # one edge touches: its inner or its outer end
    if far % 4 == 0:
        return far  # a fingertip touches only the edge into it; an inner joint touches two
    if near == 0 and wrist is not None:
        return 0 if float(np.linalg.norm(centre - wrist)) < 3 * radius else far
    return None


def _recover_hands(labels: np.ndarray, out: np.ndarray, radius: int) -> None:
    centres = _disc_centres(labels == LABEL["hand_joint"], radius)
    wrists = {LEFT_HAND: out[7] if out[7, 2] > 0 else None, RIGHT_HAND: out[4] if out[4, 2] > 0 else None}
    unplaced: list[tuple[range, np.ndarray]] = []
    for centre in centres:
        hand = _nearer_hand(centre, wrists)
        wrist = wrists[hand]
        index = _hand_point_index(_touching_edges(labels, centre, radius), centre,
                                  None if wrist is None else wrist[:2], radius)
        slot = None if index is None else hand.start + index
        if slot is None or out[slot, 2] != 0:
            unplaced.append((hand, centre))
            continue
        out[slot] = (centre[0], centre[1], 1.0)
    unplaced = _place_by_chain(out, unplaced)
    for hand, centre in unplaced:  # where a disc is, without knowing which point it is: still part of the hand
        free = [k for k in hand if out[k, 2] == 0]
        if free:
            out[free[-1]] = (centre[0], centre[1], UNIDENTIFIED_SCORE)


def _expected_position(points: np.ndarray, index: int) -> np.ndarray | None:
    """Where hand point ``index`` should be from its identified finger neighbours (None: not enough known)."""
    known = points[:, 2] == 1.0
    previous = 0 if index % 4 == 1 else index - 1
    following = index + 1 if index % 4 != 0 else None
    if following is not None and known[previous] and known[following]:
        return (points[previous, :2] + points[following, :2]) / 2
    before = (0 if previous % 4 == 1 else previous - 1) if previous != 0 else None
    if before is not None and known[previous] and known[before]:
        return points[previous, :2] + (points[previous, :2] - points[before, :2])
    return None


def _place_by_chain(out: np.ndarray, unplaced: list[tuple[range, np.ndarray]]) -> list[tuple[range, np.ndarray]]:
    """Identify leftover discs where the finger's identified neighbours predict them (midpoint or continuation),
    closest match first; a disc farther than half a bone from every prediction stays unidentified."""
    remaining = list(unplaced)
    while remaining:
        best: tuple[float, int, int] | None = None
        for number, (hand, centre) in enumerate(remaining):
            points = out[hand.start : hand.stop]
            for index in range(1, 21):
                if points[index, 2] != 0:
                    continue
                expected = _expected_position(points, index)
                if expected is None:
                    continue
                previous = 0 if index % 4 == 1 else index - 1
                bone = float(np.linalg.norm(expected - points[previous, :2])) or 1.0
                distance = float(np.linalg.norm(centre - expected))
                if distance < 0.5 * bone and (best is None or distance < best[0]):
                    best = (distance, number, hand.start + index)
        if best is None:
            break
        _, number, slot = best
        centre = remaining.pop(number)[1]
        out[slot] = (centre[0], centre[1], 1.0)
    return remaining


def _nearer_hand(centre: np.ndarray, wrists: dict[range, np.ndarray | None]) -> range:
    known = {hand: wrist for hand, wrist in wrists.items() if wrist is not None}
    if not known:
        return LEFT_HAND
    return min(known, key=lambda hand: float(np.linalg.norm(centre - known[hand][:2])))


def _recover_face(labels: np.ndarray, out: np.ndarray, radius: int) -> None:
    white = labels == LABEL["face"]
    dots = np.array(_disc_centres(white, radius)).reshape(-1, 2)
    if len(dots) == 0:
        return
    found = _mouth_blob_dots(white, dots, out, radius)
    mouth = _mouth_dots(dots, out, radius) if found is None else found[0]
    lip_dots = np.array([dots[i] for i in sorted(mouth)]).reshape(-1, 2)
    if found is not None and len(lip_dots):
        ys, xs = np.nonzero(found[1])
        lip_dots = np.array(_outer_discs_to_extent(lip_dots, xs, ys, radius))
        low, high = np.array([xs.min(), ys.min()]) + radius, np.array([xs.max(), ys.max()]) - radius
        lip_dots = np.clip(lip_dots, low, np.maximum(low, high))
    lips = _extremes_first(lip_dots)[: len(LIPS)]
    rest = [k for k in FACE if k not in LIPS]
    others = _extremes_first(np.array([d for i, d in enumerate(dots) if i not in mouth]).reshape(-1, 2))
    for slot, dot in zip(rest, others):
        out[slot] = (dot[0], dot[1], 1.0)
    for slot, dot in zip(LIPS, lips):
        out[slot] = (dot[0], dot[1], 1.0)


def _face_down(body: np.ndarray) -> np.ndarray:
    """Unit vector from the eyes to the nose (image down when the eyes are not known)."""
    eyes = [body[j, :2] for j in (14, 15) if body[j, 2] > 0]
    if body[0, 2] <= 0 or not eyes:
        return np.array([0.0, 1.0])
    down = body[0, :2] - np.mean(eyes, 0)
    return down / max(float(np.linalg.norm(down)), 1e-6)


MOUTH_START = 0.41  # the mouth starts this far from the nose tip towards the chin (nostrils: about 0.25–0.35)


def _below_nose(points: np.ndarray, body: np.ndarray, dots: np.ndarray) -> np.ndarray:
    """Which (N, 2) points lie where the mouth can be: past the nostrils on the way from the nose tip (body joint 0)
    to the chin (the face dot farthest down)."""
    down = _face_down(body)
    nose = body[0, :2] if body[0, 2] > 0 else dots[(dots @ down).argmin()] * 0.4 + dots[(dots @ down).argmax()] * 0.6
    chin = float((dots @ down).max())
    start = float(nose @ down) + MOUTH_START * (chin - float(nose @ down))
    return (points @ down) > start


def _mouth_blob_dots(white: np.ndarray, dots: np.ndarray, body: np.ndarray, radius: int
                     ) -> tuple[set[int], np.ndarray] | None:
    """Mouth dots when they merge into one blob (the usual case at 512 px): the largest white blob below the nose,
    with the blobs that nearly touch it (an open mouth's lower lip), cut where the mouth starts (no nostrils).
    Returns the dots and the mouth's pixels; None when no blob below the nose is several dots large."""
    count, components, stats, centroids = cv2.connectedComponentsWithStats(white.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    below = _below_nose(centroids[1:], body, dots)
    disc_area = np.pi * (radius + 0.5) ** 2
    if not below.any() or areas[below].max() < 4 * disc_area:
        return None
    mouth_id = 1 + int(np.flatnonzero(below)[np.argmax(areas[below])])
    grown = cv2.dilate((components == mouth_id).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    ids = {int(v) for v in np.unique(components[grown]) if v > 0}
    mouth_pixels = np.isin(components, list(ids))
    height, width = white.shape
    xs = np.clip(np.round(dots[:, 0]).astype(int), 0, width - 1)
    ys = np.clip(np.round(dots[:, 1]).astype(int), 0, height - 1)
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack((cols, rows), -1).reshape(-1, 2).astype(np.float64)
    mouth_pixels &= _below_nose(pixels, body, dots).reshape(height, width)
    return {int(i) for i in np.flatnonzero(mouth_pixels[ys, xs] & _below_nose(dots, body, dots))}, mouth_pixels


def _extremes_first(dots: np.ndarray) -> list[np.ndarray]:
    """The dots with the outermost four first, so that if there are more dots than slots the region is kept."""
    if len(dots) == 0:
        return []
    first = list(dict.fromkeys(int(i) for i in (dots[:, 0].argmin(), dots[:, 0].argmax(), dots[:, 1].argmin(),
                                                  dots[:, 1].argmax())))
    return [dots[i] for i in first] + [d for i, d in enumerate(dots) if i not in first]


def _mouth_dots(dots: np.ndarray, body: np.ndarray, radius: int) -> set[int]:
    """Mouth dots when they stay apart (large faces): the densest chain of nearly touching dots below the nose."""
    candidates = np.flatnonzero(_below_nose(dots, body, dots))
    if len(candidates) == 0:
        return set()
    link = 2.0 * radius + 2.0  # dots this close touch or nearly touch
    linked = np.linalg.norm(dots[candidates, None] - dots[None, candidates], axis=2) <= link
    members = {int(np.argmax(linked.sum(1)))}
    frontier = set(members)
    while frontier:
        grown = {int(j) for i in frontier for j in np.flatnonzero(linked[i])} - members
        members |= grown
        frontier = grown
    return {int(candidates[i]) for i in members}


def recover_keypoints(frame: np.ndarray, frame_index: int = 0, input_name: str = "pose_frames") -> np.ndarray:
    """(134, 3) keypoints read back from one RGB uint8 DWPose drawing (see the module notes)."""
    labels, drawn = classify_pixels(frame)
    check_dwpose_drawing(labels, drawn, frame_index, input_name)
    pens = _pen_sizes(frame.shape[1], frame.shape[0])
    out = np.zeros((134, 3), np.float32)
    _recover_body(labels, out)
    _recover_hands(labels, out, pens["hand_joint"])
    _recover_face(labels, out, pens["face_dot"])
    return out


def recover_pose_sequence(frames: torch.Tensor | np.ndarray, fps: float = VIDEO_FPS, progress: OptionalProgress = None,
                          check_cancel: OptionalCancel = None) -> PoseSequence:
    """Keypoints for every frame of a (T, H, W, 3) uint8 pose video."""
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise InputError("pose_frames", f"expected (frames, H, W, 3) uint8 RGB, got {array.shape} {array.dtype}.")
    out = np.zeros((array.shape[0], 134, 3), np.float32)
    for index, frame in enumerate(array):
        if check_cancel is not None:
            check_cancel()
        out[index] = recover_keypoints(frame, index)
        if progress is not None:
            progress(index + 1, array.shape[0])
    return PoseSequence(torch.from_numpy(out), array.shape[2], array.shape[1], fps)
