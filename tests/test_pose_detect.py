"""Reference-pose extraction: DWPose numerics on tiny hand-built ONNX models, the 134 assembly, person choice,
the no-person path, missing files, and the MediaPipe landmark mapping (pure numpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmgt_core.errors import InputError, WeightsError
from mmgt_core.pose_detect import ReferencePoseResult, detect_reference_pose
from mmgt_core.pose_detect import dwpose as dw
from mmgt_core.pose_detect import mediapipe_fallback as mpf
from mmgt_core.pose_detect.select import count_confident_body_joints, select_person

try:  # building the tiny stand-in models needs the dev package "onnx"
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    onnx = None
NO_ONNX_REASON = "the tiny DWPose stand-in models need the dev package onnx (pip install -e .[dev])"
needs_onnx = pytest.mark.skipif(onnx is None, reason=NO_ONNX_REASON)


def _require_onnx() -> None:
    """Skip the calling test (here or in another test module) when the model builders cannot run."""
    if onnx is None:
        pytest.skip(NO_ONNX_REASON)

POSE_W, POSE_H = 288, 384
NUM_ANCHORS = sum((640 // s) ** 2 for s in (8, 16, 32))


# ------------------------------------------------------------------------------------------- tiny ONNX model builders


def _save_model(path: Path, nodes: list, inputs: list, outputs: list, initializers: list) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _constant_outputs(path: Path, input_name: str, input_shape: list[int], outputs: dict[str, np.ndarray]) -> Path:
    """A model whose outputs are fixed arrays (plus 0 × mean(input), so the input is really consumed)."""
    _require_onnx()
    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    initializers = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    value_infos = []
    for name, array in outputs.items():
        initializers.append(numpy_helper.from_array(array.astype(np.float32), f"{name}_const"))
        nodes.append(helper.make_node("Add", [f"{name}_const", "nothing"], [name]))
        value_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape)))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)]
    return _save_model(path, nodes, inputs, value_infos, initializers)


def yolox_raw_for_boxes(boxes_640: list[tuple[float, float, float, float]], scores: list[float]) -> np.ndarray:
    """(1, 8400, 85) raw YOLOX output encoding the given letterbox-space boxes (inverse of the grid decode)."""
    raw = np.zeros((1, NUM_ANCHORS, 85), np.float32)
    offsets = np.cumsum([0] + [(640 // s) ** 2 for s in (8, 16, 32)])
    for n, ((x0, y0, x1, y1), score) in enumerate(zip(boxes_640, scores)):
        level, stride = (2, 32) if n % 2 else (1, 16)  # spread boxes over levels; each gets its own cell
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        gx, gy = int(cx // stride), int(cy // stride)
        row = offsets[level] + gy * (640 // stride) + gx
        raw[0, row, :4] = [cx / stride - gx, cy / stride - gy, np.log(w / stride), np.log(h / stride)]
        raw[0, row, 4], raw[0, row, 5] = score, 1.0
    return raw


def make_detector(path: Path, boxes_640=(), scores=()) -> Path:
    raw = yolox_raw_for_boxes(list(boxes_640), list(scores))
    return _constant_outputs(path, "images", [1, 3, 640, 640], {"output": raw})


def make_constant_pose(path: Path, x_bin: int, y_bin: int, peak: float = 0.9) -> Path:
    """RTMPose stand-in: every keypoint's SimCC maps peak at the given bins with value ``peak``."""
    simcc_x = np.full((1, 133, 2 * POSE_W), peak - 1.0, np.float32)
    simcc_y = np.full((1, 133, 2 * POSE_H), peak - 1.0, np.float32)
    simcc_x[..., x_bin], simcc_y[..., y_bin] = peak, peak
    return _constant_outputs(path, "input", [1, 3, POSE_H, POSE_W], {"simcc_x": simcc_x, "simcc_y": simcc_y})


