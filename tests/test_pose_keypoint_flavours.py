"""POSE_KEYPOINT in both flavours: controlnet_aux OpenPose JSON (no feet) and ComfyUI core's SDPose form (feet and
raw scores kept), flavour detection, several people, and frames without anyone."""

from __future__ import annotations

import json

import pytest
import torch

from mmgt_core.errors import InputError
from mmgt_core.keypoints import (
    FEET,
    LEFT_HAND,
    RIGHT_HAND,
    PoseSequence,
    from_pose_keypoint,
    pose_keypoint_flavour,
    to_pose_keypoint,
)


def random_person_sequence(frames: int = 3, offset: float = 100.0, size: float = 200.0, seed: int = 0
                           ) -> PoseSequence:
    """Keypoints spread over a ``size`` box at ``offset`` with scores in (0.3, 1] and every point visible."""
    generator = torch.Generator().manual_seed(seed)
    keypoints = torch.rand(frames, 134, 3, generator=generator)
    keypoints[..., :2] = offset + keypoints[..., :2] * size
    keypoints[..., 2] = 0.31 + keypoints[..., 2] * 0.69
    return PoseSequence(keypoints, 512, 384, 25.0)


def merge_people(*per_person_frames: list[dict]) -> list[dict]:
    """Frames holding every given person (in the given order)."""
    return [{**frames[0], "people": [person for frame in frames for person in frame["people"]]}
            for frames in zip(*per_person_frames)]


@pytest.mark.parametrize("people", [1, 3])
def test_sdpose_round_trip_keeps_feet_scores_and_every_point(people):
    sequences = [random_person_sequence(offset=20.0 + 10 * n, size=60.0 + 100 * (n == people - 1), seed=n)
                 for n in range(people)]
    frames = merge_people(*[to_pose_keypoint(s, flavour="sdpose") for s in sequences])
    json.dumps(frames)
    assert pose_keypoint_flavour(frames) == "sdpose"
    person = frames[0]["people"][0]
    assert len(person["foot_keypoints_2d"]) == 6 * 3 and len(person["face_keypoints_2d"]) == 70 * 3
    back, notes = from_pose_keypoint(frames)
    largest = sequences[-1]
    torch.testing.assert_close(back.keypoints, largest.keypoints, atol=1e-4, rtol=0)
    assert back.keypoints[:, FEET.start : FEET.stop, 2].min() > 0.3, "feet are kept"
    assert (back.width, back.height) == (512, 384)
    assert any("sdpose" in n for n in notes) and not any("feet" in n for n in notes)


@pytest.mark.parametrize("people", [1, 2])
def test_openpose_round_trip_drops_feet_and_keeps_the_rest(people):
    sequences = [random_person_sequence(offset=30.0 * n, size=80.0 + 100 * (n == people - 1), seed=n)
                 for n in range(people)]
    frames = merge_people(*[to_pose_keypoint(s) for s in sequences])
    assert pose_keypoint_flavour(frames) == "openpose"
    assert "foot_keypoints_2d" not in frames[0]["people"][0]
    back, notes = from_pose_keypoint(frames)
    expected = sequences[-1].keypoints.clone()
    expected[:, FEET.start : FEET.stop] = 0
    torch.testing.assert_close(back.keypoints, expected, atol=1e-4, rtol=0)
    assert any("feet" in n for n in notes)


def test_sdpose_as_core_writes_it_maps_hands_by_index_not_name():
    """Core's SDPose puts points 92–112 under "hand_right_keypoints_2d"; they must land at 92–112 again."""
    sequence = random_person_sequence(frames=1)
    person = to_pose_keypoint(sequence, flavour="sdpose")[0]["people"][0]
    first_of_92 = [round(float(v), 4) for v in sequence.keypoints[0, LEFT_HAND.start]]
    first_of_113 = [round(float(v), 4) for v in sequence.keypoints[0, RIGHT_HAND.start]]
    assert person["hand_right_keypoints_2d"][:3] == first_of_92
    assert person["hand_left_keypoints_2d"][:3] == first_of_113
    eyes = [round(float(v), 4) for v in sequence.keypoints[0, [14, 15]].reshape(-1)]
    assert person["face_keypoints_2d"][-6:] == eyes, "core appends the body's eyes as face points 68, 69"


def test_sdpose_frame_with_zero_people_repeats_the_previous_pose():
    frames = to_pose_keypoint(random_person_sequence(frames=3), flavour="sdpose")
    frames[1]["people"] = []
    back, notes = from_pose_keypoint(frames)
    assert torch.equal(back.keypoints[1], back.keypoints[0])
    assert not torch.equal(back.keypoints[2], back.keypoints[0])
    assert any("no person" in n for n in notes)
    empty = [{"people": [], "canvas_width": 64, "canvas_height": 64}]
    assert pose_keypoint_flavour(empty) == "openpose"
    with pytest.raises(InputError, match="no person"):
        from_pose_keypoint(empty)


def test_a_bigger_newcomer_does_not_take_over_the_followed_person():
    small = random_person_sequence(frames=4, offset=20.0, size=80.0, seed=1)
    big = random_person_sequence(frames=4, offset=250.0, size=120.0, seed=2)
    small_frames = to_pose_keypoint(small, flavour="sdpose")
    big_frames = to_pose_keypoint(big, flavour="sdpose")
    frames = [small_frames[0], small_frames[1]] + merge_people(big_frames[2:], small_frames[2:])
    back, _ = from_pose_keypoint(frames)
    torch.testing.assert_close(back.keypoints, small.keypoints, atol=1e-4, rtol=0)


def test_unknown_flavour_and_normalised_sdpose_are_refused():
    sequence = random_person_sequence(frames=1)
    with pytest.raises(InputError, match="flavour"):
        to_pose_keypoint(sequence, flavour="coco")
    with pytest.raises(InputError, match="pixels"):
        to_pose_keypoint(sequence, normalized=True, flavour="sdpose")
