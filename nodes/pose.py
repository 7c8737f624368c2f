"""Pose nodes: draw keypoints, make motion masks, convert POSE_KEYPOINT ⇄ MMGT keypoints."""

from __future__ import annotations

import os
from typing import Any

from mmgt_core.constants import VIDEO_FPS
from mmgt_core.keypoints import POSE_KEYPOINT_FLAVOURS, PoseSequence, from_pose_keypoint, to_pose_keypoint
from mmgt_core.keypoints_io import KEYPOINT_FILE_SUFFIXES, load_keypoints_file
from mmgt_core.masks import motion_masks
from mmgt_core.render import render_pose_video

from . import host
from .common import KEYPOINTS_INPUT, POSE_CATEGORY, KeypointsWithNotes, node_errors, uint8_frames_to_image


class RenderPoseVideo:
    """Draw the keypoints as a DWPose-style pose video."""

    DESCRIPTION = ("Draws MMGT keypoints as DWPose-style pose frames (body limbs, hands, face dots) on a black "
                   "canvas of the keypoints' size; identical to the official drawing at 512×512.")
    CATEGORY = POSE_CATEGORY
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_frames",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "keypoints": KEYPOINTS_INPUT,
            "hide_legs": ("BOOLEAN", {"default": True, "tooltip": "Hide knees and ankles, as the official code "
                                                                  "does (the model was not shown legs)."}),
        }}

    def render(self, keypoints: PoseSequence, hide_legs: bool) -> tuple[Any]:
        with node_errors("MMGT Render Pose"):
            frames = render_pose_video(keypoints, mask_legs=hide_legs,
                                       progress=host.progress_reporter(keypoints.num_frames),
                                       check_cancel=host.check_cancel)
        return (uint8_frames_to_image(frames),)


class MotionMasksNode:
    """Algorithm-1 motion masks from keypoints."""

    DESCRIPTION = ("Builds the MMGT motion masks from keypoints (Algorithm 1 of the paper): boxes around the face, "
                   "the lips and each hand, their face+hands union and the background (1 − face+hands).")
    CATEGORY = POSE_CATEGORY
    FUNCTION = "make_masks"
    RETURN_TYPES = ("MASK", "MASK", "MASK", "MASK")
    RETURN_NAMES = ("face_hands", "lips", "hands", "background")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"keypoints": KEYPOINTS_INPUT}}

    def make_masks(self, keypoints: PoseSequence) -> tuple[Any, ...]:
        with node_errors("MMGT Motion Masks"):
            masks = motion_masks(keypoints)
        return masks.face_hands, masks.lips, masks.hands, masks.background


class PoseKeypointToMMGT(KeypointsWithNotes):
    """POSE_KEYPOINT (OpenPose JSON from a DWPose node) → MMGT keypoints."""

    DESCRIPTION = ("Converts POSE_KEYPOINT to MMGT keypoints. Reads both flavours and says which came in: ComfyUI "
                   "core's SDPose form (feet and scores kept) and the OpenPose JSON of comfyui_controlnet_aux's "
                   "DWPose (no feet: they stay hidden). Takes the largest person at the start and follows that "
                   "person; the face's two extra points (pupils or eye copies) are dropped.")
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "OpenPose-style keypoints, one entry per frame."}),
            "fps": ("FLOAT", {"default": float(VIDEO_FPS), "min": 1.0, "max": 120.0, "step": 0.01,
                              "tooltip": f"Frame rate of the pose frames (MMGT works at {VIDEO_FPS} fps)."}),
        }, "optional": {
            "width": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": "Canvas width in px; 0 takes "
                                                                              "canvas_width from the data."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 8192, "tooltip": "Canvas height in px; 0 takes "
                                                                               "canvas_height from the data."}),
        }}

    def convert(self, pose_keypoint: Any, fps: float, width: int = 0, height: int = 0) -> tuple[Any, str]:
        with node_errors("MMGT POSE_KEYPOINT → Keypoints"):
            sequence, notes = from_pose_keypoint(pose_keypoint, fps=fps, width=width or None, height=height or None)
        return sequence, "\n".join(notes)


