"""Algorithm-1 masks, the mask pyramid and pose drawing against the official fixtures, plus bbox rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmgt_core.errors import InputError
from mmgt_core.keypoints import FACE, LEFT_HAND, PoseSequence, mask_leg_pixels
from mmgt_core.masks import (
    FACE_BLUR_KERNEL,
    MotionMasks,
    blurred_level0,
    keypoint_mask_pyramids,
    latent_level_sizes,
    mask_pyramid,
    motion_mask_pyramids,
    motion_masks,
    official_face_hands_uint8,
    region_boxes,
    to_uint8,
)
from mmgt_core.render import render_pose_video


@pytest.fixture(scope="module")
def official(fixtures_dir):
    keypoints = load_file(fixtures_dir / "pose" / "keypoints.safetensors")
    images = np.load(fixtures_dir / "pose" / "pose_frames_and_masks_512.npz")
    levels = load_file(fixtures_dir / "pose" / "inference_masks_512.safetensors")
    # What the official drawing sees: denormalised keypoints with legs masked in pixel space.
    sequence = PoseSequence(mask_leg_pixels(keypoints["keypoints_denormalized"].reshape(6, 134, 3)), 512, 512)
    return sequence, images, levels


def test_pose_frames_are_pixel_identical(official):
    sequence, images, _ = official
    frames = render_pose_video(sequence, mask_legs=True).numpy()
    assert frames.shape == images["pose_rgb"].shape
    mismatched = (frames != images["pose_rgb"]).any(-1).sum()
    assert mismatched == 0, f"{mismatched} pixels differ from the official drawing"


def test_region_masks_equal_the_official_masks(official):
    sequence, images, _ = official
    masks = motion_masks(sequence)
    assert np.array_equal(official_face_hands_uint8(masks).numpy(), images["face_hands_mask_rgb"][..., 0])
    assert np.array_equal(to_uint8(masks.lips).numpy(), images["lips_mask_rgb"][..., 0])
    assert np.array_equal(to_uint8(masks.hands).numpy(), images["hands_mask_rgb"][..., 0])
    assert (official_face_hands_uint8(masks)[4] == 254).any(), "frame 4 overlaps face and hand boxes"


def test_pyramid_matches_official_levels_exactly(official):
    sequence, _, levels = official
    pyramids = motion_mask_pyramids(motion_masks(sequence))
    blurred = blurred_level0(official_face_hands_uint8(motion_masks(sequence)), FACE_BLUR_KERNEL, (64, 64))
    assert np.array_equal(blurred, levels["face_blur64_L"].numpy())
    for k in range(4):
        # Tolerance 1e-6: both sides are uint8/255 in float32, so any real difference is >= 1/255.
        torch.testing.assert_close(pyramids.face_hands[k].reshape(6, -1), levels[f"face_mask_level{k}"],
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(pyramids.lips[k].reshape(6, -1), levels[f"lips_mask_level{k}"], atol=1e-6, rtol=0)


def test_bbox_rules_points_at_zero_and_invisible_points_do_not_count():
    keypoints = torch.zeros(1, 134, 3)
    keypoints[0, 24:30] = torch.tensor([[0.0, 50.0, 1.0], [60.0, 0.0, 1.0], [30.0, 40.0, 1.0],
                                        [80.0, 90.0, 1.0], [500.0, 500.0, 0.29], [0.9, 300.0, 1.0]])
    boxes = region_boxes(keypoints, FACE)
    assert boxes[0].tolist() == [30, 40, 80, 90]
    mask = motion_masks(PoseSequence(keypoints, 128, 128)).face[0]
    assert mask[40:90, 30:80].all() and mask.sum() == 50 * 50, "upper bounds are exclusive"


def test_bbox_all_invisible_and_single_point_give_empty_masks():
    keypoints = torch.zeros(2, 134, 3)
    keypoints[1, 92] = torch.tensor([40.0, 40.0, 1.0])  # one point: a degenerate box
    masks = motion_masks(PoseSequence(keypoints, 64, 64))
    assert masks.face.sum() == 0 and masks.hands.sum() == 0
    assert torch.equal(masks.background, torch.ones(2, 64, 64))


def test_a_missing_hand_adds_no_box_and_overlapping_boxes_are_united():
    keypoints = torch.zeros(1, 134, 3)
    keypoints[0, LEFT_HAND.start : LEFT_HAND.stop, :2] = torch.linspace(10, 30, 21)[:, None]
    keypoints[0, LEFT_HAND.start : LEFT_HAND.stop, 2] = 1
    keypoints[0, 24:92, :2] = torch.linspace(20, 50, 68)[:, None]
    keypoints[0, 24:92, 2] = 1
    masks = motion_masks(PoseSequence(keypoints, 64, 64))
    assert masks.hands[0, 10:30, 10:30].all() and masks.hands.sum() == 400
    assert masks.face_hands.max() == 1 and masks.face_hands.sum() == (masks.face + masks.hands).clamp(max=1).sum()
    assert (official_face_hands_uint8(masks)[0, 25, 25]) == 254


def test_masks_on_a_non_square_canvas_follow_the_latent_grid():
    keypoints = torch.zeros(3, 134, 3)
    keypoints[:, 24:92, 0] = torch.linspace(100, 200, 68)
    keypoints[:, 24:92, 1] = torch.linspace(50, 120, 68)
    keypoints[:, 24:92, 2] = 1
    masks = motion_masks(PoseSequence(keypoints, 448, 256))
    assert masks.face.shape == (3, 256, 448)
    levels = mask_pyramid(masks.face, FACE_BLUR_KERNEL)
    assert [tuple(level.shape[1:]) for level in levels] == [(32, 56), (16, 28), (8, 14), (4, 7)]
    assert levels[0].max() == 1.0 and all(level.max() > 0.5 and level.min() >= 0 for level in levels)
    peak = np.unravel_index(levels[0][0].argmax(), (32, 56))
    assert 6 <= peak[0] <= 15 and 12 <= peak[1] <= 25, "the blurred blob sits where the face box is"
    frames = render_pose_video(PoseSequence(keypoints, 448, 256))
    around_the_face = frames[:, 46:125, 96:205].sum()
    assert frames.shape == (3, 256, 448, 3) and 0 < around_the_face == frames.sum(), "only the face is drawn"


def test_pyramid_refuses_sizes_that_do_not_divide_into_levels():
    with pytest.raises(InputError, match="multiples of 64"):
        latent_level_sizes(500, 512)


def test_all_zero_mask_stays_zero_in_the_pyramid():
    levels = mask_pyramid(torch.zeros(2, 128, 128), 21)
    assert all(level.abs().sum() == 0 for level in levels)


def test_600_identical_frames_blur_alike_and_an_empty_last_frame_stays_empty():
    masks = MotionMasks(face=torch.zeros(600, 64, 64), lips=torch.zeros(600, 64, 64), hands=torch.zeros(600, 64, 64))
    masks.face[:, 16:48, 16:48] = 1
    masks.face[599, :, :] = 0
    level0 = mask_pyramid(masks.face, FACE_BLUR_KERNEL)[0]
    assert level0.shape == (600, 8, 8)
    assert torch.equal(level0[0], level0[598]) and level0[599].sum() == 0


def test_chunked_keypoint_pyramids_equal_full_mask_pyramids(official):
    sequence, _, levels = official
    long_sequence = PoseSequence(sequence.keypoints.repeat(3, 1, 1), 512, 512)
    from_masks = motion_mask_pyramids(motion_masks(long_sequence))
    chunked = keypoint_mask_pyramids(long_sequence, chunk=4)
    for name in ("face_hands", "lips", "hands"):
        for full, part in zip(getattr(from_masks, name), getattr(chunked, name)):
            assert torch.equal(full, part), name
    torch.testing.assert_close(chunked.face_hands[1][:6].reshape(6, -1), levels["face_mask_level1"], atol=1e-6, rtol=0)


def _random_box_masks(frames: int, size: int, seed: int) -> torch.Tensor:
    """(frames, size, size) float masks, one random box per frame (some empty), so every frame differs."""
    rng = np.random.default_rng(seed)
    masks = torch.zeros(frames, size, size)
    for index in range(frames):
        x0, y0 = rng.integers(0, size - 8, 2)
        x1, y1 = x0 + rng.integers(0, size - x0), y0 + rng.integers(0, size - y0)
        masks[index, y0:y1, x0:x1] = 1
    return masks


def test_600_frame_pyramid_equals_frame_by_frame_and_128_frame_runs():
    """Past OpenCV's channel limit (128 in 5.x, 512 in 4.x) the pyramid is the same, bit for bit."""
    masks = _random_box_masks(600, 128, seed=3)
    whole = mask_pyramid(masks, FACE_BLUR_KERNEL)
    runs = [mask_pyramid(masks[i : i + 128], FACE_BLUR_KERNEL) for i in range(0, 600, 128)]
    one_by_one = [mask_pyramid(masks[i : i + 1], FACE_BLUR_KERNEL) for i in range(600)]
    for k in range(4):
        assert whole[k].shape == (600, 128 // 8 // 2**k, 128 // 8 // 2**k)
        assert torch.equal(whole[k], torch.cat([run[k] for run in runs])), f"level {k} vs 128-frame runs"
        assert torch.equal(whole[k], torch.cat([frame[k] for frame in one_by_one])), f"level {k} vs single frames"
    level0 = blurred_level0(to_uint8(masks), FACE_BLUR_KERNEL, (16, 16))
    singles = np.concatenate([blurred_level0(to_uint8(masks[i : i + 1]), FACE_BLUR_KERNEL, (16, 16))
                              for i in range(600)])
    assert level0.shape == (600, 16, 16) and level0.max() == 255
    assert np.array_equal(level0, singles)


def test_opencv_calls_are_sliced_to_the_installed_channel_limit(monkeypatch):
    import mmgt_core.masks as masks_module

    canvas = to_uint8(_random_box_masks(20, 64, seed=4)).numpy().transpose(1, 2, 0).copy()
    reference = masks_module._blur_hwc(canvas, FACE_BLUR_KERNEL, (8, 8))
    assert masks_module._CV_MAX_CHANNELS >= 20, "every OpenCV build takes at least 128 channels"
    monkeypatch.setattr(masks_module, "_CV_MAX_CHANNELS", 7)  # 3 slices: 7 + 7 + 6 channels
    assert np.array_equal(masks_module._blur_hwc(canvas, FACE_BLUR_KERNEL, (8, 8)), reference)
