"""The prepared Stage-II training set: on-disk layout, the manifest, and the step-1 / step-2 example builders.

Layout written by ``training/prepare_dataset.py`` (paths in the manifest are relative to its folder)::

    manifest.json                     every clip with its paths, frame count and samples (see ``Manifest``)
    prepare_summary.json              what was prepared, already done, or skipped (with the reason)
    clips/<id>/frames.bin             the 25 fps frames, each JPEG (or PNG) encoded, concatenated
    clips/<id>/frames.idx.npy         (T + 1,) int64 byte offsets into frames.bin (random access per frame)
    clips/<id>/keypoints.npy          (T, 134, 3) float32 pixel x, y, score on the prepared W x H frames
    clips/<id>/wav2vec.safetensors    "features": (T, layers, hidden) float16 Stage-II audio features
    clips/<id>/clip.json              the clip's record; written last, so its presence means "finished"
    stage1/<id>.npy                   (T, 402) official normalised keypoints (Stage-I / SMGA training input)
    stage1/<id>.wav                   16 kHz mono PCM of the clip (trimmed to T frames)
    stage1/<id>.features.safetensors  "features": (T, D) Stage-I audio features [WavLM || EDGE]

``stage1/`` is exactly what ``training/train_smga.py --data OUT/stage1 --cache-dir OUT/stage1`` reads.
Motion masks and pose images are not stored: both are drawn from the keypoints when an example is built
(Algorithm 1 + the official blur pyramid from ``mmgt_core.masks``, the DWPose drawing from ``mmgt_core.render``),
so they follow every crop exactly and cost no disk space.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset, Sampler

from mmgt_core.audio.wav2vec import audio_context_windows
from mmgt_core.errors import InputError
from mmgt_core.files import write_json_atomically
from mmgt_core.keypoints import PoseSequence, mask_leg_pixels
from mmgt_core.masks import keypoint_mask_pyramids
from mmgt_core.render import draw_pose_frame
from mmgt_core.video.conditioning import BranchMasks, compose_branch_masks, cover_box

from .config import DataSettings

MANIFEST_FORMAT = "mmgt-video-dataset"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
CLIP_RECORD = "clip.json"
FRAMES_BIN = "frames.bin"
FRAMES_INDEX = "frames.idx.npy"
KEYPOINTS_FILE = "keypoints.npy"
WAV2VEC_FILE = "wav2vec.safetensors"
STAGE1_DIR = "stage1"
FRAME_CODECS = ("jpeg", "png")
STAGE2_FIRST_START = 2  # official: n_motion_frames = 2 (= the audio margin) frames before the clip


# ---------------------------------------------------------------------------------------------------------------
# Frames: individually encoded images in one file + an offset index


def encode_frame(rgb: np.ndarray, codec: str = "jpeg", quality: int = 95) -> bytes:
    """One (H, W, 3) uint8 RGB frame as JPEG or PNG bytes."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    if codec == "jpeg":
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif codec == "png":
        ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise InputError("frame_codec", f"unknown codec '{codec}'.", f"Use one of {FRAME_CODECS}.")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} frame as {codec}.")
    return data.tobytes()


