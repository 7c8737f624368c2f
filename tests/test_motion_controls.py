"""Motion controls: identity at the defaults, and each control doing what it says (each test fails when the control
does nothing): amplitude per part, smoothing, the silence gate; and the refusals for settings out of range."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from mmgt_core.errors import InputError
from mmgt_core.keypoints import FACE, LEFT_HAND, LIPS, PoseSequence
from mmgt_core.motion_controls import (
    NECK,
    NOSE_TIP,
    Amplitudes,
    SilenceGate,
    gate_lips,
    lip_opening,
    scale_motion,
    smooth_motion,
    smoothing_window,
    speech_weights,
)
from mmgt_core.tiny_models import synthetic_reference_pose

FRAMES = 50
L_WRIST = 7
INNER_LOWER = [FACE.start + k for k in (65, 66, 67)]


def moving_sequence() -> PoseSequence:
    """Frame 0 is the reference; then the left arm swings, the head nods, the mouth opens and the fingers spread."""
    base = synthetic_reference_pose(512, 512).keypoints[0]
    points = base.repeat(FRAMES, 1, 1)
    phase = torch.sin(torch.linspace(0, 4 * math.pi, FRAMES))[:, None]
    points[:, [6, L_WRIST, *LEFT_HAND], 0] += 30 * phase  # arm (and the hand on it) swings sideways
    points[:, LEFT_HAND.start + 1 : LEFT_HAND.stop, 1] += 8 * phase  # fingers move relative to the wrist
    head = [0, 14, 15, 16, 17, *FACE]
    points[:, head, 1] += 10 * phase  # nod
    points[:, INNER_LOWER, 1] += 6 * phase.abs()  # the mouth opens and closes
    return PoseSequence(points, 512, 512, 25.0)


def test_defaults_change_nothing():
    sequence = moving_sequence()
    assert torch.equal(scale_motion(sequence, Amplitudes()).keypoints, sequence.keypoints)
    assert torch.equal(smooth_motion(sequence, 0.0).keypoints, sequence.keypoints)


def test_body_amplitude_scales_arm_motion_and_the_hand_rides_along():
    sequence = moving_sequence()
    doubled = scale_motion(sequence, Amplitudes(body=2.0)).keypoints
    ref = sequence.keypoints[0]
    motion = sequence.keypoints[:, L_WRIST, 0] - ref[L_WRIST, 0]
    torch.testing.assert_close(doubled[:, L_WRIST, 0] - ref[L_WRIST, 0], 2 * motion, atol=1e-4, rtol=0)
    finger = LEFT_HAND.start + 5
    torch.testing.assert_close(doubled[:, finger] - doubled[:, L_WRIST],
                               sequence.keypoints[:, finger] - sequence.keypoints[:, L_WRIST], atol=1e-4, rtol=0)


def test_hands_amplitude_scales_finger_motion_around_the_wrist_only():
    sequence = moving_sequence()
    halved = scale_motion(sequence, Amplitudes(hands=0.5)).keypoints
    ref = sequence.keypoints[0]
    finger = LEFT_HAND.start + 5
    ref_offset = ref[finger, :2] - ref[L_WRIST, :2]
    local = (sequence.keypoints[:, finger, :2] - sequence.keypoints[:, L_WRIST, :2]) - ref_offset
    new_local = (halved[:, finger, :2] - halved[:, L_WRIST, :2]) - (ref[finger, :2] - ref[L_WRIST, :2])
    assert local.abs().max() > 5
    torch.testing.assert_close(new_local, 0.5 * local, atol=1e-4, rtol=0)
    torch.testing.assert_close(halved[:, L_WRIST], sequence.keypoints[:, L_WRIST])


def test_head_amplitude_scales_the_nod_around_the_neck():
    sequence = moving_sequence()
    calmer = scale_motion(sequence, Amplitudes(head=0.25)).keypoints
    nod = sequence.keypoints[:, NOSE_TIP, 1] - sequence.keypoints[0, NOSE_TIP, 1]
    assert nod.abs().max() > 5
    torch.testing.assert_close(calmer[:, NOSE_TIP, 1] - calmer[0, NOSE_TIP, 1], 0.25 * nod, atol=1e-4, rtol=0)
    torch.testing.assert_close(calmer[:, NECK], sequence.keypoints[:, NECK])


def test_lips_amplitude_scales_mouth_opening():
    sequence = moving_sequence()
    bigger = scale_motion(sequence, Amplitudes(lips=2.0)).keypoints

    def lower_lip_drop(points: torch.Tensor) -> torch.Tensor:  # lower lip height below the nose, vs frame 0
        drop = points[:, INNER_LOWER, 1] - points[:, NOSE_TIP : NOSE_TIP + 1, 1]
        return drop - drop[:1]

    before = lower_lip_drop(sequence.keypoints)
    assert before.abs().max() > 3
    torch.testing.assert_close(lower_lip_drop(bigger), 2 * before, atol=1e-3, rtol=0)
    assert lip_opening(bigger).max() > lip_opening(sequence.keypoints).max() + 2


def test_smoothing_removes_jitter_keeps_steady_motion_and_hidden_frames():
    sequence = moving_sequence()
    generator = torch.Generator().manual_seed(0)
    noisy = sequence.keypoints.clone()
    noisy[..., :2] += torch.randn(noisy[..., :2].shape, generator=generator) * 3
    noisy[10, 30, 2] = 0  # one hidden point: left as it was
    noisy[10, 30, :2] = 0
    smoothed = smooth_motion(sequence.with_keypoints(noisy), 0.5).keypoints

    def jitter(points: torch.Tensor) -> float:
        return float((points[2:, :, :2] - 2 * points[1:-1, :, :2] + points[:-2, :, :2]).abs().mean())

    assert jitter(smoothed) < 0.3 * jitter(noisy)
    assert torch.equal(smoothed[10, 30], noisy[10, 30])
    assert torch.equal(smoothed[..., 2], noisy[..., 2]), "scores are never changed"
    drift = sequence.keypoints[:1].repeat(FRAMES, 1, 1)
    drift[:, :, 0] += torch.arange(FRAMES, dtype=torch.float32)[:, None] * 2  # steady motion is kept exactly
    drift = sequence.with_keypoints(drift)
    torch.testing.assert_close(smooth_motion(drift, 1.0).keypoints, drift.keypoints, atol=1e-3, rtol=0)


def speech_with_a_pause(rate: int = 16000) -> torch.Tensor:
    """0.7 s of tone, 0.8 s of silence, 0.5 s of tone (2 s)."""
    t = torch.arange(2 * rate) / rate
    wave = 0.3 * torch.sin(2 * math.pi * 220 * t)
    wave[int(0.7 * rate) : int(1.5 * rate)] = 0
    return wave


def test_silence_gate_closes_the_mouth_in_pauses_and_leaves_speech_alone():
    sequence = moving_sequence()
    wave = speech_with_a_pause()
    gate = SilenceGate(threshold_db=-35.0, hang_seconds=0.1, ease_seconds=0.08)
    gated, weights = gate_lips(sequence, wave, 16000, gate)
    silent = slice(25, 33)  # 1.0–1.3 s: well inside the pause, past hang and ease
    speech = slice(2, 12)
    assert (weights[silent] == 0).all() and (weights[speech] == 1).all()
    before, after = lip_opening(sequence.keypoints), lip_opening(gated.keypoints)
    assert before[silent].mean() > 3
    assert after[silent].max() < 0.05, "the inner lips meet in the pause"
    torch.testing.assert_close(gated.keypoints[speech], sequence.keypoints[speech])
    outside = [k for k in range(134) if k not in LIPS]
    torch.testing.assert_close(gated.keypoints[:, outside], sequence.keypoints[:, outside])


def test_silence_gate_fades_the_face_and_lip_attention_masks_in_pauses():
    from mmgt_core.video.conditioning import KeypointBranchMasks, keypoints_at_output

    sequence = moving_sequence()
    gated, weights = gate_lips(sequence, speech_with_a_pause(), 16000, SilenceGate(-35.0, 0.1, 0.08))
    np.testing.assert_allclose(gated.speech_weights.numpy(), weights, rtol=1e-6)
    on_output = keypoints_at_output(gated, 256, 256)  # the sampler's move onto the output canvas keeps them
    torch.testing.assert_close(on_output.speech_weights, gated.speech_weights)
    window = torch.arange(FRAMES)
    faded = KeypointBranchMasks(on_output).select(window)
    plain = KeypointBranchMasks(replace(on_output, speech_weights=None)).select(window)
    silent, speech = 28, 5
    for level in range(3):
        assert plain.face[level][silent].max() > 0.5 and plain.lips[level][silent].max() > 0.5
        assert faded.face[level][silent].abs().max() == 0 and faded.lips[level][silent].abs().max() == 0
        torch.testing.assert_close(faded.full[level][silent], torch.ones_like(faded.full[level][silent]))
        for branch in ("full", "face", "lips"):
            torch.testing.assert_close(getattr(faded, branch)[level][speech], getattr(plain, branch)[level][speech])


def test_speech_weights_hang_on_after_speech():
    wave = speech_with_a_pause()
    short = speech_weights(wave, 16000, 25.0, FRAMES, SilenceGate(-35.0, 0.0, 0.0))
    held = speech_weights(wave, 16000, 25.0, FRAMES, SilenceGate(-35.0, 0.2, 0.0))
    assert short[18] == 0 and held[22] == 1 and held[24] == 0  # speech ends in frame 17 (0.7 s); 5 held


@pytest.mark.parametrize("settings", [{"body": 0.0}, {"hands": -1.0}, {"head": 6.0}, {"lips": float("nan")}])
def test_amplitudes_out_of_range_are_refused(settings):
    with pytest.raises(InputError, match="amplitude"):
        scale_motion(moving_sequence(), Amplitudes(**settings))


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_smoothing_out_of_range_is_refused(strength):
    with pytest.raises(InputError, match="smoothing"):
        smoothing_window(strength)


def test_node_refuses_out_of_range_settings_and_gates_the_lips_only_with_speech(comfy_host):
    node = comfy_host["classes"]["MMGT_MotionControls"]
    assert node.VALIDATE_INPUTS(body_amplitude=1.0, smoothing=0.5) is True
    assert "body_amplitude" in node.VALIDATE_INPUTS(body_amplitude=0.0)
    assert "hands_amplitude" in node.VALIDATE_INPUTS(hands_amplitude=-2.0)
    assert "smoothing" in node.VALIDATE_INPUTS(smoothing=2.0)
    sequence = moving_sequence()
    audio = {"waveform": speech_with_a_pause()[None, None], "sample_rate": 16000}
    unchanged, _ = node().apply(sequence, 1.0, 1.0, 1.0, 1.0, 0.0, False, -35.0, 0.25, audio)
    assert torch.equal(unchanged.keypoints, sequence.keypoints)
    gated, notes = node().apply(sequence, 1.0, 1.0, 1.0, 1.0, 0.0, True, -35.0, 0.1, audio)
    assert "silent" in notes and not torch.equal(gated.keypoints, sequence.keypoints)
    with pytest.raises(Exception, match="needs the speech"):
        node().apply(sequence, 1.0, 1.0, 1.0, 1.0, 0.0, True, -35.0, 0.1)
    assert np.isfinite(gated.keypoints.numpy()).all()
