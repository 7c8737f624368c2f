"""DWPose through onnxruntime: YOLOX-L person boxes, then RTMPose whole-body keypoints in the 134-point layout.

The numerics follow the official MMGT copy of DWPose (``src/dwpose/{__init__,wholebody,onnxdet,onnxpose}.py``, from
IDEA-Research/DWPose), so that a 512×512 reference gives the keypoints the official ``audio2vid.py`` feeds to SMGA:

1. RGB → BGR, then resize so the short side is 512 and both sides are multiples of 64 (controlnet_aux
   ``resize_image``: Lanczos-4 when enlarging, area when shrinking). Call this the *detect space*.
2. YOLOX: letterbox into 640×640 (image at the top-left corner, pad value 114, raw BGR 0–255 floats), decode the
   grid (strides 8, 16, 32), score = objectness × person probability, NMS at IoU 0.45 over scores > 0.1, keep
   boxes with score > 0.3, ordered by score.
3. RTMPose on one box: centre and 1.25× padded size, widened to the model's 288:384 aspect, bilinear affine crop
   to 288×384 (black border), normalised with mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375)
   applied to the B, G, R channels in that order (an upstream quirk kept for parity), SimCC arg-max with split
   ratio 2; score = min(max_x, max_y); points whose score is <= 0 get location -1 before rescaling.
4. 133 COCO-WholeBody points → 134: a neck is inserted at 17 (mean of shoulders 5 and 6; score 1 if both
   shoulder scores > 0.3, else 0), then the first 18 points are permuted into OpenPose order.

Deliberate differences from the official code:

* Person choice: ``person="largest"`` (default) picks the biggest box; the official code keeps the first,
  highest-scored, detection (``person="first"``). RTMPose runs only on the chosen box.
* Coordinates are returned in ORIGINAL image pixels: detect-space points are mapped back with the pixel-centre
  rule ``x_orig = (x + 0.5) · W / W_detect − 0.5`` (the inverse of OpenCV's resize sampling). For the intended
  512×512 input the detect space is the image itself, so nothing changes.
* Without any detection the official code runs RTMPose on the whole image; we do the same but report
  ``person_found=False`` so the caller can refuse a pose that is not a person.

Raw coordinates and scores are kept for every point (no thresholding), as in the official ``whole_keypoints``.
The model files are user-supplied; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

from ..constants import KEYPOINT_SCORE_THRESHOLD
from ..errors import InputError, WeightsError
from .select import PersonRule, select_person

DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
SUGGESTED_FOLDER = "models/mmgt/dwpose/"
SOURCE = "the Hugging Face repository yzd-v/DWPose (https://huggingface.co/yzd-v/DWPose)"

DETECT_RESOLUTION = 512
YOLOX_INPUT_SIZE = 640
YOLOX_PAD_VALUE = 114
YOLOX_STRIDES = (8, 16, 32)
NMS_IOU_THRESHOLD = 0.45
CANDIDATE_SCORE_THRESHOLD = 0.1
PERSON_SCORE_THRESHOLD = 0.3
BBOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
POSE_MEAN = np.array([123.675, 116.28, 103.53])
POSE_STD = np.array([58.395, 57.12, 57.375])
NUM_WHOLEBODY_POINTS = 133
# openpose[i] = mmpose_with_neck[OPENPOSE_FROM_MMPOSE[i]] for the first 18 points (neck inserted at 17).
OPENPOSE_FROM_MMPOSE = (0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------------------------------- model files


@dataclass(frozen=True)
class DWPoseFiles:
    """Paths of the two DWPose ONNX files."""

    detector: Path
    pose: Path

    @classmethod
    def from_any(cls, value: DWPoseFiles | PathLike | Sequence[PathLike]) -> DWPoseFiles:
        """Accept a DWPoseFiles, a (detector, pose) pair, or a folder holding both files under their usual names."""
        if isinstance(value, DWPoseFiles):
            return value
        if isinstance(value, (str, Path)):
            folder = Path(value)
            return cls(folder / DETECTOR_FILE, folder / POSE_FILE)
        detector, pose = value
        return cls(Path(detector), Path(pose))

    def missing(self) -> list[Path]:
        """The files that are not there."""
        return [path for path in (self.detector, self.pose) if not path.is_file()]

    def check(self) -> None:
        """Raise WeightsError naming each missing file, where it goes and where it comes from."""
        missing = self.missing()
        if missing:
            raise WeightsError(missing_files_message(missing))


def missing_files_message(missing: Sequence[Path]) -> str:
    """A message for people about missing DWPose files."""
    listed = ", ".join(f"'{path.name}' (looked at {path})" for path in missing)
    return (
        f"DWPose reference-pose model file(s) not found: {listed}. Put {DETECTOR_FILE} (YOLOX-L person detector) "
        f"and {POSE_FILE} (RTMPose whole-body) in {SUGGESTED_FOLDER}; download them from {SOURCE}. "
        "Nothing is downloaded automatically."
    )


# ------------------------------------------------------------------------------------------------------ detect space


def detect_size(height: int, width: int, resolution: int = DETECT_RESOLUTION) -> tuple[int, int]:
    """(height, width) of the detect space: short side scaled to ``resolution``, both rounded to multiples of 64."""
    k = float(resolution) / min(height, width)
    return int(np.round(height * k / 64.0)) * 64, int(np.round(width * k / 64.0)) * 64


def resize_for_detection(image: np.ndarray, resolution: int = DETECT_RESOLUTION) -> np.ndarray:
    """Resize as controlnet_aux ``resize_image`` does (Lanczos-4 to enlarge, area to shrink); same size: unchanged."""
    height, width = image.shape[:2]
    new_h, new_w = detect_size(height, width, resolution)
    if (new_h, new_w) == (height, width):
        return image
    enlarging = resolution > min(height, width)
    interpolation = cv2.INTER_LANCZOS4 if enlarging else cv2.INTER_AREA
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def detect_to_original(points: np.ndarray, detect_wh: tuple[int, int], original_wh: tuple[int, int]) -> np.ndarray:
    """Map (..., 2) detect-space pixel positions to original-image pixels (pixel-centre convention)."""
    scale = np.array(original_wh, dtype=np.float64) / np.array(detect_wh, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) + 0.5) * scale - 0.5


# ------------------------------------------------------------------------------------------------------------ YOLOX


def letterbox_for_yolox(image_bgr: np.ndarray, size: int = YOLOX_INPUT_SIZE) -> tuple[np.ndarray, float]:
    """(3, size, size) float32 network input with the image at the top-left and pad 114; and the resize ratio."""
    height, width = image_bgr.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = int(width * ratio), int(height * ratio)
    canvas = np.full((size, size, 3), YOLOX_PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), ratio


def yolox_grid(size: int = YOLOX_INPUT_SIZE, strides: Sequence[int] = YOLOX_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets (N, 2) as (x, y) and their strides (N, 1), in YOLOX's row-major order, level by level."""
    cells, cell_strides = [], []
    for stride in strides:
        cells_per_side = size // stride
        xs, ys = np.meshgrid(np.arange(cells_per_side), np.arange(cells_per_side))
        cells.append(np.stack((xs, ys), axis=-1).reshape(-1, 2))
        cell_strides.append(np.full((cells_per_side * cells_per_side, 1), stride))
    return np.concatenate(cells), np.concatenate(cell_strides)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS with YOLOX's "+1" pixel areas; returns kept indices, best score first."""
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + 1)
        inter = inter_w * inter_h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


