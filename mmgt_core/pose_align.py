"""Pose-driven mode helpers: fit external keypoints to the reference body, and mix two keypoint sequences.

Alignment: a pose taken from another person (or another framing) is scaled and shifted so that its upper body
lands on the reference person's: the scale is the ratio of the two shoulder widths (falling back to the
neck–nose distance, then to the face box size), measured on the median over frames for the external pose and on
the reference frame; the shift puts the external neck on the reference neck. One similarity transform is applied
to every point of every frame, so the motion itself is unchanged and the face and hands keep their proportions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .constants import KEYPOINT_SCORE_THRESHOLD
from .errors import InputError
from .keypoints import BODY, FACE, HANDS, PoseSequence

NECK, NOSE, R_SHOULDER, L_SHOULDER = 1, 0, 2, 5


@dataclass
class Alignment:
    """``aligned = (points − source_anchor) · scale + target_anchor``, applied to x and y."""

    scale: float
    source_anchor: tuple[float, float]
    target_anchor: tuple[float, float]
    measured_by: str


def _visible(points: torch.Tensor, index: int) -> bool:
    return bool(points[index, 2] >= KEYPOINT_SCORE_THRESHOLD)


def _body_size(points: torch.Tensor) -> tuple[float, str] | None:
    """A size measure of one (134, 3) frame: shoulder width, else neck–nose distance, else face box diagonal."""
    if _visible(points, R_SHOULDER) and _visible(points, L_SHOULDER):
        return float((points[R_SHOULDER, :2] - points[L_SHOULDER, :2]).norm()), "shoulders"
    if _visible(points, NECK) and _visible(points, NOSE):
        return float((points[NECK, :2] - points[NOSE, :2]).norm()), "neck-nose"
    face = points[FACE.start : FACE.stop]
    face = face[face[:, 2] >= KEYPOINT_SCORE_THRESHOLD]
    if face.shape[0] >= 2:
        return float((face[:, :2].max(0).values - face[:, :2].min(0).values).norm()), "face"
    return None


def _anchor(points: torch.Tensor) -> tuple[float, float] | None:
    """The neck, else the shoulder midpoint, else the nose."""
    if _visible(points, NECK):
        return float(points[NECK, 0]), float(points[NECK, 1])
    if _visible(points, R_SHOULDER) and _visible(points, L_SHOULDER):
        mid = (points[R_SHOULDER, :2] + points[L_SHOULDER, :2]) / 2
        return float(mid[0]), float(mid[1])
    if _visible(points, NOSE):
        return float(points[NOSE, 0]), float(points[NOSE, 1])
    return None


def _median_frame(keypoints: torch.Tensor) -> torch.Tensor:
    """Per-point median over the frames where the point is visible (score = share of frames it was seen)."""
    visible = keypoints[..., 2] >= KEYPOINT_SCORE_THRESHOLD
    xy = torch.where(visible[..., None], keypoints[..., :2], torch.nan).nanmedian(dim=0).values
    seen = visible.float().mean(0)
    return torch.cat([torch.nan_to_num(xy), torch.where(seen > 0, torch.ones_like(seen), seen)[:, None]], dim=1)


def fit_alignment(source: PoseSequence, reference: PoseSequence) -> Alignment:
    """The similarity transform that puts ``source``'s upper body on ``reference``'s first frame."""
    typical = _median_frame(source.keypoints.float())
    target = reference.keypoints[0].float()
    source_size, target_size = _body_size(typical), _body_size(target)
    source_anchor, target_anchor = _anchor(typical), _anchor(target)
    if source_size is None or source_anchor is None:
        raise InputError("keypoints", "has no visible shoulders, neck or face to align with.",
                         "Use keypoints of an upper body, or turn alignment off.")
    if target_size is None or target_anchor is None:
        raise InputError("reference_pose", "has no visible shoulders, neck or face.",
                         "Use a reference image that shows the person's upper body.")
    # measure both with the same rule: fall back together when one side lacks the better landmarks
    rules = ("shoulders", "neck-nose", "face")
    rule = rules[max(rules.index(source_size[1]), rules.index(target_size[1]))]
    source_value, target_value = _measure(typical, rule), _measure(target, rule)
    if not source_value or not target_value:
        raise InputError("keypoints", "the body is too small to measure (size 0).")
    return Alignment(target_value / source_value, source_anchor, target_anchor, rule)


def _measure(points: torch.Tensor, rule: str) -> float:
    if rule == "shoulders":
        return float((points[R_SHOULDER, :2] - points[L_SHOULDER, :2]).norm())
    if rule == "neck-nose":
        return float((points[NECK, :2] - points[NOSE, :2]).norm())
    face = points[FACE.start : FACE.stop]
    face = face[face[:, 2] >= KEYPOINT_SCORE_THRESHOLD]
    return float((face[:, :2].max(0).values - face[:, :2].min(0).values).norm()) if face.shape[0] >= 2 else 0.0


def align_to_reference(source: PoseSequence, reference: PoseSequence) -> tuple[PoseSequence, Alignment]:
    """Apply :func:`fit_alignment`; the result lives on the reference canvas with the source frame rate."""
    alignment = fit_alignment(source, reference)
    keypoints = source.keypoints.float().clone()
    anchor_in = torch.tensor(alignment.source_anchor)
    anchor_out = torch.tensor(alignment.target_anchor)
    keypoints[..., :2] = (keypoints[..., :2] - anchor_in) * alignment.scale + anchor_out
    return PoseSequence(keypoints, reference.width, reference.height, source.fps), alignment


PART_GROUPS = {"body": list(BODY) + list(range(18, 24)), "face": list(FACE), "hands": list(HANDS)}
SOURCES = ("a", "b", "blend")


def blend_keypoints(a: PoseSequence, b: PoseSequence, weight: float = 0.5, body_from: str = "blend",
                    face_from: str = "blend", hands_from: str = "blend") -> PoseSequence:
    """Mix two sequences part by part: each part from ``a``, from ``b``, or ``(1 − weight)·a + weight·b``.

    Lengths may differ: the result has the shorter length. Canvases must match (align first).
    A blended point is visible only where both inputs see it.
    """
    if (a.width, a.height) != (b.width, b.height):
        raise InputError("keypoints_b", f"is on a {b.width}×{b.height} canvas, keypoints_a on {a.width}×{a.height}.",
                         "Align both to the same reference first (MMGT Align Keypoints).")
    frames = min(a.num_frames, b.num_frames)
    first, second = a.keypoints[:frames].float(), b.keypoints[:frames].float()
    out = first.clone()
    for part, source in (("body", body_from), ("face", face_from), ("hands", hands_from)):
        if source not in SOURCES:
            raise InputError(f"{part}_from", f"must be one of {SOURCES}, got {source!r}.")
        index = PART_GROUPS[part]
        if source == "b":
            out[:, index] = second[:, index]
        elif source == "blend":
            out[:, index, :2] = (1 - weight) * first[:, index, :2] + weight * second[:, index, :2]
            out[:, index, 2] = torch.minimum(first[:, index, 2], second[:, index, 2])
    return PoseSequence(out, a.width, a.height, a.fps)
