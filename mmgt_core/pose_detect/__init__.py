"""Reference-pose extraction (E_K): one RGB image -> the 134 whole-body keypoints SMGA starts from.

Back ends:

* ``"dwpose"``: the official detector (YOLOX-L + RTMPose ONNX files supplied by the user), see ``dwpose.py``.
* ``"mediapipe"``: an approximate offline fallback (optional ``mediapipe`` extra), see ``mediapipe_fallback.py``.
* ``"auto"``: DWPose when its files are given and present, else MediaPipe when installed, else a WeightsError that
  explains both options.

Keypoints come back as a (134, 3) float32 array of x, y in the input image's pixels and a score. An external
OpenPose POSE_KEYPOINT is converted by ``mmgt_core.keypoints``, not here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..constants import VIDEO_FPS
from ..errors import InputError, WeightsError
from ..keypoints import PoseSequence
from .dwpose import (
    DETECTOR_FILE,
    POSE_FILE,
    SOURCE,
    SUGGESTED_FOLDER,
    DWPoseEstimator,
    DWPoseFiles,
    DWPoseResult,
    PathLike,
    check_image,
)
from .mediapipe_fallback import MEDIAPIPE_VERSION, landmarks_to_134, mediapipe_available, run_mediapipe
from .select import PERSON_RULES, PersonRule, looks_like_a_person

Backend = Literal["auto", "dwpose", "mediapipe"]
BACKENDS: tuple[str, ...] = ("auto", "dwpose", "mediapipe")

__all__ = [
    "BACKENDS",
    "PERSON_RULES",
    "DWPoseEstimator",
    "DWPoseFiles",
    "DWPoseResult",
    "ReferencePoseResult",
    "detect_reference_pose",
    "dwpose_estimator",
    "mediapipe_available",
]

_NO_PERSON_FIX = ("Use a picture that shows one person's head, shoulders and arms "
                  "(MMGT expects a 512×512 upper-body shot).")


@dataclass
class ReferencePoseResult:
    """The reference pose and how it was found."""

    keypoints: np.ndarray  # (134, 3) float32: x, y in pixels of the input image, score
    backend: str  # "dwpose" or "mediapipe"
    num_people: int  # people detected (MediaPipe tracks at most one)
    chosen_index: int  # index of the chosen person in detector order; -1 when no person box was found
    message: str  # one line for the user: what was found and any caveat
    person_found: bool  # a person box was found, or the pose is confident enough to be a person
    width: int  # input image size in pixels
    height: int

    def to_pose_sequence(self, fps: float = VIDEO_FPS) -> PoseSequence:
        """A one-frame PoseSequence on the input image's canvas."""
        return PoseSequence(torch.from_numpy(self.keypoints[None].copy()), self.width, self.height, fps)


def detect_reference_pose(
    image: np.ndarray,
    backend: Backend = "auto",
    dwpose_paths: DWPoseFiles | PathLike | Sequence[PathLike] | None = None,
    *,
    person: PersonRule = "largest",
    providers: Sequence[str] | None = None,
    require_person: bool = True,
) -> ReferencePoseResult:
    """Find the reference pose in an (H, W, 3) uint8 RGB image.

    ``dwpose_paths``: a folder holding ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``, a (detector, pose) pair of
    paths, or a DWPoseFiles. ``person``: "largest" box (default) or "first" (highest score, the official choice).
    ``providers``: onnxruntime execution providers (default CPU). With ``require_person`` (default) an image
    without a person raises InputError instead of returning a guessed pose.
    """
    image = check_image(image)
    if person not in PERSON_RULES:
        raise InputError("person", f"unknown choice {person!r}.", f"Use one of {', '.join(PERSON_RULES)}.")
    chosen_backend, reason = _choose_backend(backend, dwpose_paths)
    if chosen_backend == "dwpose":
        result = _run_dwpose(image, DWPoseFiles.from_any(dwpose_paths), person, providers)
    else:
        result = _run_mediapipe(image)
    if reason:
        result.message = f"{reason} {result.message}"
    if require_person and not result.person_found:
        raise InputError("image", f"no person found in the reference image ({result.message})", _NO_PERSON_FIX)
    return result