def decode_yolox(raw: np.ndarray, ratio: float, size: int = YOLOX_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (M, 4) x0, y0, x1, y1 in the detector's input image and their scores (M,), best first.

    ``raw`` is one image's (N, 5 + classes) YOLOX output: cell-relative centre, log size, objectness, class
    probabilities. Values are stored as float32 between steps, as the official code does.
    """
    cells, strides = yolox_grid(size)
    if raw.ndim != 2 or raw.shape[0] != len(cells) or raw.shape[1] < 6:
        raise WeightsError(
            f"the DWPose detector returned an output of shape {tuple(raw.shape)}; expected ({len(cells)}, 85) "
            f"for a {size}×{size} YOLOX. Is '{DETECTOR_FILE}' the right file?"
        )
    raw = raw.astype(np.float32)
    centres = ((raw[:, :2] + cells) * strides).astype(np.float32)
    sizes = (np.exp(raw[:, 2:4]) * strides).astype(np.float32)
    person_scores = raw[:, 4] * raw[:, 5]
    boxes = np.concatenate((centres - sizes / 2.0, centres + sizes / 2.0), axis=1).astype(np.float32)
    boxes /= np.float32(ratio)
    candidates = person_scores > CANDIDATE_SCORE_THRESHOLD
    boxes, person_scores = boxes[candidates], person_scores[candidates]
    keep = nms(boxes, person_scores, NMS_IOU_THRESHOLD) if len(boxes) else []
    boxes, person_scores = boxes[keep], person_scores[keep]
    confident = person_scores > PERSON_SCORE_THRESHOLD
    return boxes[confident].astype(np.float64).reshape(-1, 4), person_scores[confident].astype(np.float64)


# ---------------------------------------------------------------------------------------------------------- RTMPose


def box_to_center_scale(box: np.ndarray, padding: float = BBOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) and padded size (w, h) of an x0, y0, x1, y1 box."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    return np.array([x0 + x1, y0 + y1]) * 0.5, np.array([x1 - x0, y1 - y0]) * padding


def widen_to_aspect(scale: np.ndarray, aspect_w_over_h: float) -> np.ndarray:
    """Grow the short dimension of a (w, h) size so that w / h equals the model's aspect."""
    width, height = scale
    if width > height * aspect_w_over_h:
        return np.array([width, width / aspect_w_over_h])
    return np.array([height * aspect_w_over_h, height])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` plus the vector ``a - b`` turned by 90°: the third point that pins down a rotation-free affine."""
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=a.dtype)


def crop_matrix(center: np.ndarray, scale: np.ndarray, out_wh: tuple[int, int]) -> np.ndarray:
    """2×3 affine mapping the box (centre, size) onto an ``out_wh`` crop.

    Built from three float32 point pairs (centre, top-middle, and a third point 90° from them), as mmpose does,
    so that the float32 rounding of the matrix matches the official one.
    """
    out_w, out_h = out_wh
    src_center = np.float32(center)
    src_top = np.float32(center + np.array([0.0, -scale[0] * 0.5]))
    dst_center = np.float32([out_w * 0.5, out_h * 0.5])
    dst_top = np.float32([out_w * 0.5, out_h * 0.5 - out_w * 0.5])
    src = np.stack((src_center, src_top, _third_point(src_center, src_top)))
    dst = np.stack((dst_center, dst_top, _third_point(dst_center, dst_top)))
    return cv2.getAffineTransform(src, dst)


def crop_for_pose(
    image_bgr: np.ndarray, box: np.ndarray, input_wh: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1, 3, h, w) float32 RTMPose input for one box, plus the crop's centre and (aspect-fixed) size."""
    center, scale = box_to_center_scale(box)
    scale = widen_to_aspect(scale, input_wh[0] / input_wh[1])
    crop = cv2.warpAffine(image_bgr, crop_matrix(center, scale, input_wh), input_wh, flags=cv2.INTER_LINEAR)
    normalized = (crop.astype(np.float64) - POSE_MEAN) / POSE_STD
    return normalized.transpose(2, 0, 1)[None].astype(np.float32), center, scale


def decode_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO
) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max locations (K, 2) in crop pixels and scores (K,) from (K, Wx) and (K, Wy) SimCC maps.

    The score is the smaller of the two maxima; where it is <= 0 the location becomes -1 (before the split).
    """
    locs = np.stack((simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)), axis=-1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1))
    locs[scores <= 0.0] = -1
    return locs / np.float32(split_ratio), scores


def crop_to_image(locs: np.ndarray, center: np.ndarray, scale: np.ndarray, input_wh: tuple[int, int]) -> np.ndarray:
    """Map crop-pixel locations (K, 2) back to the image the crop was taken from."""
    return locs / np.asarray(input_wh, dtype=np.float64) * scale + center - scale / 2


def assemble_openpose_134(points: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(134, 3) x, y, score from 133 COCO-WholeBody points: neck inserted at 17, body reordered to OpenPose-18."""
    info = np.concatenate((np.asarray(points, np.float64), np.asarray(scores, np.float64)[:, None]), axis=1)
    neck = info[[5, 6]].mean(axis=0)
    neck[2] = float(info[5, 2] > KEYPOINT_SCORE_THRESHOLD and info[6, 2] > KEYPOINT_SCORE_THRESHOLD)
    with_neck = np.insert(info, 17, neck, axis=0)
    with_neck[:18] = with_neck[list(OPENPOSE_FROM_MMPOSE)]
    return with_neck


# -------------------------------------------------------------------------------------------------------- estimator


@dataclass
class DWPoseResult:
    """One image's DWPose output, in original-image pixels."""

    keypoints: np.ndarray  # (134, 3) float32 x, y, score of the chosen person (or of the whole-image guess)
    boxes: np.ndarray  # (N, 4) person boxes x0, y0, x1, y1, best score first
    box_scores: np.ndarray  # (N,)
    chosen_index: int  # index into boxes; -1 when nothing was detected
    person_found: bool  # False: no box, RTMPose ran on the whole image
    detect_wh: tuple[int, int]  # (width, height) of the detect space

    @property
    def num_people(self) -> int:
        return int(len(self.boxes))


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """The image as an (H, W, 3) uint8 RGB array, or InputError."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(name, f"expected an H×W×3 RGB image, got an array of shape {array.shape}.",
                         "Pass one RGB image (drop alpha, pick one frame of a batch).")
    if array.dtype != np.uint8:
        raise InputError(name, f"expected uint8 pixels, got {array.dtype}.", "Convert to 0–255 uint8 first.")
    if min(array.shape[:2]) < 16:
        raise InputError(name, f"image of {array.shape[1]}×{array.shape[0]} px is too small to find a person.",
                         "Use a reference image of at least 256 px on its short side (512×512 is what MMGT expects).")
    return array


def _open_session(path: Path, providers: Sequence[str] | None, role: str) -> Any:
    import onnxruntime as ort  # imported here so the pack loads even where onnxruntime is broken

    try:
        return ort.InferenceSession(str(path), providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise WeightsError(
            f"could not open the DWPose {role} '{path.name}' ({path}): {exc}. Re-download it from {SOURCE}."
        ) from exc


def _fixed_dims(shape: Sequence[Any]) -> list[int | None]:
    return [dim if isinstance(dim, int) else None for dim in shape]


def _check_detector(session: Any, path: Path) -> None:
    dims = _fixed_dims(session.get_inputs()[0].shape)
    if len(dims) != 4 or any(d not in (None, YOLOX_INPUT_SIZE) for d in dims[2:]):
        raise WeightsError(
            f"'{path.name}' takes input {session.get_inputs()[0].shape}, but the DWPose detector ({DETECTOR_FILE}) "
            f"takes 1×3×{YOLOX_INPUT_SIZE}×{YOLOX_INPUT_SIZE}. Were the detector and pose files swapped?"
        )


def _check_pose_model(session: Any, path: Path) -> tuple[int, int]:
    """The pose model's (width, height) input size, after checking it is a two-output SimCC model."""
    dims = _fixed_dims(session.get_inputs()[0].shape)
    outputs = session.get_outputs()
    if len(dims) != 4 or dims[2] is None or dims[3] is None or len(outputs) != 2:
        raise WeightsError(
            f"'{path.name}' does not look like the DWPose RTMPose model ({POSE_FILE}): input "
            f"{session.get_inputs()[0].shape}, {len(outputs)} output(s); expected 1×3×384×288 and two SimCC outputs. "
            "Were the detector and pose files swapped?"
        )
    for output in outputs:
        points = _fixed_dims(output.shape)[1:2]
        if points and points[0] not in (None, NUM_WHOLEBODY_POINTS):
            raise WeightsError(f"'{path.name}' predicts {points[0]} keypoints; DWPose whole-body predicts "
                               f"{NUM_WHOLEBODY_POINTS}. Use {POSE_FILE} from {SOURCE}.")
    return dims[3], dims[2]


class DWPoseEstimator:
    """Loaded DWPose sessions; call it on an RGB uint8 image to get a DWPoseResult."""

    def __init__(self, files: DWPoseFiles | PathLike | Sequence[PathLike], providers: Sequence[str] | None = None):
        self.files = DWPoseFiles.from_any(files)
        self.files.check()
        self._detector = _open_session(self.files.detector, providers, "detector")
        _check_detector(self._detector, self.files.detector)
        self._pose = _open_session(self.files.pose, providers, "pose model")
        self.pose_input_wh = _check_pose_model(self._pose, self.files.pose)

    def detect_people(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (N, 4) and scores (N,) in the given image's pixels, best score first."""
        net_input, ratio = letterbox_for_yolox(image_bgr)
        raw = self._detector.run(None, {self._detector.get_inputs()[0].name: net_input[None]})[0]
        return decode_yolox(np.asarray(raw)[0], ratio)

    def estimate_pose(self, image_bgr: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """133 whole-body points (133, 2) in the given image's pixels and their scores (133,) for one box."""
        net_input, center, scale = crop_for_pose(image_bgr, box, self.pose_input_wh)
        simcc_x, simcc_y = self._simcc_maps(net_input)
        locs, scores = decode_simcc(simcc_x, simcc_y)
        return crop_to_image(locs, center, scale, self.pose_input_wh), scores

    def _simcc_maps(self, net_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first, second = self._pose.run(None, {self._pose.get_inputs()[0].name: net_input})
        first, second = np.asarray(first)[0], np.asarray(second)[0]
        # The released model returns (simcc_x, simcc_y); tell them apart by length in case an export reorders them.
        x_bins, y_bins = (int(side * SIMCC_SPLIT_RATIO) for side in self.pose_input_wh)
        if x_bins != y_bins and first.shape[-1] == y_bins and second.shape[-1] == x_bins:
            first, second = second, first
        if first.shape[0] != NUM_WHOLEBODY_POINTS:
            raise WeightsError(f"'{self.files.pose.name}' predicted {first.shape[0]} keypoints; DWPose whole-body "
                               f"predicts {NUM_WHOLEBODY_POINTS}. Use {POSE_FILE} from {SOURCE}.")
        return first, second

    def __call__(self, image_rgb: np.ndarray, person: PersonRule = "largest") -> DWPoseResult:
        image_rgb = check_image(image_rgb)
        original_wh = (image_rgb.shape[1], image_rgb.shape[0])
        image_bgr = resize_for_detection(np.ascontiguousarray(image_rgb[..., ::-1]))
        detect_wh = (image_bgr.shape[1], image_bgr.shape[0])
        boxes, box_scores = self.detect_people(image_bgr)
        if len(boxes):
            chosen = select_person(boxes, person)
            box = boxes[chosen]
        else:
            chosen, box = -1, np.array([0.0, 0.0, detect_wh[0], detect_wh[1]])
        points, scores = self.estimate_pose(image_bgr, box)
        keypoints = assemble_openpose_134(points, scores)
        keypoints[:, :2] = detect_to_original(keypoints[:, :2], detect_wh, original_wh)
        boxes_original = boxes * np.tile(np.array(original_wh, np.float64) / detect_wh, 2)
        return DWPoseResult(keypoints.astype(np.float32), boxes_original, box_scores, chosen, len(boxes) > 0,
                            detect_wh)
