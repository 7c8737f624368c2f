"""Video-driven keypoints: following one person through synthetic frames with a detector stand-in (people are
bright rectangles; the pose stand-in puts the points on the box), gap filling, the gap limit, progress, cancel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mmgt_core.errors import Cancelled, InputError
from mmgt_core.pose_detect.track import PersonTracker, fill_gaps, gap_ranges
from mmgt_core.pose_detect.video import detect_video_keypoints

SIZE = 512  # frames are 512×512, so the detect space is the frame itself


class RectangleEstimator:
    """Detector stand-in: every bright blob is a person, scored by area; the pose is spread over the box."""

    def __init__(self) -> None:
        self.pose_calls = 0

    def detect_people(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = (image_bgr.max(axis=2) > 128).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = [(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:count]]
        return np.array(boxes, np.float64).reshape(-1, 4), np.full(len(boxes), 0.9)

    def estimate_pose(self, image_bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.pose_calls += 1
        fractions = np.linspace(0.0, 1.0, 133)
        points = np.stack((box[0] + fractions * (box[2] - box[0]), box[1] + fractions * (box[3] - box[1])), 1)
        return points, np.full(133, 0.9)


def frames_with(people_per_frame: list[list[tuple[int, int, int, int]]]) -> list[np.ndarray]:
    frames = []
    for people in people_per_frame:
        frame = np.zeros((SIZE, SIZE, 3), np.uint8)
        for x0, y0, x1, y1 in people:
            frame[y0:y1, x0:x1] = 255
        frames.append(frame)
    return frames


def walking(frames: int, start_x: int = 60, step: int = 6) -> list[tuple[int, int, int, int]]:
    return [(start_x + step * t, 100, start_x + step * t + 120, 400) for t in range(frames)]


def nose_x(sequence, frame: int) -> float:
    return float(sequence.keypoints[frame, 0, 0])


def test_one_person_is_found_in_every_frame_with_the_video_fps_and_progress():
    steps: list[tuple[int, int]] = []
    sequence, notes = detect_video_keypoints(frames_with([[b] for b in walking(6)]), RectangleEstimator(), 30.0,
                                             progress=lambda s, t: steps.append((s, t)))
    assert sequence.num_frames == 6 and sequence.fps == 30.0 and (sequence.width, sequence.height) == (SIZE, SIZE)
    assert steps == [(i, 6) for i in range(1, 7)]
    xs = [nose_x(sequence, t) for t in range(6)]
    assert np.all(np.diff(xs) > 0), "the keypoints follow the moving person"
    assert "found in 6" in notes[0]


def test_a_bigger_second_person_walking_in_does_not_steal_the_track():
    first = walking(8)
    newcomer = (330, 20, 500, 500)  # bigger than the first person
    people = [[b] if t < 3 else [b, newcomer] for t, b in enumerate(first)]
    estimator = RectangleEstimator()
    sequence, notes = detect_video_keypoints(frames_with(people), estimator, 25.0)
    for t in range(8):
        assert first[t][0] - 1 <= nose_x(sequence, t) <= first[t][2], f"frame {t} jumped to the newcomer"
    assert estimator.pose_calls == 8, "RTMPose runs once per frame, on the followed person only"
    assert any("several people" in n for n in notes)


def test_short_gaps_are_interpolated_and_named():
    boxes = walking(7)
    people = [[b] if t not in (2, 3) else [] for t, b in enumerate(boxes)]
    sequence, notes = detect_video_keypoints(frames_with(people), RectangleEstimator(), 25.0, max_gap=2)
    before, after = nose_x(sequence, 1), nose_x(sequence, 4)
    assert nose_x(sequence, 2) == pytest.approx(before + (after - before) / 3, abs=1e-3)
    assert nose_x(sequence, 3) == pytest.approx(before + 2 * (after - before) / 3, abs=1e-3)
    assert any("2–3" in n for n in notes)


def test_a_person_leaving_for_too_long_is_an_error_naming_the_frames():
    boxes = walking(10)
    people = [[b] if t < 3 else [] for t, b in enumerate(boxes)]
    with pytest.raises(InputError, match=r"frames 3–9 \(0\.12–0\.40 s\)"):
        detect_video_keypoints(frames_with(people), RectangleEstimator(), 25.0, max_gap=4)


def test_someone_else_standing_elsewhere_does_not_fill_in_for_the_person_who_left():
    boxes = walking(6)
    bystander = (380, 300, 420, 380)  # smaller, far away: never the followed person
    people = [[b, bystander] if t < 2 else [bystander] for t, b in enumerate(boxes)]
    with pytest.raises(InputError, match="frames 2–5"):
        detect_video_keypoints(frames_with(people), RectangleEstimator(), 25.0, max_gap=3)


def test_no_person_in_any_frame_is_an_error_and_cancel_stops_at_the_check():
    with pytest.raises(InputError, match="no person"):
        detect_video_keypoints(frames_with([[], []]), RectangleEstimator(), 25.0)

    def cancel_at_third() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Cancelled("stop")

    calls: list[int] = []
    with pytest.raises(Cancelled):
        detect_video_keypoints(frames_with([[b] for b in walking(5)]), RectangleEstimator(), 25.0,
                               check_cancel=cancel_at_third)
    assert len(calls) == 3


def test_tracker_prefers_overlap_to_size_and_gaps_are_found_and_interpolated():
    tracker = PersonTracker()
    assert tracker.choose(np.array([[0, 0, 10, 10], [100, 100, 200, 200]])) == 1  # largest first
    assert tracker.choose(np.array([[0, 0, 300, 300], [105, 100, 205, 200]])) == 1  # overlap beats size
    assert tracker.choose(np.zeros((0, 4))) is None
    assert gap_ranges(np.array([0, 1, 1, 0, 1], bool)) == [(1, 2), (4, 4)]
    points = np.zeros((3, 134, 3), np.float32)
    points[0, :, :] = (0, 0, 1)
    points[2, :, :] = (10, 20, 1)
    filled, _ = fill_gaps(points, np.array([0, 1, 0], bool), max_gap=1)
    np.testing.assert_allclose(filled[1, 0], (5, 10, 1))
