"""Turn a folder of ordinary talking videos (e.g. PATS-style clips of one speaker) into an MMGT training set.

For every video (any frame rate, size and container, with an audio track):

1. **Frames at 25 fps**: output frame i (time i/25 s after the first frame) is the source frame nearest in time
   (frames are repeated or dropped, never blended). Each frame is **centre-cropped to the output aspect ratio and
   resized** (one LANCZOS resize of the crop box, ``mmgt_core.video.conditioning.cover_resize``) to W x H
   (default 512 x 512). Stored as individually encoded JPEG (quality 95) or PNG frames with a byte index.
2. **Keypoints**: 134 points per frame through a pose back end: ``dwpose`` (the official detector,
   ``mmgt_core.pose_detect``), ``mediapipe`` (approximate fallback), ``sidecar`` (``NAME.keypoints.npy`` next to the
   video: (source frames, 134, 3) pixels of the *source* video, mapped through the same crop) or your own
   ``python:module:factory``. Frames without a person get score 0 everywhere.
3. **Motion-mask sources**: the keypoints themselves; masks are drawn from them at training time (Algorithm 1).
4. **Audio**: the track is aligned to the first video frame, mixed to mono, resampled to 16 kHz and trimmed to the
   frame count T; Stage-II wav2vec2 features (T, 12, 768) and Stage-I features (T, 1059) = [WavLM ‖ EDGE].
5. **Samples**: Stage-I 80-frame windows with the official alignment (the condition frame is the frame *before*
   the audio window, ``training.smga_data.window_starts``), and the range of valid Stage-II 12-frame clip starts.

Runs files in parallel (``--workers``), skips finished videos when run again, shows a progress bar, and ends
with a summary of skipped files and why (no audio track, no person, variable frame rate, corrupt, too short).

Usage::

    python -m training.prepare_dataset --input videos/ --out data/ --wav2vec models/wav2vec2-base-960h \\
        --wavlm models/WavLM-Large.pt --pose dwpose --dwpose-dir models/dwpose --workers 4
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import av
import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from scipy.io import wavfile

from mmgt_core.audio.waveform import prepare_audio
from mmgt_core.constants import ENCODER_SAMPLE_RATE, SIZE_MULTIPLE, VIDEO_FPS
from mmgt_core.errors import InputError, MMGTError, WeightsError
from mmgt_core.files import replace_folder, write_json_atomically
from mmgt_core.keypoints import NUM_KEYPOINTS, PoseSequence, to_official_feature
from mmgt_core.media import read_audio
from mmgt_core.pose_detect.select import looks_like_a_person
from mmgt_core.timeline import fit_length
from mmgt_core.video.conditioning import cover_points, cover_resize

from .config import PrepareConfig
from .smga_data import window_starts
from .video_data import (
    CLIP_RECORD,
    FRAME_CODECS,
    FRAMES_BIN,
    FRAMES_INDEX,
    KEYPOINTS_FILE,
    MANIFEST_NAME,
    STAGE1_DIR,
    WAV2VEC_FILE,
    ClipEntry,
    FrameWriter,
    Manifest,
    stage2_start_range,
)

SAMPLES_PER_FRAME = ENCODER_SAMPLE_RATE // VIDEO_FPS  # 640 samples of 16 kHz audio per 25 fps frame
RESIZE_RULE = "centre crop to the output aspect ratio, then one LANCZOS resize of the crop box to W x H"
SUMMARY_NAME = "prepare_summary.json"


# ---------------------------------------------------------------------------------------------------------------
# Pose back ends


class PoseBackend(Protocol):
    """Keypoints of one prepared frame: (134, 3) float32 pixels on the W x H frame, or None when no person.

    ``start(video)`` is called once per video before its frames; ``source_index`` is the frame's rank in the
    source video (presentation order) and ``to_frame`` maps source-video pixels onto the prepared frame.
    """

    name: str

    def start(self, video: Path) -> None:
        """Nothing to load per video unless a back end says otherwise."""

    def __call__(self, frame: np.ndarray, source_index: int,
                 to_frame: Callable[[np.ndarray], np.ndarray]) -> Optional[np.ndarray]: ...


class DWPoseBackend(PoseBackend):
    """The official detector (YOLOX-L + RTMPose ONNX) on every prepared frame; the largest person is kept."""

    name = "dwpose"

    def __init__(self, folder: Optional[str]) -> None:
        from mmgt_core.pose_detect import DWPoseEstimator, DWPoseFiles

        if not folder:
            raise WeightsError("the dwpose back end needs --dwpose-dir (a folder with yolox_l.onnx and "
                               "dw-ll_ucoco_384.onnx from huggingface.co/yzd-v/DWPose).")
        files = DWPoseFiles.from_any(folder)
        files.check()
        self.estimator = DWPoseEstimator(files)

    def __call__(self, frame: np.ndarray, source_index: int,
                 to_frame: Callable[[np.ndarray], np.ndarray]) -> Optional[np.ndarray]:
        found = self.estimator(frame, "largest")
        if not (found.person_found or looks_like_a_person(found.keypoints)):
            return None
        return found.keypoints


class MediaPipeBackend(PoseBackend):
    """The approximate MediaPipe fallback of ``mmgt_core.pose_detect`` (needs the optional mediapipe package)."""

    name = "mediapipe"

    def __call__(self, frame: np.ndarray, source_index: int,
                 to_frame: Callable[[np.ndarray], np.ndarray]) -> Optional[np.ndarray]:
        from mmgt_core.pose_detect import detect_reference_pose

        found = detect_reference_pose(frame, backend="mediapipe", require_person=False)
        return found.keypoints if found.person_found else None


class SidecarBackend(PoseBackend):
    """Keypoints already known for the source video: ``NAME<suffix>`` (source frames, 134, 3) beside ``NAME.ext``."""

    name = "sidecar"

    def __init__(self, suffix: str = ".keypoints.npy") -> None:
        self.suffix = suffix
        self.keypoints: Optional[np.ndarray] = None

    def start(self, video: Path) -> None:
        path = video.with_name(video.stem + self.suffix)
        if not path.is_file():
            raise InputError("keypoints", f"no sidecar keypoints '{path.name}' beside the video.",
                             f"Write (frames, 134, 3) pixel keypoints of the source video to NAME{self.suffix}.")
        keypoints = np.load(path, allow_pickle=False)
        if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 3):
            raise InputError("keypoints", f"'{path.name}' has shape {keypoints.shape}; expected (frames, 134, 3).")
        self.keypoints = keypoints.astype(np.float32)

    def __call__(self, frame: np.ndarray, source_index: int,
                 to_frame: Callable[[np.ndarray], np.ndarray]) -> Optional[np.ndarray]:
        assert self.keypoints is not None, "start() must be called before the frames"
        if source_index >= self.keypoints.shape[0]:
            raise InputError("keypoints", f"the sidecar has {self.keypoints.shape[0]} rows but the video has more "
                             "frames.", "Write one row per decoded source frame.")
        points = self.keypoints[source_index]
        return to_frame(points) if looks_like_a_person(points) else None


def make_pose_backend(config: PrepareConfig) -> PoseBackend:
    """The back end named by ``config.pose_backend``."""
    spec = config.pose_backend
    if spec == "dwpose":
        return DWPoseBackend(config.dwpose_dir)
    if spec == "mediapipe":
        from mmgt_core.pose_detect import mediapipe_available

        if not mediapipe_available():
            raise WeightsError("the mediapipe back end needs the optional package: pip install mediapipe==0.10.21.")
        return MediaPipeBackend()
    if spec == "sidecar":
        return SidecarBackend(config.sidecar_suffix)
    if spec.startswith("python:"):
        module_name, _, attribute = spec[len("python:"):].partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
        return factory(config)
    raise InputError("pose_backend", f"unknown back end '{spec}'.",
                     "Use dwpose, mediapipe, sidecar or python:module:factory.")


# ---------------------------------------------------------------------------------------------------------------
# Audio models


class AudioModels:
    """The wav2vec2 model (Stage II) and, for 'wavlm_edge', the WavLM encoder (Stage I), loaded once per process."""

    def __init__(self, config: PrepareConfig) -> None:
        from mmgt_core.audio.wav2vec import load_wav2vec2

        if not config.wav2vec:
            raise WeightsError("--wav2vec is required: the facebook/wav2vec2-base-960h folder (Stage-II features).")
        self.kind = config.stage1_features
        if self.kind not in ("wavlm_edge", "edge", "none"):
            raise InputError("stage1_features", f"unknown kind '{self.kind}'.", "Use wavlm_edge, edge or none.")
        self.wav2vec = load_wav2vec2(config.wav2vec, device=config.feature_device)
        self.wavlm = None
        if self.kind == "wavlm_edge":
            from mmgt_core.audio.wavlm import load_wavlm

            if not config.wavlm:
                raise WeightsError("--wavlm is required for Stage-I features 'wavlm_edge' (WavLM-Large.pt); "
                                   "or choose --stage1-features edge/none.")
            self.wavlm = load_wavlm(config.wavlm, device=config.feature_device)

    def stage2(self, wave16k: torch.Tensor, frames: int) -> torch.Tensor:
        """(frames, layers, hidden) wav2vec2 features of the trimmed clip."""
        from mmgt_core.audio.wav2vec import wav2vec2_features

        features, _ = wav2vec2_features(self.wav2vec, wave16k, ENCODER_SAMPLE_RATE)
        return fit_length(features, frames)  # the 25 fps rounding may give one more row

    def stage1(self, wave16k: torch.Tensor, frames: int) -> Optional[torch.Tensor]:
        """(frames, D) Stage-I features, or None for kind 'none'."""
        if self.kind == "none":
            return None
        if self.kind == "edge":
            from mmgt_core.audio.edge_features import edge_features

            return edge_features(wave16k, ENCODER_SAMPLE_RATE, n_frames=frames)
        from mmgt_core.audio.stage1 import stage1_features

        return fit_length(stage1_features(wave16k, ENCODER_SAMPLE_RATE, self.wavlm), frames)

    def dims(self) -> dict[str, int]:
        config = self.wav2vec.config
        stage1 = {"wavlm_edge": (self.wavlm.hidden_size + 35) if self.wavlm else 0, "edge": 35, "none": 0}[self.kind]
        return {"wav2vec_layers": int(config.num_hidden_layers), "wav2vec_hidden": int(config.hidden_size),
                "stage1_feature_dim": stage1}


# ---------------------------------------------------------------------------------------------------------------
# Reading a video


class SkipVideo(Exception):
    """This video cannot be used; the message is the reason shown in the summary."""


@dataclass
class VideoProbe:
    """What a packet-only pass over the video stream tells (no decoding)."""

    width: int
    height: int
    fps: float
    has_audio: bool
    video_start: float  # seconds
    audio_start: float
    interval_spread: float  # (max - min) / median of frame intervals; 0 for constant frame rate


def probe_video(path: Path) -> VideoProbe:
    """Stream facts and frame-interval regularity; raises SkipVideo for unreadable files."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SkipVideo("no video stream")
            stream = container.streams.video[0]
            base = float(stream.time_base)
            times = sorted(packet.pts * base for packet in container.demux(stream) if packet.pts is not None)
            audio = container.streams.audio[0] if container.streams.audio else None
            audio_start = float(audio.start_time * audio.time_base) if audio and audio.start_time is not None else 0.0
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            if not rate and len(times) > 1:
                rate = (len(times) - 1) / max(times[-1] - times[0], 1e-6)
            return VideoProbe(
                width=stream.codec_context.width, height=stream.codec_context.height, fps=rate,
                has_audio=audio is not None, video_start=times[0] if times else 0.0, audio_start=audio_start,
                interval_spread=_interval_spread(times))
    except av.error.FFmpegError as exc:
        raise SkipVideo(f"corrupt or unreadable file ({exc.__class__.__name__}: {exc})") from exc