class MMGTToPoseKeypoint:
    """MMGT keypoints → POSE_KEYPOINT."""

    DESCRIPTION = ("Converts MMGT keypoints to POSE_KEYPOINT for other pose tools. openpose (controlnet_aux): feet "
                   "dropped, pupils synthesised from the eye contours, hidden points written as 0, 0, 0. sdpose "
                   "(ComfyUI core's form, e.g. for SDPose Draw Keypoints): pixels, feet and every score kept.")
    CATEGORY = POSE_CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = ("POSE_KEYPOINT",)
    RETURN_NAMES = ("pose_keypoint",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "keypoints": KEYPOINTS_INPUT,
            "normalized": ("BOOLEAN", {"default": False, "tooltip": "Write coordinates in [0, 1] instead of "
                                                                    "pixels (openpose flavour only)."}),
        }, "optional": {
            "flavour": (list(POSE_KEYPOINT_FLAVOURS), {"default": "openpose", "tooltip": "openpose: "
                        "controlnet_aux's OpenPose JSON (no feet). sdpose: ComfyUI core's form (feet, raw scores)."}),
        }}

    def convert(self, keypoints: PoseSequence, normalized: bool, flavour: str = "openpose") -> tuple[Any]:
        with node_errors("MMGT Keypoints → POSE_KEYPOINT"):
            return (to_pose_keypoint(keypoints, normalized=normalized, flavour=flavour),)


class LoadKeypoints(KeypointsWithNotes):
    """Load a keypoint sequence file from ComfyUI's input folder."""

    DESCRIPTION = ("Loads keypoints from the input folder: POSE_KEYPOINT .json (OpenPose JSON), official "
                   ".npy features (T×402, normalised) or pixel keypoints (T×134×3), or MMGT .safetensors.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        files = [f for f in host.list_input_files() if f.endswith(KEYPOINT_FILE_SUFFIXES)]
        return {"required": {
            "file": (files, {"tooltip": "A keypoints file in ComfyUI's input folder (.json, .npy, .safetensors)."}),
            "width": ("INT", {"default": 512, "min": 0, "max": 8192, "tooltip": "Canvas width in px for files that "
                                                                                "do not store it."}),
            "height": ("INT", {"default": 512, "min": 0, "max": 8192, "tooltip": "Canvas height in px for files "
                                                                                 "that do not store it."}),
            "fps": ("FLOAT", {"default": float(VIDEO_FPS), "min": 1.0, "max": 120.0, "step": 0.01,
                              "tooltip": f"Frame rate of the keypoints (MMGT works at {VIDEO_FPS} fps)."}),
        }}

    def load(self, file: str, width: int, height: int, fps: float) -> tuple[Any, str]:
        with node_errors("MMGT Load Keypoints"):
            sequence, notes = load_keypoints_file(os.path.join(host.input_directory(), file), width, height, fps)
        return sequence, "\n".join(notes)


NODE_CLASS_MAPPINGS = {
    "MMGT_LoadKeypoints": LoadKeypoints,
    "MMGT_RenderPose": RenderPoseVideo,
    "MMGT_MotionMasks": MotionMasksNode,
    "MMGT_PoseKeypointToMMGT": PoseKeypointToMMGT,
    "MMGT_MMGTToPoseKeypoint": MMGTToPoseKeypoint,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MMGT_LoadKeypoints": "MMGT Load Keypoints",
    "MMGT_RenderPose": "MMGT Render Pose",
    "MMGT_MotionMasks": "MMGT Motion Masks",
    "MMGT_PoseKeypointToMMGT": "MMGT POSE_KEYPOINT → Keypoints",
    "MMGT_MMGTToPoseKeypoint": "MMGT Keypoints → POSE_KEYPOINT",
}
