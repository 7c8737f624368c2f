"""Read and write keypoint sequences: POSE_KEYPOINT JSON, official .npy features, our safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .constants import VIDEO_FPS
from .errors import InputError
from .files import atomic_write, write_json_atomically
from .keypoints import (
    FEATURE_DIM,
    NUM_KEYPOINTS,
    OFFICIAL_CANVAS,
    PoseSequence,
    from_official_feature,
    from_pose_keypoint,
    to_pose_keypoint,
)

KEYPOINT_FILE_SUFFIXES = (".json", ".npy", ".safetensors")


def load_keypoints_file(path: str | os.PathLike[str], width: int = 0, height: int = 0, fps: float = VIDEO_FPS
                        ) -> tuple[PoseSequence, list[str]]:
    """Load a keypoint sequence; returns it with notes on what was assumed.

    * ``.json``: POSE_KEYPOINT frames (OpenPose JSON list), as written by DWPose nodes.
    * ``.npy``: (T, 134, 3) pixels + score, or the official normalised (T, 402) features (512×512 space).
    * ``.safetensors``: our format, tensor ``keypoints`` (T, 134, 3) with width/height/fps in the metadata.
    ``width``/``height`` (when > 0) give the canvas of files that do not carry it.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError("keypoints file", f"'{file}' does not exist.", "Put the file in ComfyUI's input folder.")
    if file.suffix == ".json":
        return from_pose_keypoint(json.loads(file.read_text()), fps=fps, width=width or None, height=height or None)
    if file.suffix == ".npy":
        return _load_npy(file, width, height, fps)
    if file.suffix == ".safetensors":
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
            keypoints = handle.get_tensor("keypoints").float()
        return PoseSequence(keypoints, int(meta.get("width", width)), int(meta.get("height", height)),
                            float(meta.get("fps", fps))), []
    raise InputError("keypoints file", f"'{file.name}' is not one of {KEYPOINT_FILE_SUFFIXES}.")


def _load_npy(file: Path, width: int, height: int, fps: float) -> tuple[PoseSequence, list[str]]:
    array = np.load(file, allow_pickle=False)
    if array.ndim == 2 and array.shape[1] == FEATURE_DIM:
        notes = ["official normalised (T, 402) features: 512×512 pixel space"]
        return from_official_feature(torch.from_numpy(array).float(), width or OFFICIAL_CANVAS,
                                     height or OFFICIAL_CANVAS, fps), notes
    if array.ndim == 3 and array.shape[1:] == (NUM_KEYPOINTS, 3):
        if not (width and height):
            raise InputError("width/height", f"'{file.name}' holds pixel keypoints without a canvas size.",
                             "Set width and height to the size of the frames the keypoints were taken from.")
        return PoseSequence(torch.from_numpy(array).float(), width, height, fps), []
    raise InputError("keypoints file", f"'{file.name}' has shape {array.shape}; expected (T, 134, 3) or (T, 402).")


def save_keypoints_file(sequence: PoseSequence, path: str | os.PathLike[str]) -> Path:
    """Write a sequence as safetensors (atomically), with its canvas and frame rate in the metadata."""
    target = Path(path)
    with atomic_write(target) as temp:
        save_file({"keypoints": sequence.keypoints.float().contiguous()}, str(temp),
                  metadata={"width": str(sequence.width), "height": str(sequence.height), "fps": str(sequence.fps)})
    return target


def save_sequence(sequence: PoseSequence, folder: str | os.PathLike[str], prefix: str, file_format: str) -> Path:
    """Save under ``folder`` as ``<prefix>_00001.<ext>`` (the next free number); refuses to leave ``folder``."""
    root = Path(folder).resolve()
    stem = (root / prefix).resolve()
    if root not in stem.parents:
        raise InputError("filename_prefix", f"'{prefix}' points outside the output folder.",
                         "Use a relative path such as mmgt/keypoints.")
    suffix = {"safetensors": ".safetensors", "json": ".json"}.get(file_format)
    if suffix is None:
        raise InputError("format", f"unknown format '{file_format}'.", "Use safetensors or json.")
    stem.parent.mkdir(parents=True, exist_ok=True)
    number = 1
    while (target := stem.parent / f"{stem.name}_{number:05d}{suffix}").exists():
        number += 1
    if file_format == "safetensors":
        return save_keypoints_file(sequence, target)
    return write_json_atomically(to_pose_keypoint(sequence), target, indent=None)