def _interval_spread(times: list[float]) -> float:
    if len(times) < 3:
        return 0.0
    intervals = np.diff(np.asarray(times))
    median = float(np.median(intervals))
    return float((intervals.max() - intervals.min()) / median) if median > 0 else float("inf")


def resampled_frames(path: Path, fps: float) -> Iterator[tuple[int, np.ndarray, list[int]]]:
    """Decode once; yield (source rank, RGB frame, output indices it serves) for output frames at ``fps``.

    Output frame i (time i/fps after the first frame) is served by the source frame nearest in time; the clip
    has floor(duration * fps) output frames, duration = last frame time + one frame interval.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        base = float(stream.time_base)
        fallback_step = 1.0 / float(stream.average_rate) if stream.average_rate else 1.0 / fps
        origin: Optional[float] = None
        previous: Optional[tuple[int, av.VideoFrame, float]] = None
        next_output, intervals = 0, []
        for rank, frame in enumerate(container.decode(stream)):
            time = frame.pts * base if frame.pts is not None else rank * fallback_step
            origin = time if origin is None else origin
            time = time - origin
            if previous is not None:
                time = max(time, previous[2])
                intervals.append(time - previous[2])
                boundary = (previous[2] + time) / 2
                served = []
                while next_output / fps < boundary:
                    served.append(next_output)
                    next_output += 1
                if served:
                    yield previous[0], previous[1].to_ndarray(format="rgb24"), served
            previous = (rank, frame, time)
        if previous is None:
            return
        step = float(np.median(intervals)) if intervals else fallback_step
        total = int(np.floor((previous[2] + step) * fps + 1e-6))
        served = list(range(next_output, total))
        if served:
            yield previous[0], previous[1].to_ndarray(format="rgb24"), served


def _keypoint_mapper(source_w: int, source_h: int, width: int, height: int) -> Callable[[np.ndarray], np.ndarray]:
    """Source-video pixels -> prepared-frame pixels under the same centre crop + resize as the frames."""
    return lambda points: cover_points(np.array(points, dtype=np.float32, copy=True), source_w, source_h, width,
                                       height)


# ---------------------------------------------------------------------------------------------------------------
# One video


@dataclass
class FileResult:
    """The outcome for one input video."""

    source: str
    status: str  # "prepared", "done" (finished in an earlier run) or "skipped"
    clip_id: str = ""
    reason: str = ""
    entry: Optional[dict[str, Any]] = None


def clip_id_for(video: Path, root: Path) -> str:
    """A file-system-safe, unique id from the path relative to the input folder."""
    relative = video.relative_to(root).with_suffix("")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(relative.parts)).strip("._") or "clip"
    return name[:120]


def settings_fingerprint(config: PrepareConfig) -> str:
    """Hash of the settings that change the prepared files (a finished clip with another fingerprint is redone)."""
    keys = ("width", "height", "fps", "frame_codec", "jpeg_quality", "pose_backend", "stage1_features",
            "wavlm", "wav2vec", "sidecar_suffix")
    payload = json.dumps({key: getattr(config, key) for key in keys}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


class VideoPreparer:
    """Prepares single videos; holds the pose back end and audio models of this process."""

    def __init__(self, config: PrepareConfig, pose_backend: Optional[PoseBackend] = None,
                 audio_models: Optional[AudioModels] = None) -> None:
        self.config = config
        self.out = Path(config.out_dir)
        self.pose = pose_backend or make_pose_backend(config)
        self.audio = audio_models or AudioModels(config)
        self.fingerprint = settings_fingerprint(config)

    def __call__(self, video: Path, clip_id: str) -> FileResult:
        finished = self._finished_entry(clip_id)
        if finished is not None:
            return FileResult(str(video), "done", clip_id, entry=finished)
        try:
            entry = self._prepare(video, clip_id)
        except SkipVideo as exc:
            return FileResult(str(video), "skipped", clip_id, reason=str(exc))
        except WeightsError:
            raise  # a model problem stops the whole run: every file would fail the same way
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the others; the reason is reported
            return FileResult(str(video), "skipped", clip_id, reason=f"{exc.__class__.__name__}: {exc}")
        return FileResult(str(video), "prepared", clip_id, entry=asdict(entry))

    def _finished_entry(self, clip_id: str) -> Optional[dict[str, Any]]:
        """The stored record of a clip finished with the same settings whose files all still exist."""
        record = self.out / "clips" / clip_id / CLIP_RECORD
        if not record.is_file():
            return None
        stored = json.loads(record.read_text(encoding="utf-8"))
        entry = stored.get("entry") or {}
        complete = all((self.out / path).is_file() for path in entry.get("paths", {}).values())
        return entry if stored.get("fingerprint") == self.fingerprint and complete else None

    def _prepare(self, video: Path, clip_id: str) -> ClipEntry:
        config = self.config
        probe = probe_video(video)
        if not probe.has_audio:
            raise SkipVideo("no audio track")
        if probe.interval_spread > config.vfr_tolerance and config.vfr != "resample":
            raise SkipVideo(f"variable frame rate (frame intervals spread {probe.interval_spread:.0%} of the "
                            "median); use --vfr resample to resample it by timestamps")
        work = self.out / "clips" / f".tmp-{clip_id}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            entry = self._write_clip(video, clip_id, probe, work)
            self._publish(work, clip_id, entry)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return entry

    def _write_clip(self, video: Path, clip_id: str, probe: VideoProbe, work: Path) -> ClipEntry:
        config = self.config
        keypoints, person_frames = self._frames_and_keypoints(video, probe, work)
        wave16k = self._audio(video, probe)
        frames = min(keypoints.shape[0], wave16k.shape[0] // SAMPLES_PER_FRAME)
        if frames < config.min_frames:
            raise SkipVideo(f"too short: {frames} frames ({frames / config.fps:.2f} s) with audio; at least "
                            f"{config.min_frames} are needed")
        if person_frames[:frames].mean() < config.min_person_fraction:
            raise SkipVideo(f"no person in {1 - person_frames[:frames].mean():.0%} of the frames")
        keypoints, wave16k = keypoints[:frames], wave16k[:frames * SAMPLES_PER_FRAME]
        np.save(work / KEYPOINTS_FILE, keypoints)
        _truncate_frames(work, frames)
        save_file({"features": self.audio.stage2(wave16k, frames).half()}, str(work / WAV2VEC_FILE))
        stage1 = self.audio.stage1(wave16k, frames)
        self._write_stage1(work, clip_id, keypoints, wave16k, stage1)
        windows = window_starts(frames, frames, config.stage1_window, config.stage1_stride)
        starts = stage2_start_range(frames)  # the official 12-frame clips with +-2 audio frames
        paths = {"frames": f"clips/{clip_id}/{FRAMES_BIN}", "frames_index": f"clips/{clip_id}/{FRAMES_INDEX}",
                 "keypoints": f"clips/{clip_id}/{KEYPOINTS_FILE}", "wav2vec": f"clips/{clip_id}/{WAV2VEC_FILE}",
                 "stage1_keypoints": f"{STAGE1_DIR}/{clip_id}.npy", "audio": f"{STAGE1_DIR}/{clip_id}.wav"}
        if stage1 is not None:
            paths["stage1_features"] = f"{STAGE1_DIR}/{clip_id}.features.safetensors"
        return ClipEntry(id=clip_id, source=str(video), frames=frames, paths=paths, stage1_windows=windows,
                         stage2_starts=list(starts) if starts else None,
                         person_frames=int(person_frames[:frames].sum()), source_fps=round(probe.fps, 3),
                         source_size=[probe.width, probe.height])

    def _frames_and_keypoints(self, video: Path, probe: VideoProbe, work: Path) -> tuple[np.ndarray, np.ndarray]:
        """Decode at 25 fps, write the frames, run the pose back end; returns keypoints (T, 134, 3), person (T,)."""
        config = self.config
        writer = FrameWriter(work, config.frame_codec, config.jpeg_quality)
        to_frame = _keypoint_mapper(probe.width, probe.height, config.width, config.height)
        self.pose.start(video)
        keypoints, person = [], []
        try:
            for rank, rgb, outputs in resampled_frames(video, config.fps):
                frame = np.asarray(cover_resize(Image.fromarray(rgb), config.width, config.height))
                data = writer.add(frame)
                for _ in outputs[1:]:
                    writer.add_encoded(data)
                found = self.pose(frame, rank, to_frame)
                points = np.zeros((NUM_KEYPOINTS, 3), np.float32) if found is None else np.asarray(found, np.float32)
                keypoints += [points] * len(outputs)
                person += [found is not None] * len(outputs)
        except av.error.FFmpegError as exc:
            raise SkipVideo(f"corrupt video data ({exc.__class__.__name__}: {exc})") from exc
        finally:
            writer.close()
        if not keypoints:
            raise SkipVideo("the video has no decodable frames")
        return np.stack(keypoints), np.asarray(person, dtype=np.float64)

    def _audio(self, video: Path, probe: VideoProbe) -> torch.Tensor:
        """Mono 16 kHz audio whose sample 0 is at the first video frame."""
        waveform, rate = read_audio(video)
        mono, _ = prepare_audio(waveform, rate, ENCODER_SAMPLE_RATE)
        shift = int(round((probe.audio_start - probe.video_start) * ENCODER_SAMPLE_RATE))
        if shift > 0:
            return torch.cat([torch.zeros(shift), mono])
        return mono[-shift:]

    def _write_stage1(self, work: Path, clip_id: str, keypoints: np.ndarray, wave16k: torch.Tensor,
                      features: Optional[torch.Tensor]) -> None:
        stage1 = work / STAGE1_DIR
        stage1.mkdir()
        sequence = PoseSequence(torch.from_numpy(keypoints), self.config.width, self.config.height)
        np.save(stage1 / f"{clip_id}.npy", to_official_feature(sequence).numpy())
        pcm = (wave16k.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
        wavfile.write(str(stage1 / f"{clip_id}.wav"), ENCODER_SAMPLE_RATE, pcm)
        if features is not None:
            save_file({"features": features.float().contiguous()}, str(stage1 / f"{clip_id}.features.safetensors"))

    def _publish(self, work: Path, clip_id: str, entry: ClipEntry) -> None:
        """Move the Stage-I files, write clip.json last, then rename the folder into place."""
        shared = self.out / STAGE1_DIR
        shared.mkdir(parents=True, exist_ok=True)
        for file in (work / STAGE1_DIR).iterdir():
            os.replace(file, shared / file.name)
        (work / STAGE1_DIR).rmdir()
        write_json_atomically({"fingerprint": self.fingerprint, "entry": asdict(entry)}, work / CLIP_RECORD)
        replace_folder(work, self.out / "clips" / clip_id)


def _truncate_frames(folder: Path, frames: int) -> None:
    """Keep the first ``frames`` entries of the frame index (the bytes after them are simply unused)."""
    index_path = folder / FRAMES_INDEX
    offsets = np.load(index_path)
    if offsets.shape[0] - 1 > frames:
        np.save(index_path, offsets[:frames + 1])
        os.truncate(folder / FRAMES_BIN, int(offsets[frames]))


# ---------------------------------------------------------------------------------------------------------------
# The whole folder


@dataclass
class PrepareSummary:
    """What a run did; also written to ``prepare_summary.json``."""

    manifest: str
    prepared: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"prepared {len(self.prepared)}, already done {len(self.already_done)}, "
               f"skipped {len(self.skipped)} -> {self.manifest}"]
        out += [f"  skipped {Path(item['source']).name}: {item['reason']}" for item in self.skipped]
        return out


def find_videos(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Video files under ``folder`` (recursively), sorted."""
    if not folder.is_dir():
        raise InputError("input_dir", f"'{folder}' is not a folder.", "Give the folder that holds the videos.")
    wanted = {ext.lower() for ext in extensions}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted)


