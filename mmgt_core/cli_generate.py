"""``python -m mmgt_core generate``: image + audio (and/or keypoints) → mp4 with sound, without ComfyUI."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .audio.waveform import frame_count
from .constants import SIZE_MULTIPLE, VIDEO_FPS
from .errors import InputError, WeightsError
from .keypoints import PoseSequence
from .keypoints_io import load_keypoints_file
from .media import Mp4Writer, check_output_path, read_audio, read_image, remove_stale_partials
from .memory import release_freed_heap
from .models_table import MODEL_FILES
from .pipeline import VideoInputs, VideoPipeline, pose_from_features
from .pose_align import align_to_reference
from .timeline import output_frame_count, resample_keypoints, resample_stream, resampled_frame_count
from .video.scheduler import SCHEDULERS
from .video.settings import RELEASED, VideoSettings

MAX_FPS = 240.0


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
    return result.to_pose_sequence(VIDEO_FPS)


def _stage1_pose(args: argparse.Namespace, audio: torch.Tensor, rate: int, reference: PoseSequence, models: Path,
                 device: torch.device, dtype: torch.dtype, timer: Timer) -> PoseSequence:
    from .audio.stage1 import stage1_features
    from .audio.wavlm import load_wavlm
    from .smga.model import load_smga

    started = time.perf_counter()
    wavlm = load_wavlm(model_path(models, "wavlm"), device=device, dtype=dtype)
    features = stage1_features(audio, rate, wavlm, device=device, dtype=dtype)
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
    if pose.fps != VIDEO_FPS:
        pose = resample_keypoints(pose, VIDEO_FPS)
        print(f"pose: resampled from {args.pose_fps:g} to {VIDEO_FPS:g} fps")
    if not args.no_align:
        pose, fit = align_to_reference(pose, reference)
        print(f"pose: aligned to the reference body (scale {fit.scale:.3f} by {fit.measured_by})")
    if frames is not None and pose.num_frames != frames:
        kept = min(frames, pose.num_frames)
        print(f"pose: {pose.num_frames} frames vs {frames} audio frames; using {kept}")
        pose = pose.with_keypoints(pose.keypoints[:kept])
    return pose


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before any work: output path, frame rate, size, models folder, inputs.
    Raises InputError (printed as one line by the command line)."""
    check_output_path(args.out, "--out")
    remove_stale_partials(Path(args.out).expanduser().parent)  # left by a killed earlier run
    if not (math.isfinite(args.fps) and 0 < args.fps <= MAX_FPS):
        raise InputError("--fps", f"{args.fps:g} is not a usable frame rate.", f"Give a number above 0 and at most "
                                                                               f"{MAX_FPS:g}, e.g. 25 or 30.")
    for name, value in (("--width", args.width), ("--height", args.height)):
        if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            raise InputError(name, f"{value} is not a positive multiple of {SIZE_MULTIPLE}.",
                             "Use e.g. 512, 576 or 768.")
    if not Path(args.models).is_dir():
        raise InputError("--models", f"the models folder '{args.models}' does not exist.",
                         "Point --models at the folder with the model files (ComfyUI/models/mmgt); "
                         "`python -m mmgt_core doctor --models DIR` lists what goes there.")
    if not args.audio and not args.pose:
        raise InputError("--audio/--pose", "nothing drives the video.", "Give --audio, --pose, or both.")
    for name in ("image", "audio", "pose", "reference_pose"):
        value = getattr(args, name)
        if value and not Path(value).is_file():
            raise InputError(f"--{name.replace('_', '-')}", f"'{value}' does not exist or is not a file.")


