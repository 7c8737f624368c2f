"""Workflow helpers: fit external poses to the reference body, mix keypoint sequences, change frame rates."""

from __future__ import annotations

from typing import Any

import torch

from mmgt_core.constants import VIDEO_FPS
from mmgt_core.keypoints import PoseSequence
from mmgt_core.keypoints_io import save_sequence
from mmgt_core.pose_align import SOURCES, align_to_reference, blend_keypoints
from mmgt_core.timeline import match_length, resample_frames, resample_keypoints

from . import host
from .common import KEYPOINTS_INPUT, KEYPOINTS_TYPE, POSE_CATEGORY, KeypointsOutput, KeypointsWithNotes, node_errors

FPS_OUT_INPUT = ("FLOAT", {"default": float(VIDEO_FPS), "min": 1.0, "max": 240.0, "step": 0.001,
                           "tooltip": f"Wanted frame rate (MMGT works at {VIDEO_FPS})."})
FRAME_COUNT_INPUT = ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                             "tooltip": "0 keeps the duration; otherwise trim or pad to exactly this many frames "
                                        "(e.g. the audio's frame count)."})


def fit_length(frames: torch.Tensor, frame_count: int, notes: list[str]) -> torch.Tensor:
    """Trim or pad ``frames`` to ``frame_count`` (0 keeps them as they are), adding a note when that changed them."""
    if not frame_count:
        return frames
    fitted, note = match_length(frames, frame_count)
    if note:
        notes.append(note)
    return fitted


class AlignKeypoints(KeypointsWithNotes):
    DESCRIPTION = ("Fits external keypoints (another person, another framing) onto the reference person's body: "
                   "one scale (shoulder width) and shift (neck) for the whole sequence, so the motion is kept and "
                   "the face and hands are not distorted. Make the motion masks from the aligned keypoints.")
    FUNCTION = "align"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "keypoints": KEYPOINTS_INPUT,
            "reference_pose": (KEYPOINTS_TYPE, {"tooltip": "The reference person's pose (MMGT Reference Pose)."}),
        }}

    def align(self, keypoints: PoseSequence, reference_pose: PoseSequence) -> tuple[PoseSequence, str]:
        with node_errors("MMGT Align Keypoints"):
            aligned, fit = align_to_reference(keypoints, reference_pose)
        note = (f"scale {fit.scale:.3f} (by {fit.measured_by}), neck {tuple(round(v, 1) for v in fit.source_anchor)} "
                f"→ {tuple(round(v, 1) for v in fit.target_anchor)}")
        return aligned, note


class BlendKeypoints(KeypointsOutput):
    DESCRIPTION = ("Mixes two keypoint sequences part by part (body, face, hands): take each part from A, from B, "
                   "or blend them, e.g. SMGA lips and face with hand gestures from an external pose.")
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        part = (list(SOURCES), {"default": "blend", "tooltip": "a, b, or a weighted blend of both."})
        return {"required": {
            "keypoints_a": (KEYPOINTS_TYPE, {"tooltip": "First sequence (e.g. from MMGT Audio → Pose)."}),
            "keypoints_b": (KEYPOINTS_TYPE, {"tooltip": "Second sequence (e.g. aligned external keypoints)."}),
            "weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                 "tooltip": "Share of B where a part is blended."}),
            "body_from": (part[0], {**part[1], "tooltip": "Body joints and feet from a, b or blend."}),
            "face_from": (part[0], {**part[1], "tooltip": "Face landmarks (incl. lips) from a, b or blend."}),
            "hands_from": (part[0], {**part[1], "tooltip": "Hand joints from a, b or blend."}),
        }}

    def blend(self, keypoints_a: PoseSequence, keypoints_b: PoseSequence, weight: float, body_from: str,
              face_from: str, hands_from: str) -> tuple[PoseSequence]:
        with node_errors("MMGT Blend Keypoints"):
            return (blend_keypoints(keypoints_a, keypoints_b, weight, body_from, face_from, hands_from),)