_WORKER: Optional[VideoPreparer] = None


def _init_worker(config: PrepareConfig, threads: int) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = VideoPreparer(config)


def _run_in_worker(video: Path, clip_id: str) -> FileResult:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(video, clip_id)


def prepare_dataset(config: PrepareConfig, pose_backend: Optional[PoseBackend] = None,
                    audio_models: Optional[AudioModels] = None, show_progress: bool = True) -> PrepareSummary:
    """Prepare every video of ``config.input_dir`` into ``config.out_dir``; returns (and writes) the summary.

    ``pose_backend``/``audio_models`` replace the ones named in the config (in-process runs only).
    """
    _check_config(config)
    root, out = Path(config.input_dir), Path(config.out_dir)
    videos = find_videos(root, config.extensions)
    if not videos:
        raise InputError("input_dir", f"no videos ({', '.join(config.extensions)}) in '{root}'.",
                         "Put the talking videos in that folder.")
    ids = _unique_ids([clip_id_for(video, root) for video in videos])
    out.mkdir(parents=True, exist_ok=True)
    results = _run_all(config, list(zip(videos, ids)), pose_backend, audio_models, show_progress)
    return _finish(config, results, audio_models)


def _check_config(config: PrepareConfig) -> None:
    if config.width % SIZE_MULTIPLE or config.height % SIZE_MULTIPLE or config.width <= 0 or config.height <= 0:
        raise InputError("width/height", f"{config.width}x{config.height} is not a multiple of {SIZE_MULTIPLE}.",
                         "Use e.g. 512x512 (the official size).")
    if config.frame_codec not in FRAME_CODECS:
        raise InputError("frame_codec", f"unknown codec '{config.frame_codec}'.", f"Use one of {FRAME_CODECS}.")
    if config.vfr not in ("skip", "resample"):
        raise InputError("vfr", f"unknown policy '{config.vfr}'.", "Use skip or resample.")
    if config.fps != VIDEO_FPS:
        raise InputError("fps", f"MMGT runs at {VIDEO_FPS} fps, got {config.fps}.", f"Keep --fps {VIDEO_FPS}.")