def run(args: argparse.Namespace) -> Path:
    """The whole pipeline; returns the written mp4."""
    check_arguments(args)
    timer = Timer({})
    models = Path(args.models)
    device, dtype = _device_and_dtype(args)
    image = read_image(args.image)
    reference = _reference_pose(args, image, models)
    audio, rate = read_audio(args.audio) if args.audio else (None, 0)  # (channels, samples): the features downmix
    if args.pose:  # Stage II generates the frames the audio features cover (the official ceil rule)
        pose = _external_pose(args, reference, None if audio is None else frame_count(audio.shape[-1], rate))
    else:
        pose = _stage1_pose(args, audio, rate, reference, models, device, dtype, timer)
    release_freed_heap()  # each whole-clip stage's freed temporaries leave the RSS before the next one
    latents, vae = _stage2(args, models, device, dtype, image, pose, audio, rate, timer)
    release_freed_heap()
    started = time.perf_counter()
    out, count = _write_video(args, latents, vae, audio, rate)
    timer.measure("decode + write", started)
    print("timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timer.spans.items()))
    print(f"wrote {out}: {count} frames {args.width}×{args.height} at {args.fps:g} fps"
          f"{', with audio' if audio is not None else ''}")
    return out


def _device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """--device (auto: CUDA when present) and --dtype; fp16 becomes bf16 on a CPU, where it is extremely slow."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16
    return device, dtype


def _write_video(args: argparse.Namespace, latents: torch.Tensor, vae: Any, audio: Optional[torch.Tensor],
                 rate: int, chunk_frames: int = 4) -> tuple[Path, int]:
    """Decode the latents chunk by chunk, resample to --fps and stream them into the mp4 with the audio (the
    length rule of ``timeline``: frames = round(fps × audio duration), audio cut/padded to the video)."""
    from .video.vae_codec import iter_decoded_chunks

    generated = latents.shape[2]
    count = output_frame_count(resampled_frame_count(generated, VIDEO_FPS, args.fps),
                               None if audio is None else audio.shape[-1], rate, args.fps)
    needed = min(generated, math.ceil(count * VIDEO_FPS / args.fps) + 1)  # source frames the output shows
    chunks = iter_decoded_chunks(vae, latents, chunk_frames, stop=needed)
    with Mp4Writer(args.out, args.fps, audio, rate) as writer:
        for frames in resample_stream(chunks, needed, VIDEO_FPS, args.fps, count):
            writer.write(frames)
    return writer.target, count


def _stage2(args: argparse.Namespace, models: Path, device: torch.device, dtype: torch.dtype, image: Any,
            pose: PoseSequence, audio: Optional[torch.Tensor], rate: int, timer: Timer) -> tuple[torch.Tensor, Any]:
    """Stage II through the pipeline object (pose frames and masks drawn per window from ``pose``): the video
    latents (1, 4, T, h, w) at 25 fps and the VAE that decodes them (the caller streams the decode into the mp4)."""
    started = time.perf_counter()
    features = None if audio is None else _stage2_audio_features(models, device, audio, rate)
    release_freed_heap()
    pipeline = _video_pipeline(models, device, dtype)
    timer.measure("stage-II loading + audio features", started)
    started = time.perf_counter()
    inputs = VideoInputs(image, keypoints=pose, audio_features=features)
    latents = pipeline(inputs, _video_settings(args), output="latent").latents
    timer.measure("stage-II sampling", started)
    return latents, pipeline.vae


def _stage2_audio_features(models: Path, device: torch.device, audio: torch.Tensor, rate: int) -> torch.Tensor:
    """wav2vec2 features of the driving audio; the wav2vec2 model is dropped right after."""
    from .audio.wav2vec import load_wav2vec2, wav2vec2_features

    return wav2vec2_features(load_wav2vec2(model_path(models, "wav2vec2"), device=device), audio, rate)[0]


def _video_pipeline(models: Path, device: torch.device, dtype: torch.dtype) -> VideoPipeline:
    """The Stage-II models (video network, VAE, CLIP image encoder) from ``models``."""
    from .pretrained import load_vae
    from .video.conditioning import load_clip_image_encoder
    from .video.net import load_video_net

    return VideoPipeline(load_video_net(model_path(models, "video_net"), dtype=dtype, device=device),
                         load_vae(model_path(models, "vae"), device),
                         load_clip_image_encoder(model_path(models, "image_encoder"), device, dtype))


def _video_settings(args: argparse.Namespace) -> VideoSettings:
    """Stage-II sampling settings from the command line."""
    return VideoSettings(width=args.width, height=args.height, seed=args.seed, steps=args.steps,
                         scheduler=args.scheduler, guidance_scale=args.cfg, mask_mode=args.mask_mode,
                         context_frames=args.context_frames, context_overlap=args.context_overlap,
                         context_schedule=args.context_schedule)


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
    parser.add_argument("--pose-fps", type=float, default=VIDEO_FPS,
                        help=f"frame rate of --pose (resampled to {VIDEO_FPS})")
    parser.add_argument("--no-align", action="store_true", help="use --pose as is, without fitting it to the "
                                                                "reference body")
    parser.add_argument("--reference-pose", help="keypoints file for the reference image (skips pose detection)")
    parser.add_argument("--pose-backend", default="auto", choices=["auto", "dwpose", "mediapipe"],
                        help="reference-pose detector (DWPose files in MODELS/dwpose, or mediapipe if installed)")
    parser.add_argument("--models", default="models/mmgt", help="folder with the model files (see `doctor`)")
    parser.add_argument("--out", required=True, help="output .mp4")
    parser.add_argument("--width", type=int, default=RELEASED.width,
                        help=f"output width, multiple of {SIZE_MULTIPLE} (default {RELEASED.width})")
    parser.add_argument("--height", type=int, default=RELEASED.height,
                        help=f"output height, multiple of {SIZE_MULTIPLE} (default {RELEASED.height})")
    parser.add_argument("--fps", type=float, default=VIDEO_FPS,
                        help=f"output frame rate; frames are resampled, the audio is untouched, so lip sync holds "
                             f"(default {VIDEO_FPS}). Frames = round(fps × audio duration); the audio is cut or padded "
                             "to the video's duration")
    parser.add_argument("--seed", type=int, default=RELEASED.seed, help=f"random seed (default {RELEASED.seed})")
    parser.add_argument("--steps", type=int, default=RELEASED.steps,
                        help=f"Stage-II sampler steps (official {RELEASED.steps} DDIM steps)")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default=RELEASED.scheduler,
                        help="Stage-II sampler: ddim (released) or dpmpp_2m / unipc for fewer steps (e.g. 15)")
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