def make_bright_spot_pose(path: Path) -> Path:
    """RTMPose stand-in that "finds" the brightest crop column/row: SimCC = per-column/row max, 2 bins per pixel."""
    _require_onnx()
    nodes, initializers = [], []
    for axis_name, reduce_axes, length in (("x", [1, 2], POSE_W), ("y", [1, 3], POSE_H)):
        nodes += [
            helper.make_node("ReduceMax", ["input"], [f"{axis_name}_line"], axes=reduce_axes, keepdims=0),
            helper.make_node("Unsqueeze", [f"{axis_name}_line", "last_axis"], [f"{axis_name}_col"]),
            helper.make_node("Concat", [f"{axis_name}_col", f"{axis_name}_col"], [f"{axis_name}_pairs"], axis=-1),
            helper.make_node("Reshape", [f"{axis_name}_pairs", f"{axis_name}_shape"], [f"{axis_name}_flat"]),
            helper.make_node("Expand", [f"{axis_name}_flat", f"{axis_name}_full"], [f"simcc_{axis_name}"]),
        ]
        initializers += [numpy_helper.from_array(np.array([1, 1, 2 * length], np.int64), f"{axis_name}_shape"),
                         numpy_helper.from_array(np.array([1, 133, 2 * length], np.int64), f"{axis_name}_full")]
    initializers.append(numpy_helper.from_array(np.array([-1], np.int64), "last_axis"))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, POSE_H, POSE_W])]
    outputs = [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 2 * POSE_W]),
               helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 2 * POSE_H])]
    return _save_model(path, nodes, inputs, outputs, initializers)