def _unique_ids(ids: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for clip_id in ids:
        count = seen.get(clip_id, 0)
        seen[clip_id] = count + 1
        unique.append(clip_id if count == 0 else f"{clip_id}_{count}")
    return unique


def _run_all(config: PrepareConfig, jobs: list[tuple[Path, str]], pose_backend: Optional[PoseBackend],
             audio_models: Optional[AudioModels], show_progress: bool) -> list[FileResult]:
    from tqdm.auto import tqdm

    results: list[FileResult] = []
    with tqdm(total=len(jobs), desc="prepare", unit="video", disable=not show_progress) as bar:
        if config.workers <= 1:
            preparer = VideoPreparer(config, pose_backend, audio_models)
            for video, clip_id in jobs:
                results.append(preparer(video, clip_id))
                bar.update(1)
            return results
        if pose_backend is not None or audio_models is not None:
            raise InputError("workers", "custom back-end objects work only with workers=1.",
                             "Name the back end in the config (python:module:factory) to use several workers.")
        threads = max(1, (os.cpu_count() or 1) // config.workers)
        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(config.workers, mp_context=context, initializer=_init_worker,
                                 initargs=(config, threads)) as pool:
            futures = [pool.submit(_run_in_worker, video, clip_id) for video, clip_id in jobs]
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(1)
        return results


def _finish(config: PrepareConfig, results: list[FileResult], audio_models: Optional[AudioModels]) -> PrepareSummary:
    out = Path(config.out_dir)
    summary = PrepareSummary(manifest=str(out / MANIFEST_NAME))
    entries = []
    for result in sorted(results, key=lambda r: r.clip_id):
        if result.status == "skipped":
            summary.skipped.append({"source": result.source, "reason": result.reason})
            continue
        (summary.prepared if result.status == "prepared" else summary.already_done).append(result.clip_id)
        entries.append(ClipEntry(**result.entry))  # type: ignore[arg-type]
    dims = _feature_dims(config, out, entries, audio_models)
    manifest = Manifest(width=config.width, height=config.height, fps=config.fps, frame_codec=config.frame_codec,
                        resize_rule=RESIZE_RULE, stage1_window=config.stage1_window,
                        stage1_stride=config.stage1_stride, clips=entries, root=out, **dims)
    manifest.write(out / MANIFEST_NAME)
    write_json_atomically(asdict(summary), out / SUMMARY_NAME)
    return summary


def _feature_dims(config: PrepareConfig, out: Path, entries: list[ClipEntry],
                  audio_models: Optional[AudioModels]) -> dict[str, int]:
    """Feature sizes, read from a prepared clip (so a run where everything was already done needs no model)."""
    if audio_models is not None:
        return audio_models.dims()
    dims = {"wav2vec_layers": 0, "wav2vec_hidden": 0, "stage1_feature_dim": 0}
    if entries:
        with safe_open(str(out / entries[0].paths["wav2vec"]), framework="pt") as handle:
            shape = handle.get_slice("features").get_shape()
        dims["wav2vec_layers"], dims["wav2vec_hidden"] = int(shape[1]), int(shape[2])
        if "stage1_features" in entries[0].paths:
            with safe_open(str(out / entries[0].paths["stage1_features"]), framework="pt") as handle:
                dims["stage1_feature_dim"] = int(handle.get_slice("features").get_shape()[1])
    return dims


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Optional[list[str]] = None) -> PrepareConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", dest="input_dir", required=True,
                        help="folder of talking videos (searched recursively)")
    parser.add_argument("--out", dest="out_dir", required=True, help="output folder (manifest.json, clips/, stage1/)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--codec", dest="frame_codec", choices=FRAME_CODECS, default="jpeg",
                        help="frame storage (jpeg q95 or png)")
    parser.add_argument("--jpeg-quality", type=int, default=95)
    parser.add_argument("--pose", dest="pose_backend", default="dwpose",
                        help="dwpose | mediapipe | sidecar | python:module:factory")
    parser.add_argument("--dwpose-dir", help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx")
    parser.add_argument("--stage1-features", choices=["wavlm_edge", "edge", "none"], default="wavlm_edge")
    parser.add_argument("--wavlm", help="WavLM-Large.pt (Stage-I features)")
    parser.add_argument("--wav2vec", required=True, help="wav2vec2-base-960h folder (Stage-II features)")
    parser.add_argument("--device", dest="feature_device", default="cpu", help="device for the audio models")
    parser.add_argument("--min-frames", type=int, default=17)
    parser.add_argument("--min-person-fraction", type=float, default=0.5)
    parser.add_argument("--vfr", choices=["skip", "resample"], default="skip")
    parser.add_argument("--stride", dest="stage1_stride", type=int, default=12, help="Stage-I window step in frames")
    parser.add_argument("--workers", type=int, default=1)
    return PrepareConfig(**vars(parser.parse_args(argv)))  # every dest is a PrepareConfig field


def main(argv: Optional[list[str]] = None) -> int:
    config = parse_args(argv)
    try:
        summary = prepare_dataset(config)
    except MMGTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["AudioModels", "DWPoseBackend", "FileResult", "MediaPipeBackend", "PoseBackend", "PrepareSummary",
           "SidecarBackend", "VideoPreparer", "prepare_dataset", "probe_video", "resampled_frames"]
