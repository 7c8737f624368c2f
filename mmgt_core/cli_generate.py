"""``python -m mmgt_core generate``: image + audio (and/or keypoints) → mp4 with sound, without ComfyUI."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import InputError, WeightsError
from .keypoints import PoseSequence
from .keypoints_io import load_keypoints_file
from .models_table import MODEL_FILES
from .pipeline import VideoInputs, VideoPipeline, pose_from_features
from .pose_align import align_to_reference
from .timeline import resample_frames, resample_keypoints, trim_audio
from .video.settings import RELEASED, VideoSettings
from .video_io import read_audio, read_image, write_mp4

FPS = 25.0


def model_path(models: Path, key: str) -> Path:
    """The file or folder for ``key`` in ``models``, or a WeightsError saying where it goes and where it comes from."""
    entry = next(m for m in MODEL_FILES if m.key == key)
    found = entry.find([models])
    if found is None:
        raise WeightsError(f"missing {entry.what}: put it at {models / entry.path} (from {entry.source}, "
                           f"{entry.size}). `python -m mmgt_core doctor --models {models}` lists every file.")
    return found


@dataclass
class Timer:
    """Named wall-clock durations, printed at the end."""

    spans: dict[str, float]

    def measure(self, name: str, started: float) -> None:
        self.spans[name] = self.spans.get(name, 0.0) + time.perf_counter() - started


def _reference_pose(args: argparse.Namespace, image: Any, models: Path) -> PoseSequence:
    if args.reference_pose:
        pose, _ = load_keypoints_file(args.reference_pose, image.shape[1], image.shape[0])
        return pose
    from .pose_detect import detect_reference_pose

    folder = models / "dwpose"
    paths = (folder / "yolox_l.onnx", folder / "dw-ll_ucoco_384.onnx")
    result = detect_reference_pose(image, backend=args.pose_backend,
                                   dwpose_paths=paths if all(p.exists() for p in paths) else None)
    print(f"reference pose: {result.message}")
    return result.to_pose_sequence(FPS)


def _stage1_pose(args: argparse.Namespace, mono: torch.Tensor, rate: int, reference: PoseSequence, models: Path,
                 device: torch.device, dtype: torch.dtype, timer: Timer) -> PoseSequence:
    from .audio.stage1 import stage1_features
    from .audio.wavlm import load_wavlm
    from .smga.model import load_smga

    started = time.perf_counter()
    wavlm = load_wavlm(model_path(models, "wavlm"), device=device, dtype=dtype)
    features = stage1_features(mono, rate, wavlm, device=device, dtype=dtype)
    timer.measure("stage-I audio features", started)
    started = time.perf_counter()
    smga = load_smga(str(model_path(models, "smga")), device=device, dtype=dtype)
    pose = pose_from_features(smga, features, reference, args.seed, steps=args.smga_steps, guidance=args.guidance,
                              dtype=dtype)
    timer.measure("SMGA audio→pose", started)
    return pose


def _external_pose(args: argparse.Namespace, reference: PoseSequence, frames: Optional[int]) -> PoseSequence:
    pose, notes = load_keypoints_file(args.pose, reference.width, reference.height, args.pose_fps)
    for note in notes:
        print(f"pose: {note}")
    if pose.fps != FPS:
        pose = resample_keypoints(pose, FPS)
        print(f"pose: resampled from {args.pose_fps:g} to {FPS:g} fps")
    if not args.no_align:
        pose, fit = align_to_reference(pose, reference)
        print(f"pose: aligned to the reference body (scale {fit.scale:.3f} by {fit.measured_by})")
    if frames is not None and pose.num_frames != frames:
        kept = min(frames, pose.num_frames)
        print(f"pose: {pose.num_frames} frames vs {frames} audio frames; using {kept}")
        pose = pose.with_keypoints(pose.keypoints[:kept])
    return pose


def run(args: argparse.Namespace) -> Path:
    """The whole pipeline; returns the written mp4."""
    timer = Timer({})
    models = Path(args.models)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16  # fp16 is extremely slow on CPUs
    image = read_image(args.image)
    reference = _reference_pose(args, image, models)
    mono, rate, audio = None, 16000, None
    if args.audio:
        audio, rate = read_audio(args.audio)
        mono = audio.mean(0)
    if not args.audio and not args.pose:
        raise InputError("--audio/--pose", "nothing drives the video.", "Give --audio, --pose, or both.")
    frames = None if mono is None else max(1, round(mono.shape[0] / rate * FPS))
    if args.pose:
        pose = _external_pose(args, reference, frames)
    else:
        pose = _stage1_pose(args, mono, rate, reference, models, device, dtype, timer)
    video = _stage2(args, models, device, dtype, image, pose, mono, rate, timer)
    if args.fps != FPS:
        video = resample_frames(video, FPS, args.fps)
    audio_out = trim_audio(audio, rate, video.shape[0], args.fps) if audio is not None else None
    out = write_mp4(args.out, video, args.fps, audio_out, rate)
    print("timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timer.spans.items()))
    print(f"wrote {out}: {video.shape[0]} frames {video.shape[2]}×{video.shape[1]} at {args.fps:g} fps"
          f"{', with audio' if audio_out is not None else ''}")
    return out


def _stage2(args: argparse.Namespace, models: Path, device: torch.device, dtype: torch.dtype, image: Any,
            pose: PoseSequence, mono: Optional[torch.Tensor], rate: int, timer: Timer) -> torch.Tensor:
    """The video through the Stage-II pipeline object; pose frames and masks are drawn per window from ``pose``."""
    from .audio.wav2vec import load_wav2vec2, wav2vec2_features
    from .video.conditioning import load_clip_image_encoder
    from .video.decode import load_vae
    from .video.net import load_video_net

    started = time.perf_counter()
    features = None
    if mono is not None:
        wav2vec = load_wav2vec2(model_path(models, "wav2vec2"), device=device)
        features, _ = wav2vec2_features(wav2vec, mono, rate)
        del wav2vec
    pipeline = VideoPipeline(load_video_net(model_path(models, "video_net"), dtype=dtype, device=device),
                             load_vae(model_path(models, "vae"), device),
                             load_clip_image_encoder(model_path(models, "image_encoder"), device, dtype))
    timer.measure("stage-II loading + audio features", started)
    settings = VideoSettings(width=args.width, height=args.height, seed=args.seed, steps=args.steps,
                             guidance_scale=args.cfg, mask_mode=args.mask_mode, context_frames=args.context_frames,
                             context_overlap=args.context_overlap, context_schedule=args.context_schedule)
    started = time.perf_counter()
    video = pipeline(VideoInputs(image, keypoints=pose, audio_features=features), settings).frames
    timer.measure("stage-II sampling + decode", started)
    return video


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmgt_core generate",
        description="Animate one reference image with speech (audio→video), an external keypoint sequence "
                    "(pose→video), or both (the keypoints drive the body, the audio the lips via MM-HAA). Writes an "
                    "mp4 with the input audio muxed in. Model files are read from --models (ComfyUI/models/mmgt).")
    parser.add_argument("--image", required=True, help="reference image (PNG/JPEG), the person to animate")
    parser.add_argument("--audio", help="speech (WAV/FLAC/MP3/…; any rate and length)")
    parser.add_argument("--pose", help="keypoints driving the body: POSE_KEYPOINT .json, official .npy, or MMGT "
                                       ".safetensors (pose-driven mode; aligned to the reference body)")
    parser.add_argument("--pose-fps", type=float, default=FPS, help="frame rate of --pose (resampled to 25)")
    parser.add_argument("--no-align", action="store_true", help="use --pose as is, without fitting it to the "
                                                                "reference body")
    parser.add_argument("--reference-pose", help="keypoints file for the reference image (skips pose detection)")
    parser.add_argument("--pose-backend", default="auto", choices=["auto", "dwpose", "mediapipe"],
                        help="reference-pose detector (DWPose files in MODELS/dwpose, or mediapipe if installed)")
    parser.add_argument("--models", default="models/mmgt", help="folder with the model files (see `doctor`)")
    parser.add_argument("--out", required=True, help="output .mp4")
    parser.add_argument("--width", type=int, default=RELEASED.width,
                        help=f"output width, multiple of 64 (default {RELEASED.width})")
    parser.add_argument("--height", type=int, default=RELEASED.height,
                        help=f"output height, multiple of 64 (default {RELEASED.height})")
    parser.add_argument("--fps", type=float, default=FPS, help="output frame rate; frames are resampled, the audio "
                                                               "is untouched, so lip sync holds (default 25)")
    parser.add_argument("--seed", type=int, default=RELEASED.seed, help=f"random seed (default {RELEASED.seed})")
    parser.add_argument("--steps", type=int, default=RELEASED.steps,
                        help=f"Stage-II DDIM steps (official {RELEASED.steps})")
    parser.add_argument("--cfg", type=float, default=RELEASED.guidance_scale,
                        help=f"Stage-II guidance scale (official {RELEASED.guidance_scale})")
    parser.add_argument("--smga-steps", type=int, default=50, help="Stage-I DDIM steps (official 50)")
    parser.add_argument("--guidance", type=float, default=2.0, help="Stage-I guidance weight (official 2)")
    parser.add_argument("--mask-mode", default=RELEASED.mask_mode, choices=["released", "paper", "training"],
                        help="MM-HAA mask composition (default: the released script's)")
    parser.add_argument("--context-frames", type=int, default=RELEASED.context_frames,
                        help=f"frames per context window (default {RELEASED.context_frames})")
    parser.add_argument("--context-overlap", type=int, default=RELEASED.context_overlap,
                        help=f"overlap of context windows (default {RELEASED.context_overlap})")
    parser.add_argument("--context-schedule", default=RELEASED.context_schedule, choices=["open", "closed_loop"],
                        help="open: no wrap-around (default); closed_loop: the official schedule")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"],
                        help="weights precision (default bf16; fp16 is replaced by bf16 on CPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0