class ResampleFrames:
    DESCRIPTION = ("Changes the frame rate of a frame batch without touching its duration (nearest frame in "
                   "time), e.g. a 30 fps pose video to MMGT's 25 fps, or the output video to any fps; with "
                   "frame_count > 0 it then trims or pads (repeating the last frame) to exactly that many frames.")
    CATEGORY = POSE_CATEGORY
    FUNCTION = "resample"
    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("frames", "fps", "notes")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "frames": ("IMAGE", {"tooltip": "A frame batch, e.g. from Get Video Components."}),
            "fps_in": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 240.0, "step": 0.001,
                                 "tooltip": "Frame rate of the input frames."}),
            "fps_out": FPS_OUT_INPUT,
        }, "optional": {"frame_count": FRAME_COUNT_INPUT}}

    def resample(self, frames: torch.Tensor, fps_in: float, fps_out: float, frame_count: int = 0
                 ) -> tuple[torch.Tensor, float, str]:
        with node_errors("MMGT Resample Frames"):
            out = resample_frames(frames, fps_in, fps_out)
            notes = [f"{frames.shape[0]} frames at {fps_in:g} fps → {out.shape[0]} at {fps_out:g} fps"]
            out = fit_length(out, frame_count, notes)
        return out, fps_out, "\n".join(notes)


class ResampleKeypoints(KeypointsWithNotes):
    DESCRIPTION = ("Puts keypoints on another frame rate (linear interpolation of positions), e.g. 30 fps "
                   "external keypoints onto MMGT's 25 fps; with frame_count > 0 the result has exactly that many "
                   "frames (the last pose is held, or the end is cut).")
    FUNCTION = "resample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "keypoints": KEYPOINTS_INPUT,
            "fps_out": FPS_OUT_INPUT,
        }, "optional": {"frame_count": FRAME_COUNT_INPUT}}

    def resample(self, keypoints: PoseSequence, fps_out: float, frame_count: int = 0) -> tuple[PoseSequence, str]:
        with node_errors("MMGT Resample Keypoints"):
            out = resample_keypoints(keypoints, fps_out)
            notes = [f"{keypoints.num_frames} frames at {keypoints.fps:g} fps → {out.num_frames} at {fps_out:g} fps"]
            if frame_count:
                out = out.with_keypoints(fit_length(out.keypoints, frame_count, notes).contiguous())
        return out, "\n".join(notes)


class SaveKeypoints:
    DESCRIPTION = ("Saves keypoints to ComfyUI's output folder: MMGT .safetensors (exact, reloadable with MMGT Load "
                   "Keypoints) or POSE_KEYPOINT .json (OpenPose JSON for other tools).")
    CATEGORY = POSE_CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "keypoints": KEYPOINTS_INPUT,
            "filename_prefix": ("STRING", {"default": "mmgt/keypoints", "tooltip": "Path under the output folder, "
                                                                                  "without extension."}),
            "format": (["safetensors", "json"], {"default": "safetensors", "tooltip": "safetensors: exact; json: "
                                                 "POSE_KEYPOINT (OpenPose JSON)."}),
        }}

    def save(self, keypoints: PoseSequence, filename_prefix: str, format: str) -> dict[str, Any]:
        with node_errors("MMGT Save Keypoints"):
            path = save_sequence(keypoints, host.output_directory(), filename_prefix, format)
        return {"ui": {"text": [str(path)]}, "result": ()}


NODE_CLASS_MAPPINGS = {
    "MMGT_ResampleKeypoints": ResampleKeypoints,
    "MMGT_SaveKeypoints": SaveKeypoints,
    "MMGT_AlignKeypoints": AlignKeypoints,
    "MMGT_BlendKeypoints": BlendKeypoints,
    "MMGT_ResampleFrames": ResampleFrames,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MMGT_ResampleKeypoints": "MMGT Resample Keypoints",
    "MMGT_SaveKeypoints": "MMGT Save Keypoints",
    "MMGT_AlignKeypoints": "MMGT Align Keypoints",
    "MMGT_BlendKeypoints": "MMGT Blend Keypoints",
    "MMGT_ResampleFrames": "MMGT Resample Frames",
}
