"""Motion controls node: gesture amplitude per part, temporal smoothing and a silence gate on keypoints."""

from __future__ import annotations

from typing import Any

from mmgt_core.errors import InputError
from mmgt_core.keypoints import PoseSequence
from mmgt_core.motion_controls import (
    MAX_AMPLITUDE,
    PARTS,
    Amplitudes,
    SilenceGate,
    gate_lips,
    lip_opening,
    scale_motion,
    smooth_motion,
    smoothing_window,
)

from .common import KEYPOINTS_INPUT, KEYPOINTS_TYPE, KeypointsWithNotes, audio_to_mono, node_errors

NODE_NAME = "MMGT Motion Controls"
_PART_TIPS = {
    "body": "Body joints' motion (shoulders, arms, torso).",
    "head": "Head turns and nods (head joints and face, around the neck).",
    "lips": "Mouth motion (lips, around the nose).",
    "hands": "Finger and hand motion (around each wrist).",
}


def _amplitude_widget(part: str) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", {"default": 1.0, "min": 0.05, "max": MAX_AMPLITUDE, "step": 0.05,
                      "tooltip": f"{_PART_TIPS[part]} 1 = as generated, 0.5 = half the motion, 2 = twice."})


class MotionControls(KeypointsWithNotes):
    """Steer generated or detected motion: bigger/smaller gestures, less jitter, a resting mouth in pauses."""

    DESCRIPTION = ("Motion controls on keypoints, each off at its default so the output is unchanged: amplitude "
                   "per part (scale body, head, lips and hand motion around the reference pose), smoothing "
                   "(Savitzky–Golay, no lag; 1 ≈ one second), and a silence gate (with the speech connected, "
                   "the lips ease to the closed reference mouth wherever the audio is quieter than the threshold "
                   "for longer than the hang time, and MMGT Sample Video fades the MM-HAA face and lip audio "
                   "attention in the same pauses). Place it between Audio → Pose and Sample Video / Render Pose.")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "keypoints": KEYPOINTS_INPUT,
            **{f"{part}_amplitude": _amplitude_widget(part) for part in PARTS},
            "smoothing": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                    "tooltip": "Temporal smoothing strength: 0 = off, 1 = a one-second window."}),
            "silence_gate": ("BOOLEAN", {"default": False, "tooltip": "Close the mouth where the speech is silent "
                                                                      "(needs the audio input)."}),
            "silence_threshold_db": ("FLOAT", {"default": -35.0, "min": -120.0, "max": -1.0, "step": 1.0,
                                               "tooltip": "Quieter than this (dB below the loudest moment) "
                                                          "counts as silence."}),
            "hang_seconds": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 5.0, "step": 0.05,
                                       "tooltip": "How long the mouth stays free around speech before closing."}),
        }, "optional": {
            "audio": ("AUDIO", {"tooltip": "The speech the keypoints go with (for the silence gate)."}),
            "reference_pose": (KEYPOINTS_TYPE, {"tooltip": "The pose motion is scaled around and whose mouth is "
                                                           "used when closed; default: the first frame."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, body_amplitude: float | None = None, head_amplitude: float | None = None,
                        lips_amplitude: float | None = None, hands_amplitude: float | None = None,
                        smoothing: float | None = None, silence_threshold_db: float | None = None,
                        hang_seconds: float | None = None) -> bool | str:
        """Readable refusals for amplitudes <= 0 and settings out of range (ComfyUI shows the string)."""
        given = {"body": body_amplitude, "head": head_amplitude, "lips": lips_amplitude, "hands": hands_amplitude}
        try:
            Amplitudes(**{part: 1.0 if value is None else float(value) for part, value in given.items()}).check()
            if smoothing is not None:
                smoothing_window(float(smoothing))
            SilenceGate(-35.0 if silence_threshold_db is None else float(silence_threshold_db),
                        0.25 if hang_seconds is None else float(hang_seconds)).check()
        except InputError as exc:
            return f"[{NODE_NAME}] {exc}"
        return True

    def apply(self, keypoints: PoseSequence, body_amplitude: float, head_amplitude: float, lips_amplitude: float,
              hands_amplitude: float, smoothing: float, silence_gate: bool, silence_threshold_db: float,
              hang_seconds: float, audio: dict[str, Any] | None = None,
              reference_pose: PoseSequence | None = None) -> tuple[PoseSequence, str]:
        with node_errors(NODE_NAME):
            amplitudes = Amplitudes(body_amplitude, head_amplitude, lips_amplitude, hands_amplitude)
            out = scale_motion(keypoints, amplitudes, reference_pose)
            out = smooth_motion(out, smoothing)
            notes = [f"amplitudes body {body_amplitude:g}, head {head_amplitude:g}, lips {lips_amplitude:g}, "
                     f"hands {hands_amplitude:g}; smoothing window {smoothing_window(smoothing)} frame(s)"]
            if silence_gate:
                if audio is None:
                    raise InputError("audio", "the silence gate needs the speech.",
                                     "Connect the speech's AUDIO, or switch silence_gate off.")
                wave, rate = audio_to_mono(audio)
                before = lip_opening(out.keypoints.float())
                out, weights = gate_lips(out, wave, rate, SilenceGate(silence_threshold_db, hang_seconds),
                                         reference_pose)
                silent = weights < 0.5
                after = lip_opening(out.keypoints.float())
                if silent.any():
                    notes.append(f"silence gate: {int(silent.sum())} of {len(weights)} frame(s) silent; mean lip "
                                 f"opening there {before[silent].mean():.2f} → {after[silent].mean():.2f} px")
                else:
                    notes.append("silence gate: no silent frames found")
        return out, "\n".join(notes)


NODE_CLASS_MAPPINGS = {"MMGT_MotionControls": MotionControls}
NODE_DISPLAY_NAME_MAPPINGS = {"MMGT_MotionControls": NODE_NAME}
