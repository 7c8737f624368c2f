"""Keypoint layout, official normalisation, canvas mapping and POSE_KEYPOINT conversion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmgt_core.errors import InputError
from mmgt_core.keypoints import (
    PoseSequence,
    denormalize,
    from_official_feature,
    from_pose_keypoint,
    mask_leg_normalized,
    mask_leg_pixels,
    normalize,
    to_official_feature,
    to_official_pixels,
    to_pose_keypoint,
)
from mmgt_core.keypoints_io import load_keypoints_file, save_keypoints_file


@pytest.fixture(scope="module")
def pose_fixture(fixtures_dir):
    return load_file(fixtures_dir / "pose" / "keypoints.safetensors")


def test_normalization_matches_official(pose_fixture):
    normalized = normalize(pose_fixture["keypoints_px"].reshape(6, 402))
    torch.testing.assert_close(normalized, pose_fixture["keypoints_normalized"], atol=0, rtol=0)
    torch.testing.assert_close(denormalize(normalized), pose_fixture["keypoints_denormalized"], atol=0, rtol=0)
    masked = mask_leg_normalized(pose_fixture["keypoints_normalized"][:1])
    torch.testing.assert_close(masked, pose_fixture["init_feature_mask_leg"], atol=0, rtol=0)


def test_official_feature_round_trip_on_512(pose_fixture):
    sequence = PoseSequence(pose_fixture["keypoints_px"], 512, 512)
    feature = to_official_feature(sequence)
    torch.testing.assert_close(feature, pose_fixture["keypoints_normalized"], atol=0, rtol=0)
    back = from_official_feature(feature, 512, 512)
    torch.testing.assert_close(back.keypoints, pose_fixture["keypoints_denormalized"].reshape(6, 134, 3))


@pytest.mark.parametrize("size", [(448, 256), (256, 448), (640, 384)])
def test_non_square_canvas_maps_short_side_to_512_and_back(pose_fixture, size):
    width, height = size
    keypoints = pose_fixture["keypoints_px"].clone()
    keypoints[..., 0] *= width / 512
    keypoints[..., 1] *= height / 512
    official = to_official_pixels(keypoints, width, height)
    centre = to_official_pixels(torch.tensor([[[width / 2, height / 2, 1.0]]]), width, height)
    torch.testing.assert_close(centre[0, 0, :2], torch.tensor([256.0, 256.0]))
    assert torch.equal(official[..., 2], keypoints[..., 2]), "scores must not be rescaled"
    back = from_official_feature(to_official_feature(PoseSequence(keypoints, width, height)), width, height)
    torch.testing.assert_close(back.keypoints, keypoints, atol=1e-3, rtol=0)


def test_leg_masking_in_pixels_hides_knees_and_ankles(pose_fixture):
    masked = mask_leg_pixels(pose_fixture["keypoints_px"])
    assert masked[:, [9, 10, 12, 13]].abs().sum() == 0
    assert torch.equal(masked[:, 8], pose_fixture["keypoints_px"][:, 8])


@pytest.mark.parametrize("bad, width, match", [
    (torch.zeros(4, 133, 3), 512, "shape"),
    (torch.zeros(0, 134, 3), 512, "no frames"),
    (torch.full((2, 134, 3), float("nan")), 512, "NaN"),
    (torch.zeros(2, 134, 3, dtype=torch.int64), 512, "floating"),
    (torch.zeros(1, 134, 3), 0, "empty"),
])
def test_bad_keypoints_and_a_zero_canvas_are_refused_with_a_reason(bad, width, match):
    with pytest.raises(InputError, match=match):
        PoseSequence(bad, width, 512)


def _person(offset: float, size: float) -> dict:
    body = []
    for k in range(18):
        body += [offset + size * (k % 3) / 2, offset + size * (k // 3) / 6, 1.0]
    return {"pose_keypoints_2d": body, "face_keypoints_2d": [offset + size / 10, offset + size / 10, 1.0] * 70,
            "hand_left_keypoints_2d": [0.0, 0.0, 0.0] * 21, "hand_right_keypoints_2d": None}


def test_pose_keypoint_takes_the_largest_person_and_says_so():
    frames = [{"people": [_person(10, 20), _person(100, 200)], "canvas_width": 512, "canvas_height": 512}]
    sequence, notes = from_pose_keypoint(frames)
    assert sequence.keypoints[0, 0, 0] == pytest.approx(100.0)
    assert any("largest" in n for n in notes)
    assert sequence.keypoints[0, 18:24, 2].abs().sum() == 0, "feet are not in POSE_KEYPOINT"
    assert sequence.keypoints[0, 92:, 2].abs().sum() == 0, "missing hands are invisible"


def test_pose_keypoint_normalized_coordinates_are_scaled_to_the_canvas():
    person = _person(0.1, 0.5)
    frames = [{"people": [person], "canvas_width": 640, "canvas_height": 320}]
    sequence, notes = from_pose_keypoint(frames)
    assert sequence.keypoints[0, 0, 0] == pytest.approx(0.1 * 640)
    assert sequence.keypoints[0, 0, 1] == pytest.approx(0.1 * 320)
    assert any("normalised" in n for n in notes)


def test_pose_keypoint_gaps_repeat_previous_frame():
    frames = [{"people": [_person(100, 200)], "canvas_width": 512, "canvas_height": 512},
              {"people": [], "canvas_width": 512, "canvas_height": 512}]
    sequence, notes = from_pose_keypoint(frames)
    assert torch.equal(sequence.keypoints[0], sequence.keypoints[1])
    assert any("no person" in n for n in notes)


def test_mmgt_to_pose_keypoint_and_back_keeps_visible_points(pose_fixture):
    sequence = PoseSequence(pose_fixture["keypoints_px"], 512, 512)
    frames = to_pose_keypoint(sequence)
    assert len(frames[0]["people"][0]["face_keypoints_2d"]) == 70 * 3
    json.dumps(frames)  # must be plain JSON
    back, _ = from_pose_keypoint(frames)
    visible = sequence.keypoints[..., 2] >= 0.3
    visible[:, 18:24] = False  # feet are dropped by design
    torch.testing.assert_close(back.keypoints[..., :2][visible], sequence.keypoints[..., :2][visible],
                               atol=1e-3, rtol=0)
    assert (back.keypoints[..., 2][~visible] == 0).all()


def test_keypoint_files_round_trip(tmp_path, pose_fixture):
    sequence = PoseSequence(pose_fixture["keypoints_px"], 512, 512, fps=30.0)
    loaded, _ = load_keypoints_file(save_keypoints_file(sequence, tmp_path / "k.safetensors"))
    assert torch.equal(loaded.keypoints, sequence.keypoints) and loaded.fps == 30.0
    np.save(tmp_path / "official.npy", pose_fixture["keypoints_normalized"].numpy())
    official, notes = load_keypoints_file(tmp_path / "official.npy")
    torch.testing.assert_close(official.keypoints, pose_fixture["keypoints_denormalized"].reshape(6, 134, 3))
    np.save(tmp_path / "bad.npy", np.zeros((3, 7)))
    with pytest.raises(InputError, match="shape"):
        load_keypoints_file(tmp_path / "bad.npy")