def _choose_backend(backend: str, dwpose_paths: object) -> tuple[str, str]:
    """The back end to run and, for "auto" falling back, a sentence saying why."""
    if backend not in BACKENDS:
        raise InputError("backend", f"unknown back end {backend!r}.", f"Use one of {', '.join(BACKENDS)}.")
    files = None if dwpose_paths is None else DWPoseFiles.from_any(dwpose_paths)  # type: ignore[arg-type]
    if backend == "dwpose":
        if files is None:
            raise WeightsError(f"the DWPose back end needs its two model files ({DETECTOR_FILE}, {POSE_FILE}); "
                               f"put them in {SUGGESTED_FOLDER} and select them. Download from {SOURCE}.")
        files.check()
        return "dwpose", ""
    if backend == "mediapipe":
        if not mediapipe_available():
            raise WeightsError(f"the MediaPipe back end needs the optional package mediapipe=={MEDIAPIPE_VERSION} "
                               f"(pip install mediapipe=={MEDIAPIPE_VERSION}); it ships its own models.")
        return "mediapipe", ""
    if files is not None and not files.missing():
        return "dwpose", ""
    if mediapipe_available():
        why = "DWPose files not given" if files is None else "DWPose files not found"
        return "mediapipe", f"{why}, so the approximate MediaPipe fallback was used."
    raise WeightsError(_neither_backend_message(files))


def _neither_backend_message(files: DWPoseFiles | None) -> str:
    looked = "" if files is None else f" (looked for {files.detector} and {files.pose})"
    return (
        f"no reference-pose detector is available{looked}. Either put the DWPose files {DETECTOR_FILE} and "
        f"{POSE_FILE} in {SUGGESTED_FOLDER} (download from {SOURCE}; this is what the official MMGT uses), or "
        f"install the approximate offline fallback with: pip install mediapipe=={MEDIAPIPE_VERSION}."
    )


@functools.lru_cache(maxsize=1)
def _cached_estimator(detector: str, pose: str, providers: tuple[str, ...], stamps: tuple[int, int]
                      ) -> DWPoseEstimator:
    """Keep the last loaded DWPose sessions; ``stamps`` (file mtimes) make a replaced file load again."""
    return DWPoseEstimator(DWPoseFiles(Path(detector), Path(pose)), providers or None)


def dwpose_estimator(dwpose_paths: DWPoseFiles | PathLike | Sequence[PathLike],
                     providers: Sequence[str] | None = None) -> DWPoseEstimator:
    """The loaded DWPose sessions for these files (kept while the files are unchanged); WeightsError if missing."""
    files = DWPoseFiles.from_any(dwpose_paths)
    files.check()
    stamps = (files.detector.stat().st_mtime_ns, files.pose.stat().st_mtime_ns)
    return _cached_estimator(str(files.detector), str(files.pose), tuple(providers or ()), stamps)


def _run_dwpose(image: np.ndarray, files: DWPoseFiles, person: PersonRule,
                providers: Sequence[str] | None) -> ReferencePoseResult:
    estimator = dwpose_estimator(files, providers)
    found = estimator(image, person)
    person_found = found.person_found or looks_like_a_person(found.keypoints)
    return ReferencePoseResult(found.keypoints, "dwpose", found.num_people, found.chosen_index,
                               _dwpose_message(found, person, person_found), person_found,
                               image.shape[1], image.shape[0])


def _dwpose_message(found: DWPoseResult, person: PersonRule, person_found: bool) -> str:
    if found.num_people == 0:
        guess = "a confident" if person_found else "no confident"
        return f"DWPose detected no person box; the whole-image pose estimate gave {guess} body."
    if found.num_people == 1:
        return "DWPose found 1 person."
    which = "largest" if person == "largest" else "highest-scored"
    return (f"DWPose found {found.num_people} people; using the {which} one "
            f"(#{found.chosen_index + 1} by detector score).")


def _run_mediapipe(image: np.ndarray) -> ReferencePoseResult:
    landmarks = run_mediapipe(image)
    height, width = image.shape[:2]
    if landmarks is None:
        return ReferencePoseResult(np.zeros((134, 3), np.float32), "mediapipe", 0, -1,
                                   "MediaPipe found no person.", False, width, height)
    keypoints = landmarks_to_134(landmarks)
    unseen = (["face"] if landmarks.face is None else []) + ([f"{2 - len(landmarks.hands)} hand(s)"]
                                                              if len(landmarks.hands) < 2 else [])
    missing = f" Not seen: {', '.join(unseen)}." if unseen else ""
    message = f"MediaPipe fallback found 1 person (face and feet are approximate).{missing}"
    return ReferencePoseResult(keypoints, "mediapipe", 1, 0, message, looks_like_a_person(keypoints),
                               width, height)
