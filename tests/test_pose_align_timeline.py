"""Pose-driven helpers: alignment to the reference body, part blending, frame-rate changes that keep sync."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mmgt_core.errors import InputError
from mmgt_core.keypoints import PoseSequence
from mmgt_core.pose_align import align_to_reference, blend_keypoints, fit_alignment
from mmgt_core.timeline import match_length, resample_frames, resample_keypoints, source_indices, trim_audio


@pytest.fixture(scope="module")
def speaker(fixtures_dir) -> PoseSequence:
    return PoseSequence(load_file(fixtures_dir / "pose" / "keypoints.safetensors")["keypoints_px"], 512, 512)


def _transformed(sequence: PoseSequence, scale: float, shift: tuple[float, float]) -> PoseSequence:
    keypoints = sequence.keypoints.clone()
    keypoints[..., :2] = keypoints[..., :2] * scale + torch.tensor(shift)
    return PoseSequence(keypoints, 640, 360, 30.0)


def test_alignment_undoes_another_persons_scale_and_position(speaker):
    other = _transformed(speaker, 0.6, (100.0, -40.0))
    aligned, fit = align_to_reference(other, PoseSequence(speaker.keypoints[:1], 512, 512))
    assert fit.measured_by == "shoulders" and fit.scale == pytest.approx(1 / 0.6, rel=0.05)
    assert (aligned.width, aligned.height, aligned.fps) == (512, 512, 30.0)
    neck_error = (aligned.keypoints[0, 1, :2] - speaker.keypoints[0, 1, :2]).norm()
    assert neck_error < 3.0
    visible = speaker.keypoints[..., 2] >= 0.3
    assert (aligned.keypoints[..., :2] - speaker.keypoints[..., :2]).norm(dim=-1)[visible].median() < 8.0


def test_alignment_falls_back_to_neck_nose_and_refuses_empty_poses(speaker):
    no_shoulders = speaker.keypoints.clone()
    no_shoulders[:, [2, 5], 2] = 0
    fit = fit_alignment(PoseSequence(no_shoulders, 512, 512), speaker)
    assert fit.measured_by == "neck-nose"
    with pytest.raises(InputError, match="no visible shoulders"):
        fit_alignment(PoseSequence(torch.zeros(2, 134, 3), 512, 512), speaker)


def test_blend_takes_parts_from_each_side(speaker):
    moved = _transformed(speaker, 1.0, (10.0, 0.0))
    moved = PoseSequence(moved.keypoints, 512, 512)
    mixed = blend_keypoints(speaker, moved, weight=0.5, body_from="a", face_from="b", hands_from="blend")
    assert torch.equal(mixed.keypoints[:, :18], speaker.keypoints[:, :18])
    torch.testing.assert_close(mixed.keypoints[:, 24:92, 0], speaker.keypoints[:, 24:92, 0] + 10)
    torch.testing.assert_close(mixed.keypoints[:, 92:, 0], speaker.keypoints[:, 92:, 0] + 5)
    with pytest.raises(InputError, match="canvas"):
        blend_keypoints(speaker, PoseSequence(speaker.keypoints, 640, 360))


def test_frame_rate_changes_keep_duration_and_order():
    frames = torch.arange(30).float().view(30, 1, 1, 1)
    at25 = resample_frames(frames, 30.0, 25.0)
    assert at25.shape[0] == 25 and at25[0].item() == 0 and at25[-1].item() >= 28
    assert (at25.flatten().diff() >= 0).all()
    assert source_indices(10, 25.0, 50.0).tolist() == [i // 2 for i in range(20)]
    trimmed, note = match_length(at25, 20)
    assert trimmed.shape[0] == 20 and "trimmed 5" in note
    padded, note = match_length(at25, 27)
    assert padded.shape[0] == 27 and torch.equal(padded[-1], at25[-1]) and "padded 2" in note


def test_keypoints_resample_interpolates_positions(speaker):
    at50 = resample_keypoints(PoseSequence(speaker.keypoints, 512, 512, 25.0), 50.0)
    assert at50.num_frames == 12 and at50.fps == 50.0
    midpoint = (speaker.keypoints[0, :, :2] + speaker.keypoints[1, :, :2]) / 2
    torch.testing.assert_close(at50.keypoints[1, :, :2], midpoint)


def test_audio_is_cut_or_padded_to_the_video_duration():
    wave = torch.ones(1, 2, 16000)
    assert trim_audio(wave, 16000, 20, 25.0).shape[-1] == 12800
    padded = trim_audio(wave, 16000, 30, 25.0)
    assert padded.shape[-1] == 19200 and padded[..., 16000:].abs().sum() == 0
