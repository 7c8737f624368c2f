"""Stage-I nodes: load SMGA and WavLM, audio features, reference pose, audio → pose."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmgt_core.audio.notices import audio_notices
from mmgt_core.audio.stage1 import stage1_features
from mmgt_core.audio.waveform import duration_seconds
from mmgt_core.audio.wavlm import WavLMEncoder, load_wavlm
from mmgt_core.constants import SMGA_WINDOW_FRAMES, VIDEO_FPS
from mmgt_core.keypoints import PoseSequence
from mmgt_core.memory import ENCODER_WORKING_BYTES, smga_window_bytes
from mmgt_core.pipeline import pose_from_features, smga_total_steps
from mmgt_core.smga.model import load_smga

from . import host
from .common import (
    AUDIO_CATEGORY,
    KEYPOINTS_INPUT,
    LOGGER,
    KeypointsOutput,
    KeypointsWithNotes,
    ManagedModel,
    ModelLoader,
    audio_to_mono,
    image_to_uint8_frames,
    node_errors,
)
from .model_files import choices, dwpose_paths, dwpose_problems

SMGA_TYPE = "MMGT_SMGA"
WAVLM_TYPE = "MMGT_WAVLM"
STAGE1_AUDIO_TYPE = "MMGT_STAGE1_AUDIO"


@dataclass
class LoadedWavLM:
    """WavLM (with its waveform-normalisation flag) under the host's model management."""

    encoder: WavLMEncoder
    handle: host.ModelHandle


@dataclass
class Stage1Audio:
    """Stage-I audio features (T, 1059) at 25 fps, one row per output video frame."""

    features: torch.Tensor


class LoadSMGA(ModelLoader):
    DESCRIPTION = ("Loads the Stage-I SMGA audio→pose model: the official audio2pose_best_model.pt (its EMA "
                   "weights, opened safely) or an MMGT .safetensors from models/mmgt.")
    RETURN_TYPES = (SMGA_TYPE,)
    RETURN_NAMES = ("smga",)
    COMPONENT = "smga"
    PICK = ("checkpoint", "SMGA weights in models/mmgt: audio2pose_best_model.pt or smga.safetensors.")

    def load(self, checkpoint: str, dtype: str) -> tuple[ManagedModel]:
        _, handle = self.managed("MMGT Load SMGA", load_smga, checkpoint, "SMGA", "diffusion", dtype)
        return (ManagedModel(handle),)


class LoadWavLM(ModelLoader):
    DESCRIPTION = ("Loads WavLM-Large for the Stage-I audio features: the official unilm WavLM-Large.pt "
                   "(converted safely), a converted .safetensors, or a Hugging Face folder in models/mmgt.")
    RETURN_TYPES = (WAVLM_TYPE,)
    RETURN_NAMES = ("wavlm",)
    COMPONENT = "wavlm"
    PICK = ("model", "wavlm/WavLM-Large.pt (official), a converted .safetensors, or a HF folder such as wavlm-large.")

    def load(self, model: str, dtype: str) -> tuple[LoadedWavLM]:
        encoder, handle = self.managed("MMGT Load WavLM", load_wavlm, model, "WavLM", "encoder", dtype,
                                       network=lambda loaded: loaded.model)
        return (LoadedWavLM(encoder, handle),)


class Stage1AudioFeatures:
    DESCRIPTION = ("Computes the Stage-I audio features (WavLM-Large last layer ‖ 35 EDGE librosa features) at "
                   "25 fps for any length of audio; one row per output video frame.")
    CATEGORY = AUDIO_CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = (STAGE1_AUDIO_TYPE, "FLOAT", "INT", "STRING")
    RETURN_NAMES = ("audio_features", "duration_s", "frames", "notes")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "Speech (any rate, any channels; mixed to mono)."}),
            "wavlm": (WAVLM_TYPE, {"tooltip": "From MMGT Load WavLM."}),
        }}

    def encode(self, audio: dict[str, Any], wavlm: LoadedWavLM) -> tuple[Stage1Audio, float, int, str]:
        with node_errors("MMGT Stage-I Audio Features"):
            mono, rate = audio_to_mono(audio)
            duration = duration_seconds(mono.shape[0], rate)
            with host.compute_with([wavlm.handle], stage="Stage-I audio features (WavLM)",
                                   workload=f"{duration:.1f} s of audio", lower=None,
                                   memory_required=ENCODER_WORKING_BYTES):
                features = stage1_features(mono, rate, wavlm.encoder, progress=host.progress_reporter(1),
                                           check_cancel=host.check_cancel)
            notes = audio_notices(mono, rate, stage="I")
        for note in notes:
            LOGGER.warning("[MMGT Stage-I Audio Features] %s", note)
        return (Stage1Audio(features), duration, int(features.shape[0]),
                "\n".join(notes) or f"{duration:.2f} s of audio, {int(features.shape[0])} frames.")


