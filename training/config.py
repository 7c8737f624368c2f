"""Configurations of the Stage-II data preparation and the two video-training steps, as dataclasses.

Every default is the value of the official MMGT training (``config/train/stage1.yaml``, ``stage2.yaml`` and the
scripts, MMGT_SPEC 6.2-6.3); where the paper says otherwise the field's comment says ``paper: ...``.
A config is written as YAML into every run folder and can be loaded back (``load_train_config``) or given on the
command line (``--config run.yaml``); single fields are overridden with ``--set optim.lr=2e-5``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar, Union, get_args, get_origin, get_type_hints

from mmgt_core.constants import SMGA_WINDOW_FRAMES, VIDEO_FPS
from mmgt_core.errors import InputError

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------------------------
# Data preparation


@dataclass
class PrepareConfig:
    """How ``training/prepare_dataset.py`` turns a folder of talking videos into a training set."""

    input_dir: str
    out_dir: str
    width: int = 512  # official training and inference size
    height: int = 512
    fps: int = VIDEO_FPS  # every MMGT feature runs at 25 fps
    frame_codec: str = "jpeg"  # "jpeg" (quality below) or "png" (lossless, ~5x larger)
    jpeg_quality: int = 95
    pose_backend: str = "dwpose"  # "dwpose", "mediapipe", "sidecar" or "python:module:factory"
    dwpose_dir: Optional[str] = None  # folder with yolox_l.onnx and dw-ll_ucoco_384.onnx
    sidecar_suffix: str = ".keypoints.npy"  # per video: (source frames, 134, 3) pixels of the source video
    stage1_features: str = "wavlm_edge"  # "wavlm_edge" (released model, 1059 dims), "edge" (35 dims) or "none"
    wavlm: Optional[str] = None  # WavLM-Large.pt / converted safetensors / HF folder (for "wavlm_edge")
    wav2vec: Optional[str] = None  # facebook/wav2vec2-base-960h folder (Stage-II features; required)
    feature_device: str = "cpu"
    min_frames: int = 17  # one 12-frame Stage-II clip with +-2 audio frames needs 17 frames (0.68 s)
    min_person_fraction: float = 0.5  # skip videos where fewer frames show a person
    vfr: str = "skip"  # variable-frame-rate videos: "skip" (with a reason) or "resample" by timestamps
    vfr_tolerance: float = 0.5  # a video is VFR when its frame intervals spread by more than this x median
    stage1_window: int = SMGA_WINDOW_FRAMES  # SMGA window (spec 1.4)
    stage1_stride: int = 12  # window step, about 0.5 s (paper: 0.5 s step; official slice.py: 0.4 s)
    workers: int = 1  # processes; each loads its own pose and audio models
    extensions: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


# ---------------------------------------------------------------------------------------------------------------
# Video training


@dataclass
class ModelSources:
    """Where the networks come from. Paths are local files/folders; nothing is downloaded."""

    vae: str = ""  # sd-vae-ft-mse folder (diffusers AutoencoderKL)
    image_encoder: str = ""  # sd-image-variations-diffusers/image_encoder (CLIPVisionModelWithProjection)
    base_unet: Optional[str] = None  # step 1: diffusers UNet folder (official: sd-image-variations-diffusers/unet)
    pose_guider_init: Optional[str] = None  # step 1: ControlNet-openpose weights (controlnet_cond_embedding.*)
    init_net: Optional[str] = None  # a video-net file: step 2 = the step-1 export; step 1 = its 2D parts
    motion_module: Optional[str] = None  # step 2: AnimateDiff v2 motion checkpoint (mm_sd_v15_v2.ckpt)
    net_config: Optional[dict[str, Any]] = None  # VideoNetConfig.to_dict(); default from the files above


@dataclass
class DiffusionSettings:
    """Training noise schedule and loss (spec 6.2, quirk Q15)."""

    beta_schedule: str = "scaled_linear"  # official training (Q15); inference uses "linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    zero_snr: bool = True  # rescale_betas_zero_snr + trailing spacing
    prediction_type: str = "v_prediction"
    noise_offset: float = 0.05
    snr_gamma: float = 5.0  # min-SNR weighting min(snr+1, gamma)/(snr+1); 0 = plain MSE


@dataclass
class OptimSettings:
    """Optimizer and precision (spec 6.2/6.3)."""

    optimizer: str = "adamw"  # "adamw" or "adamw8bit" (bitsandbytes; the official step 2 used it)
    lr: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_warmup_steps: int = 1  # then constant
    batch_size: int = 4  # step 1 official 4 (paper: 2); step 2: 1
    gradient_accumulation_steps: int = 1
    max_steps: int = 30000  # step 1 official 30000 (paper: 29,580); step 2: 32500
    mixed_precision: str = "fp16"  # "no", "fp16", "bf16"; fp16 on a CPU is replaced by bf16
    gradient_checkpointing: bool = False  # official: off (saves memory when on; outputs are unchanged)


@dataclass
class DataSettings:
    """Sampling of training examples from the prepared set."""

    width: int = 256  # step 1 official 256 (paper: 512); step 2: 512
    height: int = 256
    clip_frames: int = 12  # step 2 frames per clip (n_sample_frames)
    audio_margin: int = 2  # +-2 wav2vec2 frames around each frame (5-frame window)
    reference_margin: int = 25  # step 1: reference and target at least this many frames apart (sample_margin)
    random_crop: bool = True  # step 1: RandomResizedCrop shared by target, pose and reference; step 2: off
    crop_scale: tuple[float, float] = (0.9, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.0)
    mask_mode: str = "training"  # branch masks: "training" (official: full = hands), "released", "paper"
    mask_legs: bool = True  # draw the pose without knees/ankles, as inference draws the generated pose
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class ConditionDropout:
    """Classifier-free-guidance dropout (spec 6.3; paper: 5% for all modalities)."""

    image: float = 0.1  # uncond_ratio: zero CLIP embedding and no reference attention
    audio: float = 0.05  # step 2 uncond_audio_ratio: projected audio tokens zeroed (step 1 has no audio)


@dataclass
class ValidationSettings:
    """A short clip rendered with the inference sampler every ``every`` steps (0 = never)."""

    every: int = 500
    steps: int = 20  # DDIM steps of the validation render (official step-1 validation: 20)
    frames: int = 12
    guidance_scale: float = 3.5
    mask_mode: str = "released"  # how inference composes the masks
    clip_index: int = 0  # which prepared clip to render


@dataclass
class CheckpointSettings:
    """Resumable checkpoints and the exported weights."""

    every: int = 1000  # step 1 official 1000; step 2: 500
    keep_last: int = 2
    export_dtype: str = "fp32"  # exported .safetensors: "fp32" (step 1, feeds step 2), "fp16" (step 2), "bf16"
    resume: bool = True  # continue from the newest checkpoint in out_dir/checkpoints


@dataclass
class TrainVideoConfig:
    """One run of ``training/train_video.py``: step 1 (image level) or step 2 (video + audio)."""

    step: int
    manifest: str
    out_dir: str
    models: ModelSources = field(default_factory=ModelSources)
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    data: DataSettings = field(default_factory=DataSettings)
    dropout: ConditionDropout = field(default_factory=ConditionDropout)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    train_branch_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # Q1: the official run was unweighted
    seed: int = 12580
    device: str = "auto"  # "auto" = accelerate's choice (CUDA when present), or "cpu"
    log_every: int = 10

    @classmethod
    def for_step(cls, step: int, manifest: str, out_dir: str, **overrides: Any) -> TrainVideoConfig:
        """The official defaults of step 1 or step 2; ``overrides`` replace whole top-level fields."""
        if step not in (1, 2):
            raise InputError("step", f"must be 1 (image level) or 2 (video + audio), got {step}.",
                             "Use --step 1 first, then --step 2 with the step-1 export.")
        config = cls(step=step, manifest=manifest, out_dir=out_dir)
        if step == 2:
            config.optim = OptimSettings(optimizer="adamw8bit", batch_size=1, max_steps=32500)
            config.data = DataSettings(width=512, height=512, random_crop=False)
            config.checkpoint = CheckpointSettings(every=500, export_dtype="fp16")  # half the file size
        for name, value in overrides.items():
            setattr(config, name, value)
        return config


# ---------------------------------------------------------------------------------------------------------------
# Reading and writing configs


def from_dict(kind: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``kind`` from plain data (YAML/JSON), recursing into nested dataclasses; lists -> tuples."""
    hints = get_type_hints(kind)
    known = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError("config", f"unknown {kind.__name__} field(s): {', '.join(unknown)}.",
                         f"Use only: {', '.join(sorted(known))}.")
    return kind(**{name: _convert(hints[name], value) for name, value in data.items()})