def decode_frame(data: bytes) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB."""
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError("frames", "a stored frame could not be decoded (the file is damaged).",
                         "Delete the clip's folder and run prepare_dataset.py again.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class FrameWriter:
    """Appends encoded frames to ``frames.bin``; ``close()`` writes the offset index."""

    def __init__(self, folder: Path, codec: str = "jpeg", quality: int = 95) -> None:
        self.folder, self.codec, self.quality = Path(folder), codec, quality
        self.offsets = [0]
        self._file = open(self.folder / FRAMES_BIN, "wb")  # noqa: SIM115 - closed in close()

    def add(self, rgb: np.ndarray) -> bytes:
        """Encode and append one frame; returns its bytes (so a repeated frame can be re-added cheaply)."""
        data = encode_frame(rgb, self.codec, self.quality)
        self.add_encoded(data)
        return data

    def add_encoded(self, data: bytes) -> None:
        self._file.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def close(self) -> None:
        """Finish the file and write the offset index."""
        self._file.close()
        np.save(self.folder / FRAMES_INDEX, np.asarray(self.offsets, dtype=np.int64))


class FrameReader:
    """Random access to the frames of one prepared clip."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / FRAMES_BIN
        self.offsets = np.load(Path(folder) / FRAMES_INDEX)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` as (n, H, W, 3) uint8 RGB."""
        frames = []
        with open(self.path, "rb") as handle:
            for index in indices:
                start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
                handle.seek(start)
                frames.append(decode_frame(handle.read(stop - start)))
        return np.stack(frames)


# ---------------------------------------------------------------------------------------------------------------
# Manifest


@dataclass
class ClipEntry:
    """One prepared video. ``stage1_windows``: audio-window starts s (keypoints s-1 .. s+78, features s .. s+79);
    ``stage2_starts``: inclusive range of 12-frame clip starts that keep the +-2 audio frames inside the clip."""

    id: str
    source: str
    frames: int
    paths: dict[str, str]
    stage1_windows: list[int] = field(default_factory=list)
    stage2_starts: Optional[list[int]] = None
    person_frames: int = 0
    source_fps: float = 0.0
    source_size: list[int] = field(default_factory=list)


@dataclass
class Manifest:
    """The whole prepared set; ``root`` is the folder paths are relative to (not stored)."""

    width: int
    height: int
    fps: int
    frame_codec: str
    resize_rule: str
    stage1_window: int
    stage1_stride: int
    stage1_feature_dim: int
    wav2vec_layers: int
    wav2vec_hidden: int
    clips: list[ClipEntry]
    root: Path = Path(".")

    def path(self, clip: ClipEntry, key: str) -> Path:
        return self.root / clip.paths[key]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("root")
        clips = data.pop("clips")
        samples = {"stage1_windows": sum(len(c.stage1_windows) for c in self.clips),
                   "stage2_clips": sum(c.stage2_starts is not None for c in self.clips)}
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, **data, "samples": samples, "clips": clips}

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path) -> Manifest:
        if data.get("format") != MANIFEST_FORMAT:
            raise InputError("manifest", f"'{root / MANIFEST_NAME}' is not an MMGT video dataset manifest.",
                             "Point to the manifest.json written by training/prepare_dataset.py.")
        values = {k: v for k, v in data.items() if k not in ("format", "version", "samples", "clips")}
        clips = [ClipEntry(**clip) for clip in data["clips"]]
        return cls(**values, clips=clips, root=root)

    def write(self, path: Path) -> None:
        """Write atomically (temp file + rename)."""
        write_json_atomically(self.to_json(), path)


STEP_FILES = {1: ("frames", "frames_index", "keypoints"), 2: ("frames", "frames_index", "keypoints", "wav2vec")}


def load_manifest(path: str | os.PathLike[str], require: Sequence[str] = ()) -> Manifest:
    """Read a manifest and check that the files named in ``require`` exist for every clip.

    Raises InputError listing the missing files, so a broken data set fails before any model is loaded.
    """
    file = Path(path)
    if file.is_dir():
        file = file / MANIFEST_NAME
    if not file.is_file():
        raise InputError("manifest", f"'{file}' does not exist.",
                         "Run training/prepare_dataset.py first and pass its manifest.json.")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError("manifest", f"'{file}' is not valid JSON ({exc}).", "Run prepare_dataset.py again.") from exc
    manifest = Manifest.from_json(data, file.parent)
    if not manifest.clips:
        raise InputError("manifest", f"'{file}' lists no clips.", "Check prepare_summary.json for skipped videos.")
    missing = [str(manifest.path(clip, key)) for clip in manifest.clips for key in require
               if key not in clip.paths or not manifest.path(clip, key).is_file()]
    if missing:
        shown = "; ".join(missing[:5]) + (f"; ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise InputError("manifest", f"{len(missing)} file(s) named by '{file}' are missing: {shown}.",
                         "Run prepare_dataset.py again on the same output folder (it redoes what is missing), "
                         "or remove those clips from the manifest.")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# Clip access


class PreparedClip:
    """Lazy access to one clip's frames, keypoints and Stage-II audio features."""

    def __init__(self, manifest: Manifest, entry: ClipEntry) -> None:
        self.entry = entry
        self.frames = FrameReader(manifest.path(entry, "frames").parent)
        self.keypoints = np.load(manifest.path(entry, "keypoints"), mmap_mode="r")
        self._wav2vec = manifest.path(entry, "wav2vec") if "wav2vec" in entry.paths else None

    def audio_windows(self, frames: Sequence[int], margin: int) -> torch.Tensor:
        """(len(frames), 2*margin+1, layers, hidden) float32 wav2vec2 windows (clamped at the clip ends)."""
        if self._wav2vec is None:
            raise InputError("manifest", f"clip '{self.entry.id}' has no wav2vec2 features.", "Prepare it again.")
        first, last = max(min(frames) - margin, 0), min(max(frames) + margin, self.entry.frames - 1)
        with safe_open(str(self._wav2vec), framework="pt") as handle:
            part = handle.get_slice("features")[first:last + 1].float()
        return audio_context_windows(part, margin, torch.as_tensor(frames) - first)


# ---------------------------------------------------------------------------------------------------------------
# Geometry: crop box + resize applied identically to frames and keypoints


@dataclass(frozen=True)
class CropBox:
    """A crop (x0, y0, width, height) in source pixels, resized to ``out_size`` (width, height)."""

    x0: float
    y0: float
    width: float
    height: float
    out_size: tuple[int, int]

    def apply_frames(self, frames: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 -> (n, out_h, out_w, 3) uint8 (bilinear, area when shrinking a lot)."""
        out_w, out_h = self.out_size
        x0, y0 = int(round(self.x0)), int(round(self.y0))
        x1, y1 = x0 + int(round(self.width)), y0 + int(round(self.height))
        interpolation = cv2.INTER_AREA if (x1 - x0) > 2 * out_w else cv2.INTER_LINEAR  # area when shrinking a lot
        return np.stack([cv2.resize(np.ascontiguousarray(f[y0:y1, x0:x1]), (out_w, out_h),
                                    interpolation=interpolation) for f in frames])

    def apply_keypoints(self, keypoints: np.ndarray) -> np.ndarray:
        """Pixel keypoints (..., 134, 3) mapped into the output frame (scores unchanged)."""
        out = np.array(keypoints, dtype=np.float32, copy=True)
        out[..., 0] = (out[..., 0] - round(self.x0)) * self.out_size[0] / round(self.width)
        out[..., 1] = (out[..., 1] - round(self.y0)) * self.out_size[1] / round(self.height)
        return out


def full_frame_box(width: int, height: int, out_size: tuple[int, int]) -> CropBox:
    """The centred crop of the output aspect ratio (the whole frame when the aspect ratios agree)."""
    return CropBox(*cover_box(width, height, *out_size), out_size)


def random_resized_crop_box(rng: np.random.Generator, width: int, height: int, out_size: tuple[int, int],
                            scale: tuple[float, float], ratio: tuple[float, float]) -> CropBox:
    """torchvision ``RandomResizedCrop`` box sampling (10 tries, then the centred full crop)."""
    area = width * height
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(*log_ratio)))
        crop_w, crop_h = int(round(np.sqrt(target_area * aspect))), int(round(np.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            x0 = int(rng.integers(0, width - crop_w + 1))
            y0 = int(rng.integers(0, height - crop_h + 1))
            return CropBox(x0, y0, crop_w, crop_h, out_size)
    return full_frame_box(width, height, out_size)


# ---------------------------------------------------------------------------------------------------------------
# Conditions drawn from keypoints


def pose_images(keypoints: np.ndarray, width: int, height: int, mask_legs: bool = True) -> torch.Tensor:
    """DWPose-style pose drawings of (F, 134, 3) pixel keypoints -> (3, F, H, W) float in [0, 1]."""
    points = torch.from_numpy(np.asarray(keypoints, dtype=np.float32))
    if mask_legs:
        points = mask_leg_pixels(points)
    drawn = np.stack([draw_pose_frame(frame, width, height) for frame in points.numpy()])
    return torch.from_numpy(drawn).permute(3, 0, 1, 2).float() / 255.0


def branch_masks_from_keypoints(keypoints: np.ndarray, width: int, height: int, mode: str) -> BranchMasks:
    """MM-HAA branch masks (levels of (F, h*w)) straight from (F, 134, 3) pixel keypoints (Algorithm 1 + blur)."""
    sequence = PoseSequence(torch.from_numpy(np.asarray(keypoints, dtype=np.float32)), width, height)
    pyramids = keypoint_mask_pyramids(sequence)
    return compose_branch_masks(pyramids.face_hands, pyramids.lips, pyramids.hands, mode)


def to_model_pixels(frames: np.ndarray) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float in [-1, 1] (the VAE input)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------------------------
# Examples


def stage2_start_range(frames: int, clip_frames: int = 12, audio_margin: int = 2) -> Optional[tuple[int, int]]:
    """Inclusive range of clip starts keeping frames and the +-margin audio window inside (official bounds)."""
    first = max(STAGE2_FIRST_START, audio_margin)
    last = frames - clip_frames - audio_margin - 1
    return (first, last) if last >= first else None


class _ExampleSource(Dataset):
    """Shared machinery: clips open lazily; example ``n`` is drawn from its own seeded generator."""

    def __init__(self, manifest: Manifest, settings: DataSettings, seed: int, clips: list[ClipEntry]) -> None:
        if not clips:
            raise InputError("manifest", "no clip is long enough for this training step.",
                             "Prepare longer videos (see prepare_summary.json) or lower the clip length.")
        self.manifest, self.settings, self.seed, self.entries = manifest, settings, seed, clips
        self._open: dict[str, PreparedClip] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def clip(self, entry: ClipEntry) -> PreparedClip:
        if entry.id not in self._open:
            self._open[entry.id] = PreparedClip(self.manifest, entry)
        return self._open[entry.id]

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    @property
    def out_size(self) -> tuple[int, int]:
        return self.settings.width, self.settings.height

    def crop_box(self, rng: np.random.Generator, random_crop: bool) -> CropBox:
        width, height = self.manifest.width, self.manifest.height
        if random_crop:
            return random_resized_crop_box(rng, width, height, self.out_size, self.settings.crop_scale,
                                           self.settings.crop_ratio)
        return full_frame_box(width, height, self.out_size)


class ImagePairExamples(_ExampleSource):
    """Step 1: a target frame, its pose drawing, and a reference frame of the same video (>= margin apart)."""

    def __init__(self, manifest: Manifest, settings: DataSettings, seed: int) -> None:
        super().__init__(manifest, settings, seed, [c for c in manifest.clips if c.frames >= 1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        entry = self.entries[int(rng.integers(len(self.entries)))]
        reference, target = reference_and_target(rng, entry.frames, self.settings.reference_margin)
        clip = self.clip(entry)
        box = self.crop_box(rng, self.settings.random_crop)  # one crop for target, pose and reference (official)
        frames = box.apply_frames(clip.frames.read([target, reference]))
        keypoints = box.apply_keypoints(clip.keypoints[target:target + 1])
        width, height = self.out_size
        return {
            "target": to_model_pixels(frames[:1])[0][:, None],  # (3, 1, H, W)
            "pose": pose_images(keypoints, width, height, self.settings.mask_legs),  # (3, 1, H, W)
            "reference": torch.from_numpy(frames[1]),  # (H, W, 3) uint8
        }


def reference_and_target(rng: np.random.Generator, frames: int, margin: int) -> tuple[int, int]:
    """Official ``HumanDanceDataset`` rule: reference anywhere, target at least ``margin`` frames away if possible."""
    margin = min(margin, frames)
    reference = int(rng.integers(frames))
    if reference + margin < frames:
        return reference, int(rng.integers(reference + margin, frames))
    if reference - margin > 0:
        return reference, int(rng.integers(0, reference - margin + 1))
    return reference, int(rng.integers(frames))


class VideoClipExamples(_ExampleSource):
    """Step 2: 12 frames, their pose drawings and branch masks, +-2-frame audio windows, a reference frame."""

    def __init__(self, manifest: Manifest, settings: DataSettings, seed: int) -> None:
        eligible = [c for c in manifest.clips
                    if stage2_start_range(c.frames, settings.clip_frames, settings.audio_margin) is not None]
        super().__init__(manifest, settings, seed, eligible)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        entry = self.entries[int(rng.integers(len(self.entries)))]
        first, last = stage2_start_range(entry.frames, self.settings.clip_frames, self.settings.audio_margin)  # type: ignore[misc]
        start = int(rng.integers(first, last + 1))
        reference = int(rng.integers(first, last + 1))  # official: a random frame of the same video
        window = list(range(start, start + self.settings.clip_frames))
        clip = self.clip(entry)
        box = self.crop_box(rng, self.settings.random_crop)
        frames = box.apply_frames(clip.frames.read([*window, reference]))
        keypoints = box.apply_keypoints(clip.keypoints[start:start + self.settings.clip_frames])
        width, height = self.out_size
        masks = branch_masks_from_keypoints(keypoints, width, height, self.settings.mask_mode)
        return {
            "target": to_model_pixels(frames[:-1]).transpose(0, 1),  # (3, F, H, W)
            "pose": pose_images(keypoints, width, height, self.settings.mask_legs),  # (3, F, H, W)
            "reference": torch.from_numpy(frames[-1]),
            "audio": clip.audio_windows(window, self.settings.audio_margin),  # (F, 5, layers, hidden)
            "masks": {"full": masks.full, "face": masks.face, "lips": masks.lips},
        }


def collate_examples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of examples; mask levels become (B, F, N) tensors."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        if key == "masks":
            batch[key] = {branch: [torch.stack([item["masks"][branch][level] for item in items])
                                   for level in range(len(items[0]["masks"][branch]))]
                          for branch in items[0]["masks"]}
        else:
            batch[key] = torch.stack([item[key] for item in items])
    return batch


def batch_masks(batch_masks_dict: dict[str, list[torch.Tensor]], device: torch.device,
                dtype: torch.dtype) -> BranchMasks:
    """Collated masks as a BranchMasks on a device (each level (B, F, N))."""
    moved = {k: [level.to(device=device, dtype=dtype) for level in v] for k, v in batch_masks_dict.items()}
    return BranchMasks(full=moved["full"], face=moved["face"], lips=moved["lips"])


class StepSampler(Sampler[int]):
    """Example numbers for optimizer steps ``start_step .. max_steps-1`` of one process.

    Example ``n`` depends only on (step, micro-batch, process, row), so a resumed run draws exactly the examples
    an uninterrupted run would have, and processes never draw the same example.
    """

    def __init__(self, start_step: int, max_steps: int, batch_size: int, accumulation: int, world: int,
                 rank: int) -> None:
        self.start_step, self.max_steps = start_step, max_steps
        self.batch_size, self.accumulation, self.world, self.rank = batch_size, accumulation, world, rank

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.accumulation):
                first = ((step * self.accumulation + micro) * self.world + self.rank) * self.batch_size
                yield from range(first, first + self.batch_size)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.accumulation * self.batch_size
