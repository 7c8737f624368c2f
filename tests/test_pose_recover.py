"""Keypoints read back from the pack's own DWPose drawings of the official fixture keypoints: point errors and the
motion masks against those from the true keypoints; other drawing styles are refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmgt_core.errors import InputError
from mmgt_core.keypoints import LEFT_HAND, RIGHT_HAND, PoseSequence, mask_leg_pixels
from mmgt_core.masks import motion_masks
from mmgt_core.pose_recover import LEG_JOINTS, recover_keypoints, recover_pose_sequence
from mmgt_core.render import render_pose_video

BODY_JOINTS = [j for j in range(18) if j not in LEG_JOINTS]


@pytest.fixture(scope="module")
def drawn(fixtures_dir):
    truth = mask_leg_pixels(load_file(fixtures_dir / "pose" / "keypoints.safetensors")["keypoints_px"])
    sequence = PoseSequence(truth, 512, 512)
    frames = render_pose_video(sequence)
    return sequence, recover_pose_sequence(frames)


def point_errors(truth: torch.Tensor, recovered: torch.Tensor, joints: list[int]) -> tuple[np.ndarray, int]:
    """Distances of identified points (score 1) to the truth, and how many drawn points were not identified."""
    errors, missed = [], 0
    for frame in range(truth.shape[0]):
        for joint in joints:
            if truth[frame, joint, 2] < 0.3:
                continue
            if recovered[frame, joint, 2] < 1:
                missed += 1
                continue
            errors.append(float(torch.linalg.norm(recovered[frame, joint, :2] - truth[frame, joint, :2])))
    return np.array(errors), missed


def ious(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.array([float((a[i] * b[i]).sum() / torch.maximum(a[i], b[i]).sum()) for i in range(a.shape[0])])


def test_body_and_hand_points_land_on_the_true_keypoints(drawn):
    truth, recovered = drawn
    body, body_missed = point_errors(truth.keypoints, recovered.keypoints, BODY_JOINTS)
    hands, hands_missed = point_errors(truth.keypoints, recovered.keypoints, [*LEFT_HAND, *RIGHT_HAND])
    assert body_missed == 0 and body.mean() < 1.5 and body.max() < 5
    assert hands.mean() < 2.5 and len(hands) >= 0.5 * (len(hands) + hands_missed)


def test_masks_from_recovered_keypoints_match_the_true_masks(drawn):
    truth, recovered = drawn
    expected, got = motion_masks(truth), motion_masks(recovered)
    assert ious(expected.face_hands, got.face_hands).min() >= 0.9
    assert ious(expected.hands, got.hands).min() >= 0.9
    lips = ious(expected.lips, got.lips)
    assert lips.mean() >= 0.9 and lips.min() >= 0.7  # nostril dots touching the upper lip cost the worst frames


def test_an_empty_frame_gives_no_points_and_progress_is_reported():
    steps: list[tuple[int, int]] = []
    black = np.zeros((2, 64, 64, 3), np.uint8)
    sequence = recover_pose_sequence(black, 30.0, progress=lambda s, t: steps.append((s, t)))
    assert sequence.keypoints.abs().sum() == 0 and sequence.fps == 30.0 and steps == [(1, 2), (2, 2)]


def test_another_drawing_style_is_not_a_dwpose_drawing():
    frame = np.zeros((256, 256, 3), np.uint8)
    for start, end in (((60, 40), (128, 120)), ((128, 120), (200, 60)), ((128, 120), (128, 230))):
        cv2.line(frame, start, end, (200, 200, 200), 5, lineType=cv2.LINE_AA)  # grey anti-aliased stick figure
    with pytest.raises(InputError, match="not a DWPose drawing"):
        recover_keypoints(frame, 3)
    photo = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="frame 0 is not a DWPose drawing"):
        recover_pose_sequence(photo[None])


def test_a_drawing_whose_colours_h264_changed_is_refused_not_misread(drawn, tmp_path):
    import av

    from mmgt_core.media import write_mp4

    truth, _ = drawn
    write_mp4(tmp_path / "pose.mp4", render_pose_video(truth).float() / 255.0, 25.0)
    with av.open(str(tmp_path / "pose.mp4")) as container:
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    with pytest.raises(InputError, match="compression"):
        recover_pose_sequence(decoded)