class ReferencePose(KeypointsWithNotes):
    DESCRIPTION = ("Finds the speaker's whole-body keypoints in the reference image (DWPose ONNX files from "
                   "models/mmgt/dwpose, or the optional MediaPipe fallback). Takes the largest person.")
    FUNCTION = "detect"
    RETURN_NAMES = ("reference_pose", "notes")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The reference image (first image of the batch is used)."}),
            "backend": (["auto", "dwpose", "mediapipe"], {"default": "auto", "tooltip": "auto: DWPose when its "
                                                          "two ONNX files are present, else MediaPipe if installed."}),
            "detector": (choices("dwpose_det"), {"tooltip": "DWPose person detector (yolox_l.onnx)."}),
            "pose_model": (choices("dwpose_pose"), {"tooltip": "DWPose whole-body model (dw-ll_ucoco_384.onnx)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, backend: str | None = None, detector: str | None = None,
                        pose_model: str | None = None) -> bool | str:
        if backend not in (None, "auto", "dwpose", "mediapipe"):
            return f"backend '{backend}' is not one of auto, dwpose, mediapipe."
        if backend == "mediapipe" or (backend == "auto" and _auto_falls_back(detector, pose_model)):
            return True
        return dwpose_problems(detector, pose_model)

    def detect(self, image: torch.Tensor, backend: str, detector: str, pose_model: str) -> tuple[PoseSequence, str]:
        from mmgt_core.pose_detect import detect_reference_pose

        with node_errors("MMGT Reference Pose"):
            picture = image_to_uint8_frames(image)[0].numpy()
            dwpose = backend == "dwpose" or (backend == "auto" and not _auto_falls_back(detector, pose_model))
            paths = dwpose_paths(detector, pose_model) if dwpose else None
            result = detect_reference_pose(picture, backend=backend, dwpose_paths=paths)
            keypoints = torch.as_tensor(np.asarray(result.keypoints), dtype=torch.float32)[None]
            sequence = PoseSequence(keypoints, picture.shape[1], picture.shape[0], float(VIDEO_FPS))
        return sequence, result.message


def _auto_falls_back(detector: str | None, pose_model: str | None) -> bool:
    """Backend auto runs MediaPipe when a DWPose file is missing or wrong and MediaPipe is installed."""
    return dwpose_problems(detector, pose_model) is not True and importlib.util.find_spec("mediapipe") is not None


class AudioToPose(KeypointsOutput):
    DESCRIPTION = ("Generates whole-body keypoints from Stage-I audio features with SMGA (DDIM, classifier-free "
                   "guidance), for any audio length: 80-frame windows, each continuing from the previous one. "
                   "Frame 0 is the reference pose, as in the official code.")
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "smga": (SMGA_TYPE, {"tooltip": "From MMGT Load SMGA."}),
            "audio_features": (STAGE1_AUDIO_TYPE, {"tooltip": "From MMGT Stage-I Audio Features."}),
            "reference_pose": KEYPOINTS_INPUT,
            "seed": ("INT", {"default": 42, "min": 0, "max": 2**63 - 1, "tooltip": "Same seed, same motion."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "DDIM steps (official: 50)."}),
            "guidance": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                   "tooltip": "Classifier-free guidance weight (official: 2)."}),
            "overlap": ("INT", {"default": 8, "min": 1, "max": SMGA_WINDOW_FRAMES // 2,
                                "tooltip": f"Frames each {SMGA_WINDOW_FRAMES}-frame window shares with the previous "
                                           "one (seam-free continuation)."}),
            "best_of": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip": "Draw N continuations per window and "
                                                                            "keep the smoothest (slower)."}),
            "smoothing": (["none", "official"], {"default": "none", "tooltip": "official: the cubic-spline "
                                                                              "smoothing of the released script."}),
        }}

    def generate(self, smga: ManagedModel, audio_features: Stage1Audio, reference_pose: PoseSequence, seed: int,
                 steps: int, guidance: float, overlap: int, best_of: int, smoothing: str) -> tuple[PoseSequence]:
        with node_errors("MMGT Audio → Pose"):
            frames = int(audio_features.features.shape[0])
            with host.compute_with([smga.handle], stage="Audio → Pose (SMGA)",
                                   workload=f"{frames} frames, best_of {best_of}", lower="best_of",
                                   memory_required=smga_window_bytes(2 * best_of, smga.dtype)):
                sequence = pose_from_features(
                    smga.module, audio_features.features, reference_pose, seed, steps=steps, guidance=guidance,
                    overlap=overlap, best_of=best_of, smoothing=smoothing, dtype=smga.dtype,
                    progress=host.progress_reporter(smga_total_steps(frames, steps, overlap)),
                    check_cancel=host.check_cancel)
        return (sequence,)


NODE_CLASS_MAPPINGS = {
    "MMGT_LoadSMGA": LoadSMGA,
    "MMGT_LoadWavLM": LoadWavLM,
    "MMGT_Stage1AudioFeatures": Stage1AudioFeatures,
    "MMGT_ReferencePose": ReferencePose,
    "MMGT_AudioToPose": AudioToPose,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MMGT_LoadSMGA": "MMGT Load SMGA",
    "MMGT_LoadWavLM": "MMGT Load WavLM",
    "MMGT_Stage1AudioFeatures": "MMGT Stage-I Audio Features",
    "MMGT_ReferencePose": "MMGT Reference Pose",
    "MMGT_AudioToPose": "MMGT Audio → Pose",
}
