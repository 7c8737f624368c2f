"""Video-driven nodes: keypoints of a real person's video (DWPose, one person followed), or of a pose drawing."""

from __future__ import annotations

from typing import Any

import torch

from mmgt_core.constants import VIDEO_FPS
from mmgt_core.keypoints import PoseSequence
from mmgt_core.pose_detect.track import DEFAULT_MAX_GAP

from . import host
from .common import KeypointsOutput, KeypointsWithNotes, image_to_uint8_frames, node_errors
from .model_files import choices, dwpose_paths, dwpose_problems


class DetectKeypoints(KeypointsWithNotes):
    """DWPose on every frame of a video → MMGT keypoints of one person, at the video's frame rate."""

    DESCRIPTION = ("Video-driven mode: finds one person's whole-body keypoints in every frame of a video (DWPose "
                   "ONNX files from models/mmgt/dwpose). Follows the largest person at the start; someone else "
                   "walking in does not take over. Frames without that person are interpolated up to "
                   "max_gap_frames, longer gaps are an error naming the frames. Keeps the video's fps: resample to "
                   "25 fps next.")
    FUNCTION = "detect"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames of a video of a person, e.g. from Get Video Components."}),
            "fps": ("FLOAT", {"default": float(VIDEO_FPS), "min": 1.0, "max": 240.0, "step": 0.001,
                              "tooltip": "Frame rate of the video (connect Get Video Components' fps)."}),
            "detector": (choices("dwpose_det"), {"tooltip": "DWPose person detector (yolox_l.onnx)."}),
            "pose_model": (choices("dwpose_pose"), {"tooltip": "DWPose whole-body model (dw-ll_ucoco_384.onnx)."}),
            "max_gap_frames": ("INT", {"default": DEFAULT_MAX_GAP, "min": 0, "max": 1000,
                                       "tooltip": "Longest run of frames without the person that is filled by "
                                                  "interpolation; a longer one stops with the frame range."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, detector: str | None = None, pose_model: str | None = None) -> bool | str:
        return dwpose_problems(detector, pose_model)

    def detect(self, images: torch.Tensor, fps: float, detector: str, pose_model: str,
               max_gap_frames: int) -> tuple[PoseSequence, str]:
        from mmgt_core.pose_detect import dwpose_estimator
        from mmgt_core.pose_detect.video import detect_video_keypoints

        with node_errors("MMGT Detect Keypoints"):
            estimator = dwpose_estimator(dwpose_paths(detector, pose_model))
            images = images if images.ndim == 4 else images[None]
            frames = (image_to_uint8_frames(image)[0].numpy() for image in images)  # one at a time: no uint8 video
            sequence, notes = detect_video_keypoints(
                frames, estimator, fps, num_frames=int(images.shape[0]), max_gap=max_gap_frames,
                progress=host.progress_reporter(int(images.shape[0])), check_cancel=host.check_cancel)
        return sequence, "\n".join(notes)


class KeypointsFromPoseVideo(KeypointsOutput):
    """Read keypoints back from a DWPose-style pose video, enough for the motion masks."""

    DESCRIPTION = ("For a pose video without keypoints (a DWPose/OpenPose-style drawing on black): reads back the "
                   "body joints and hand points from their colours, the face region from its white dots and the "
                   "lips region from the mouth dots below the nose, so that MMGT Motion Masks can make real face, "
                   "lip and hand masks. It cannot recover which face dot is which landmark (only the face and lip "
                   "regions are meaningful), knees and ankles, points hidden under others, or scores; hand points "
                   "whose number cannot be told are kept for the hand region only. Needs the drawing's exact "
                   "colours: other drawing styles and H.264-compressed pose videos are refused.")
    FUNCTION = "recover"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "pose_frames": ("IMAGE", {"tooltip": "The pose video's frames (e.g. Get Video Components → images)."}),
            "fps": ("FLOAT", {"default": float(VIDEO_FPS), "min": 1.0, "max": 240.0, "step": 0.001,
                              "tooltip": "Frame rate of the pose video."}),
        }}

    def recover(self, pose_frames: torch.Tensor, fps: float) -> tuple[PoseSequence]:
        from mmgt_core.pose_recover import recover_pose_sequence

        with node_errors("MMGT Keypoints From Pose Video"):
            frames = image_to_uint8_frames(pose_frames)
            sequence = recover_pose_sequence(frames, fps, progress=host.progress_reporter(int(frames.shape[0])),
                                             check_cancel=host.check_cancel)
        return (sequence,)


NODE_CLASS_MAPPINGS = {
    "MMGT_DetectKeypoints": DetectKeypoints,
    "MMGT_KeypointsFromPoseVideo": KeypointsFromPoseVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MMGT_DetectKeypoints": "MMGT Detect Keypoints",
    "MMGT_KeypointsFromPoseVideo": "MMGT Keypoints From Pose Video",
}
