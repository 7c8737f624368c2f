"""Motion controls on a keypoint sequence: gesture amplitude per part, temporal smoothing, and a silence gate.

Each control is the identity at its default (amplitude 1, smoothing 0, gate off), so the official output is
unchanged unless a user asks for something. Scores are never changed; only visible points (score > 0) move.

* Amplitude: each part's motion is scaled around the reference pose, part by part along the body's chain, so a
  hand keeps riding on its wrist and the lips on the face: body joints around their reference place; the head
  (head joints and face) around the neck; the lips around the nose tip; each hand around its wrist.
* Smoothing: a Savitzky–Golay filter (quadratic, zero phase: no lag) along time, window up to 1 s at strength 1.
  Frames where a point is hidden are bridged by interpolation for the filter and then left as they were.
* Silence gate: frames whose audio energy stays below ``threshold_db`` (relative to the loudest frame) for longer
  than ``hang_seconds`` are silent; there the lips ease (over ``ease_seconds``) to the reference lips with the
  mouth closed, placed on the current mouth corners (scores unchanged). The gated sequence carries the per-frame
  speech weights, with which MMGT Sample Video fades MM-HAA's face and lip audio attention in the same pauses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .errors import InputError
from .keypoints import BODY, FACE, FEET, LEFT_HAND, LIPS, RIGHT_HAND, PoseSequence

PARTS: tuple[str, ...] = ("body", "head", "lips", "hands")
MAX_AMPLITUDE = 5.0
MAX_SMOOTHING_WINDOW = 25  # frames at strength 1 (1 s at 25 fps)

NECK, R_WRIST, L_WRIST = 1, 4, 7
HEAD_JOINTS = (0, 14, 15, 16, 17)  # nose, eyes, ears
BODY_JOINTS = tuple(k for k in BODY if k not in HEAD_JOINTS) + tuple(FEET)
NOSE_TIP = FACE.start + 30  # iBUG 30
MOUTH_CORNERS = (FACE.start + 48, FACE.start + 54)  # iBUG 48 (right), 54 (left)
# Inner lips (iBUG 60–67): the pairs that meet when the mouth closes (upper 61, 62, 63 with lower 67, 66, 65).
INNER_LIP_PAIRS = ((FACE.start + 61, FACE.start + 67), (FACE.start + 62, FACE.start + 66),
                   (FACE.start + 63, FACE.start + 65))
# Outer lower lip (iBUG 55–59) follows the inner lower lip when the mouth closes.
OUTER_LOWER_LIP = tuple(FACE.start + k for k in range(55, 60))


@dataclass(frozen=True)
class Amplitudes:
    """Motion scale per part around the reference pose (1 = as given, 0.5 = half the motion, 2 = twice)."""

    body: float = 1.0
    head: float = 1.0
    lips: float = 1.0
    hands: float = 1.0

    def check(self) -> None:
        for part in PARTS:
            value = float(getattr(self, part))
            if not (0.0 < value <= MAX_AMPLITUDE) or not np.isfinite(value):
                raise InputError(f"{part}_amplitude", f"must be above 0 and at most {MAX_AMPLITUDE:g}, got {value:g}.",
                                 "1 keeps the motion as it is; 0.5 halves it, 2 doubles it.")

    @property
    def is_identity(self) -> bool:
        return all(float(getattr(self, part)) == 1.0 for part in PARTS)


def _reference_frame(sequence: PoseSequence, reference: PoseSequence | None) -> torch.Tensor:
    """(134, 3) reference pose: the given one (its first frame, put on the sequence's canvas) or frame 0."""
    if reference is None:
        return sequence.keypoints[0].float()
    points = reference.keypoints[0].float().clone()
    if (reference.width, reference.height) != (sequence.width, sequence.height):
        points[:, 0] *= sequence.width / reference.width
        points[:, 1] *= sequence.height / reference.height
    return points


def _scale_around_anchor(out: torch.Tensor, source: torch.Tensor, ref: torch.Tensor, indices: list[int],
                         anchor: int, factor: float) -> None:
    """In place: ``indices`` of ``out`` = new anchor + reference offset + factor × (offset change), per frame."""
    offset = source[:, indices, :2] - source[:, anchor : anchor + 1, :2]
    ref_offset = ref[indices, :2] - ref[anchor, :2]
    moved = out[:, anchor : anchor + 1, :2] + ref_offset + factor * (offset - ref_offset)
    usable = (source[:, indices, 2] > 0) & (source[:, anchor : anchor + 1, 2] > 0)
    out[:, indices, :2] = torch.where(usable[..., None], moved, out[:, indices, :2])


def scale_motion(sequence: PoseSequence, amplitudes: Amplitudes, reference: PoseSequence | None = None
                 ) -> PoseSequence:
    """Scale each part's motion around the reference pose (see the module notes); identity at all ones."""
    amplitudes.check()
    if amplitudes.is_identity:
        return sequence
    source = sequence.keypoints.float()
    ref = _reference_frame(sequence, reference)
    out = source.clone()
    body = list(BODY_JOINTS)
    visible = source[:, body, 2:3] > 0
    scaled = ref[body, :2] + amplitudes.body * (source[:, body, :2] - ref[body, :2])
    out[:, body, :2] = torch.where(visible, scaled, source[:, body, :2])
    head = list(HEAD_JOINTS) + [k for k in FACE if k not in LIPS]
    _scale_around_anchor(out, source, ref, head, NECK, amplitudes.head)
    _scale_around_anchor(out, source, ref, list(LIPS), NOSE_TIP, amplitudes.lips)
    _scale_around_anchor(out, source, ref, list(LEFT_HAND), L_WRIST, amplitudes.hands)
    _scale_around_anchor(out, source, ref, list(RIGHT_HAND), R_WRIST, amplitudes.hands)
    return sequence.with_keypoints(out.to(sequence.keypoints.dtype))


# ------------------------------------------------------------------------------------------------------- smoothing


def smoothing_window(strength: float) -> int:
    """Odd Savitzky–Golay window for a strength in [0, 1] (1 = off, up to 25 frames)."""
    if not (0.0 <= float(strength) <= 1.0):
        raise InputError("smoothing", f"must be between 0 and 1, got {strength:g}.",
                         "0 leaves the motion as it is; 1 smooths over about one second.")
    return 1 + 2 * int(round(float(strength) * (MAX_SMOOTHING_WINDOW - 1) / 2))


def _bridge_hidden(series: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(T, 2) coordinates with hidden frames replaced by interpolation of the visible ones."""
    if seen.all() or not seen.any():
        return series
    frames = np.arange(len(series))
    return np.stack([np.interp(frames, frames[seen], series[seen, axis]) for axis in range(2)], axis=1)


def smooth_motion(sequence: PoseSequence, strength: float) -> PoseSequence:
    """Savitzky–Golay smoothing of every point's path (quadratic, zero phase); identity at strength 0."""
    from scipy.signal import savgol_filter

    window = smoothing_window(strength)
    frames = sequence.num_frames
    window = min(window, frames if frames % 2 else frames - 1)
    if window < 5:  # a quadratic fit through 3 points is the points themselves
        return sequence
    points = sequence.keypoints.double().numpy()
    out = points.copy()
    for k in range(points.shape[1]):
        seen = points[:, k, 2] > 0
        if not seen.any():
            continue
        bridged = _bridge_hidden(points[:, k, :2], seen)
        smoothed = savgol_filter(bridged, window, 2, axis=0, mode="interp")
        out[seen, k, :2] = smoothed[seen]
    return sequence.with_keypoints(torch.from_numpy(out).to(sequence.keypoints.dtype))


# ---------------------------------------------------------------------------------------------------- silence gate


@dataclass(frozen=True)
class SilenceGate:
    """Energy gate settings: silent where the level stays ``threshold_db`` below the loudest frame."""

    threshold_db: float = -35.0
    hang_seconds: float = 0.25
    ease_seconds: float = 0.12

    def check(self) -> None:
        if not (-120.0 <= self.threshold_db < 0.0):
            raise InputError("silence_threshold_db", f"must be between -120 and 0 dB, got {self.threshold_db:g}.",
                             "Try -35 dB: quieter than that, relative to the loudest moment, counts as silence.")
        if not (0.0 <= self.hang_seconds <= 5.0):
            raise InputError("hang_seconds", f"must be between 0 and 5 s, got {self.hang_seconds:g}.")
        if not (0.0 <= self.ease_seconds <= 2.0):
            raise InputError("ease_seconds", f"must be between 0 and 2 s, got {self.ease_seconds:g}.")


def frame_levels_db(wave: torch.Tensor, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """RMS level (dB, relative to the loudest frame) of each video frame's stretch of mono audio; −inf past its end."""
    samples = wave.double().reshape(-1).numpy()
    edges = np.round(np.arange(frames + 1) * sample_rate / fps).astype(np.int64)
    levels = np.full(frames, -np.inf)
    for t in range(frames):
        chunk = samples[edges[t] : edges[t + 1]]
        if chunk.size:
            levels[t] = 10 * np.log10(np.mean(chunk**2) + 1e-20)
    loudest = levels.max()
    return levels - loudest if np.isfinite(loudest) else levels


def speech_weights(wave: torch.Tensor, sample_rate: int, fps: float, frames: int, gate: SilenceGate) -> np.ndarray:
    """(T,) in [0, 1]: 1 while speaking (including ``hang_seconds`` after the level drops), easing to 0 in silence."""
    gate.check()
    loud = frame_levels_db(wave, sample_rate, fps, frames) > gate.threshold_db
    hang = int(round(gate.hang_seconds * fps))
    speaking = loud.copy()
    for t in np.flatnonzero(loud):
        speaking[t : t + hang + 1] = True  # hold open after speech, so short breaths do not snap the mouth shut
        speaking[max(0, t - hang) : t] = True  # and open a little before it
    ease = int(round(gate.ease_seconds * fps))
    weights = speaking.astype(np.float64)
    if ease > 0:
        kernel = np.ones(2 * ease + 1) / (2 * ease + 1)
        weights = np.convolve(np.pad(weights, ease, mode="edge"), kernel, mode="valid")
    return np.clip(np.round(weights, 6), 0.0, 1.0)  # rounding: a full window of ones is exactly 1


def closed_lips(reference: torch.Tensor) -> torch.Tensor:
    """(134, 3) reference pose with the mouth closed: inner-lip pairs meet, the lower lip follows."""
    closed = reference.clone()
    lower_shift = torch.zeros(2)
    for upper, lower in INNER_LIP_PAIRS:
        middle = (reference[upper, :2] + reference[lower, :2]) / 2
        lower_shift += (middle - reference[lower, :2]) / len(INNER_LIP_PAIRS)
        closed[upper, :2] = middle
        closed[lower, :2] = middle
    closed[list(OUTER_LOWER_LIP), :2] += lower_shift
    return closed


def lip_opening(keypoints: torch.Tensor) -> torch.Tensor:
    """(T,) mouth opening in pixels: mean distance between the inner-lip pairs."""
    gaps = [torch.linalg.norm(keypoints[:, upper, :2] - keypoints[:, lower, :2], dim=-1)
            for upper, lower in INNER_LIP_PAIRS]
    return torch.stack(gaps).mean(0)


def gate_lips(sequence: PoseSequence, wave: torch.Tensor, sample_rate: int, gate: SilenceGate,
              reference: PoseSequence | None = None) -> tuple[PoseSequence, np.ndarray]:
    """Ease the lips to the closed reference mouth where the audio is silent. Returns the sequence and the (T,)
    speech weights (1 = lips as given). The sequence carries the weights, so MMGT Sample Video fades the MM-HAA face
    and lip audio attention in the same pauses."""
    weights = speech_weights(wave, sample_rate, sequence.fps, sequence.num_frames, gate)
    source = sequence.keypoints.float()
    ref = closed_lips(_reference_frame(sequence, reference))
    lips = list(LIPS)
    corners = list(MOUTH_CORNERS)
    anchor = source[:, corners, :2].mean(1, keepdim=True)
    closed = ref[lips, :2] - ref[corners, :2].mean(0) + anchor
    weight = torch.from_numpy(weights).float()[:, None, None]
    out = source.clone()
    out[:, lips, :2] = closed + weight * (source[:, lips, :2] - closed)  # hidden lips too: they stay hidden
    speech = torch.from_numpy(weights).float()
    if sequence.speech_weights is not None:
        speech = speech * sequence.speech_weights.float()
    gated = replace(sequence.with_keypoints(out.to(sequence.keypoints.dtype)), speech_weights=speech)
    return gated, weights