def _convert(hint: Any, value: Any) -> Any:
    target = _dataclass_in(hint)
    if target is not None and isinstance(value, dict):
        return from_dict(target, value)
    if isinstance(value, list) and _is_tuple(hint):
        return tuple(_number(v) if isinstance(v, str) else v for v in value)
    if isinstance(value, str) and (hint is float or float in get_args(hint)):
        return _number(value)  # YAML 1.1 reads "1e-5" (no dot) as a string
    return value


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _dataclass_in(hint: Any) -> Optional[type]:
    return next((kind for kind in (hint, *get_args(hint)) if is_dataclass(kind)), None)


def _is_tuple(hint: Any) -> bool:
    return hint is tuple or get_origin(hint) is tuple or any(get_origin(a) is tuple for a in get_args(hint))


def save_config(config: Any, path: Union[str, Path]) -> Path:
    """Write a config dataclass as YAML."""
    import yaml

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(json.loads(json.dumps(asdict(config))), sort_keys=False), encoding="utf-8")
    return target


def load_train_config(path: Union[str, Path], overrides: Optional[list[str]] = None) -> TrainVideoConfig:
    """A TrainVideoConfig from YAML (missing fields keep the step's official defaults), then ``key=value`` edits."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for required in ("step", "manifest", "out_dir"):
        if required not in data:
            raise InputError("config", f"'{path}' has no '{required}' field.", "Add it (see training/README.md).")
    base = asdict(TrainVideoConfig.for_step(int(data["step"]), data["manifest"], data["out_dir"]))
    return apply_overrides(from_dict(TrainVideoConfig, _deep_merge(base, data)), overrides or [])


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict) and key != "net_config"
        out[key] = _deep_merge(out[key], value) if nested else value
    return out


def apply_overrides(config: T, overrides: list[str]) -> T:
    """Apply ``section.field=value`` strings (values parsed as YAML) to a config dataclass."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise InputError("--set", f"'{item}' is not key=value.", "Write e.g. --set optim.lr=2e-5.")
        dotted, raw = item.split("=", 1)
        *parents, name = dotted.strip().split(".")
        target: Any = config
        for part in parents:
            target = getattr(target, part, None)
        if not is_dataclass(target) or name not in {f.name for f in fields(target)}:
            raise InputError("--set", f"'{dotted}' does not name a config field.", "See the run's config.yaml.")
        hint = get_type_hints(type(target))[name]
        setattr(target, name, _convert(hint, yaml.safe_load(raw)))
    return config