def expected_center_from_bins(box, x_bin: int, y_bin: int) -> np.ndarray:
    """Independent recomputation of where a SimCC peak lands for a box: the 1.25-padded, aspect-fixed crop."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) * 1.25, (y1 - y0) * 1.25
    w, h = (w, w / 0.75) if w > h * 0.75 else (h * 0.75, h)
    return np.array([(x0 + x1) / 2 + (x_bin / 2 / POSE_W - 0.5) * w, (y0 + y1) / 2 + (y_bin / 2 / POSE_H - 0.5) * h])


def gray_image(height: int = 512, width: int = 512) -> np.ndarray:
    return np.full((height, width, 3), 90, np.uint8)


# --------------------------------------------------------------------------------------------------- pure functions


def test_detect_space_short_side_512_multiples_of_64():
    assert dw.detect_size(512, 512) == (512, 512)
    assert dw.detect_size(400, 300) == (704, 512)  # 400 * 512/300 = 682.7 -> 11 * 64
    assert dw.detect_size(1080, 1920) == (512, 896)  # 1920 * 512/1080 = 910.2 -> 14 * 64
    image = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    assert dw.resize_for_detection(image) is image
    assert dw.resize_for_detection(gray_image(400, 300)).shape == (704, 512, 3)


def test_letterbox_top_left_with_pad_114():
    net_input, ratio = dw.letterbox_for_yolox(np.zeros((512, 256, 3), np.uint8))
    assert net_input.shape == (3, 640, 640) and net_input.dtype == np.float32
    assert ratio == pytest.approx(1.25)
    assert np.all(net_input[:, :, :320] == 0) and np.all(net_input[:, :, 320:] == 114)


def test_yolox_decode_inverts_the_encoding_and_applies_nms_and_thresholds():
    boxes = [(100.0, 80.0, 300.0, 560.0), (110.0, 90.0, 305.0, 555.0), (400.0, 100.0, 600.0, 400.0),
             (20.0, 20.0, 90.0, 90.0)]
    scores = [0.9, 0.8, 0.6, 0.25]  # box 1 overlaps box 0 (suppressed); box 3 is below the 0.3 person threshold
    raw = yolox_raw_for_boxes(boxes, scores)[0]
    decoded, decoded_scores = dw.decode_yolox(raw, ratio=1.25)
    np.testing.assert_allclose(decoded, np.array([boxes[0], boxes[2]]) / 1.25, atol=1e-3)
    np.testing.assert_allclose(decoded_scores, [0.9, 0.6], atol=1e-6)
    with pytest.raises(WeightsError, match="8400"):
        dw.decode_yolox(raw[:100], ratio=1.0)


def test_simcc_peak_maps_back_to_the_expected_pixel():
    simcc_x = np.full((133, 576), -0.5, np.float32)
    simcc_y = np.full((133, 768), -0.5, np.float32)
    simcc_x[:, 200], simcc_y[:, 500] = 0.8, 0.6
    simcc_x[7], simcc_y[7] = -0.1, -0.2  # no positive response: location -1, score <= 0
    locs, scores = dw.decode_simcc(simcc_x, simcc_y)
    np.testing.assert_allclose(locs[0], [100.0, 250.0])
    assert scores[0] == pytest.approx(0.6)  # the smaller of the two maxima
    np.testing.assert_allclose(locs[7], [-0.5, -0.5])
    box = np.array([50.0, 40.0, 250.0, 440.0])
    center, scale = dw.box_to_center_scale(box)
    scale = dw.widen_to_aspect(scale, POSE_W / POSE_H)
    image_xy = dw.crop_to_image(locs[:1], center, scale, (POSE_W, POSE_H))
    np.testing.assert_allclose(image_xy[0], expected_center_from_bins(box, 200, 500), atol=1e-9)


def test_crop_matrix_puts_the_box_centre_at_the_crop_centre():
    center, scale = np.array([210.5, 333.0]), np.array([150.0, 200.0])
    matrix = dw.crop_matrix(center, scale, (POSE_W, POSE_H))
    np.testing.assert_allclose(matrix @ np.append(center, 1.0), [POSE_W / 2, POSE_H / 2], atol=1e-3)
    np.testing.assert_allclose(matrix[:, :2], np.eye(2) * POSE_W / scale[0], atol=1e-6)  # no rotation, no shear


def test_134_assembly_inserts_neck_and_reorders_to_openpose():
    points = np.arange(133 * 2, dtype=np.float64).reshape(133, 2)
    scores = np.linspace(0.05, 0.95, 133)
    scores[5], scores[6] = 0.9, 0.8
    out = dw.assemble_openpose_134(points, scores)
    assert out.shape == (134, 3)
    np.testing.assert_allclose(out[1, :2], points[[5, 6]].mean(axis=0))
    assert out[1, 2] == 1.0
    # OpenPose <- COCO: 2 R-shoulder <- 6, 4 R-wrist <- 10, 7 L-wrist <- 9, 8 R-hip <- 12, 14 R-eye <- 2, 17 L-ear <- 3
    for openpose, coco in ((0, 0), (2, 6), (4, 10), (5, 5), (7, 9), (8, 12), (11, 11), (14, 2), (15, 1), (17, 3)):
        np.testing.assert_allclose(out[openpose], [*points[coco], scores[coco]])
    np.testing.assert_allclose(out[18:, :2], points[17:])  # feet, face, hands shift by one
    scores[6] = 0.3  # not > 0.3 -> neck invisible
    assert dw.assemble_openpose_134(points, scores)[1, 2] == 0.0


def test_select_person_largest_or_first():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 30, 20], [5, 5, 25, 25]], np.float64)
    assert select_person(boxes, "largest") == 1
    assert select_person(boxes, "first") == 0
    keypoints = np.zeros((134, 3), np.float32)
    keypoints[[1, 2, 5], 2] = 0.9  # the neck does not count
    assert count_confident_body_joints(keypoints) == 2


# -------------------------------------------------------------------------------------- DWPose with tiny ONNX models


@needs_onnx
def test_dwpose_picks_the_largest_person_and_reports_count(tmp_path):
    small, large = (64.0, 64.0, 192.0, 320.0), (320.0, 96.0, 576.0, 608.0)  # letterbox space (512 * 1.25)
    detector = make_detector(tmp_path / "yolox_l.onnx", [small, large], [0.95, 0.7])
    make_constant_pose(tmp_path / "dw-ll_ucoco_384.onnx", x_bin=POSE_W, y_bin=POSE_H)  # crop centre
    result = detect_reference_pose(gray_image(), "dwpose", tmp_path)
    assert isinstance(result, ReferencePoseResult) and result.backend == "dwpose"
    assert result.num_people == 2 and result.chosen_index == 1 and result.person_found
    assert result.keypoints.shape == (134, 3) and result.keypoints.dtype == np.float32
    large_512 = np.array(large) / 1.25
    np.testing.assert_allclose(result.keypoints[0, :2], expected_center_from_bins(large_512, POSE_W, POSE_H),
                               atol=1e-3)
    first = detect_reference_pose(gray_image(), "dwpose", (detector, tmp_path / "dw-ll_ucoco_384.onnx"),
                                  person="first")
    assert first.chosen_index == 0
    np.testing.assert_allclose(first.keypoints[0, :2], (np.array(small[:2]) + small[2:]) / 2 / 1.25, atol=1e-3)
    np.testing.assert_allclose(first.keypoints[0, 2], 0.9, atol=1e-6)


@needs_onnx
def test_dwpose_off_centre_peak_follows_the_padded_crop(tmp_path):
    box = (100.0, 150.0, 300.0, 450.0)
    make_detector(tmp_path / "yolox_l.onnx", [tuple(np.array(box) * 1.25)], [0.9])
    make_constant_pose(tmp_path / "dw-ll_ucoco_384.onnx", x_bin=100, y_bin=700)
    result = detect_reference_pose(gray_image(), "dwpose", tmp_path)
    np.testing.assert_allclose(result.keypoints[5, :2], expected_center_from_bins(box, 100, 700), atol=1e-3)


@needs_onnx
def test_dwpose_no_box_uses_whole_image_and_maps_to_original_pixels(tmp_path):
    make_detector(tmp_path / "yolox_l.onnx")  # detects nobody
    make_bright_spot_pose(tmp_path / "dw-ll_ucoco_384.onnx")
    image = np.zeros((400, 300, 3), np.uint8)  # detect space is 512×704, so coordinates must be mapped back
    image[118:123, 208:213] = 255  # 5×5 white spot centred at (210, 120)
    result = detect_reference_pose(image, "dwpose", tmp_path)
    assert result.num_people == 0 and result.chosen_index == -1
    assert result.person_found  # the stand-in model is "confident" everywhere, so the guess is accepted
    assert "no person box" in result.message
    # The stand-in's arg-max takes the first column/row of the spot's plateau, up to ~2 px before its centre;
    # a wrong mapping back from the 512×704 detect space would be off by tens of pixels.
    np.testing.assert_allclose(result.keypoints[0, :2], [210.0, 120.0], atol=2.5)
    assert (result.width, result.height) == (300, 400)
    sequence = result.to_pose_sequence()
    assert tuple(sequence.keypoints.shape) == (1, 134, 3) and sequence.width == 300


@needs_onnx
def test_dwpose_no_person_raises_input_error(tmp_path):
    make_detector(tmp_path / "yolox_l.onnx")
    make_constant_pose(tmp_path / "dw-ll_ucoco_384.onnx", x_bin=10, y_bin=10, peak=0.1)  # low scores everywhere
    with pytest.raises(InputError, match="no person"):
        detect_reference_pose(gray_image(), "dwpose", tmp_path)
    result = detect_reference_pose(gray_image(), "dwpose", tmp_path, require_person=False)
    assert not result.person_found and result.num_people == 0


def test_missing_dwpose_files_name_file_folder_and_source(tmp_path, monkeypatch):
    with pytest.raises(WeightsError) as error:
        detect_reference_pose(gray_image(), "dwpose", tmp_path)
    message = str(error.value)
    assert "yolox_l.onnx" in message and "dw-ll_ucoco_384.onnx" in message
    assert "models/mmgt/dwpose/" in message and "yzd-v/DWPose" in message
    monkeypatch.setattr("mmgt_core.pose_detect.mediapipe_available", lambda: False)
    with pytest.raises(WeightsError) as neither:
        detect_reference_pose(gray_image(), "auto", tmp_path)
    assert "mediapipe==0.10.21" in str(neither.value) and "models/mmgt/dwpose/" in str(neither.value)


@needs_onnx
def test_swapped_dwpose_files_are_reported(tmp_path):
    detector = make_detector(tmp_path / "det.onnx")
    pose = make_constant_pose(tmp_path / "pose.onnx", 1, 1)
    with pytest.raises(WeightsError, match="swapped"):
        dw.DWPoseEstimator((pose, detector))


@pytest.mark.parametrize("image, backend, problem", [(np.zeros((64, 64, 3), np.float32), "dwpose", "uint8"),
                                                     (np.zeros((64, 64), np.uint8), "dwpose", "H×W×3"),
                                                     (gray_image(), "openpose", "back end")])
def test_bad_image_and_backend_raise_input_error(tmp_path, image, backend, problem):
    with pytest.raises(InputError, match=problem):
        detect_reference_pose(image, backend, tmp_path)


# ------------------------------------------------------------------------------------------------ MediaPipe mapping


def synthetic_holistic(hand_order: str = "left_first") -> mpf.HolisticLandmarks:
    rng = np.random.default_rng(3)
    pose = np.column_stack((rng.uniform(0, 512, (33, 2)), np.full(33, 0.9)))
    mesh = rng.uniform(100, 300, (478, 2))
    left_hand = pose[15, :2] + rng.normal(0, 3, (21, 2))  # near the person's left wrist
    right_hand = pose[16, :2] + rng.normal(0, 3, (21, 2))
    hands = [left_hand, right_hand] if hand_order == "left_first" else [right_hand, left_hand]
    return mpf.HolisticLandmarks(pose=pose, face=mesh, hands=hands)


def test_mediapipe_body_feet_and_neck_mapping():
    landmarks = synthetic_holistic()
    out = mpf.landmarks_to_134(landmarks)
    pose = landmarks.pose
    assert out.shape == (134, 3) and out.dtype == np.float32
    # OpenPose index <- BlazePose index (person's sides): R-shoulder 12, L-wrist 15, R-hip 24, R-eye 5, L-ear 7
    for openpose, blaze in ((0, 0), (2, 12), (4, 16), (5, 11), (7, 15), (8, 24), (13, 27), (14, 5), (17, 7)):
        np.testing.assert_allclose(out[openpose], pose[blaze], atol=1e-4)
    np.testing.assert_allclose(out[1, :2], pose[[11, 12], :2].mean(axis=0), atol=1e-4)
    assert out[1, 2] == 1.0
    np.testing.assert_allclose(out[18:24], pose[[31, 31, 29, 32, 32, 30]], atol=1e-4)
    landmarks.pose[12, 2] = 0.2
    assert mpf.landmarks_to_134(landmarks)[1, 2] == 0.0


def test_mediapipe_face_table_and_hands_by_side():
    table = mpf.FACE_MESH_TO_IBUG68
    assert len(table) == 68 and all(0 <= i < 468 for entry in table for i in entry)
    landmarks = synthetic_holistic()
    out = mpf.landmarks_to_134(landmarks)
    np.testing.assert_allclose(out[24 + 8, :2], landmarks.face[152], atol=1e-4)  # chin
    np.testing.assert_allclose(out[24 + 3, :2], landmarks.face[[132, 58]].mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(out[24 + 48, :2], landmarks.face[61], atol=1e-4)  # right mouth corner
    assert np.all(out[24:92, 2] == 1.0)
    np.testing.assert_allclose(out[92:113, :2], landmarks.hands[0], atol=1e-4)  # person's left hand
    np.testing.assert_allclose(out[113:134, :2], landmarks.hands[1], atol=1e-4)
    swapped = mpf.landmarks_to_134(synthetic_holistic("right_first"))
    np.testing.assert_allclose(swapped, out, atol=1e-6)  # handedness comes from the nearer wrist, not the order


def test_mediapipe_missing_face_and_hand_fall_back_with_zero_score():
    landmarks = synthetic_holistic()
    landmarks.face, landmarks.hands = None, [landmarks.hands[1]]  # only the right hand is seen
    out = mpf.landmarks_to_134(landmarks)
    assert np.all(out[24:92, 2] == 0) and np.allclose(out[24:92, :2], landmarks.pose[0, :2], atol=1e-4)
    assert np.all(out[92:113, 2] == 0) and np.allclose(out[92:113, :2], landmarks.pose[15, :2], atol=1e-4)
    np.testing.assert_allclose(out[113:134, :2], landmarks.hands[0], atol=1e-4)
    assert np.all(out[113:134, 2] == 1)


def test_mediapipe_backend_without_package_is_a_weights_error(monkeypatch):
    monkeypatch.setattr("mmgt_core.pose_detect.mediapipe_available", lambda: False)
    with pytest.raises(WeightsError, match="mediapipe==0.10.21"):
        detect_reference_pose(gray_image(), "mediapipe")


@pytest.mark.skipif(not mpf.mediapipe_available(), reason="optional mediapipe not installed")
def test_mediapipe_runs_offline_and_finds_nobody_in_a_flat_image():
    with pytest.raises(InputError, match="no person"):
        detect_reference_pose(gray_image(), "mediapipe")
