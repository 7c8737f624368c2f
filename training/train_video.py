"""Train the Stage-II video network of MMGT in the official two steps, on one GPU or several (accelerate).

* **Step 1 (image level)**: ReferenceNet (all but its last up block), the denoising UNet *without* motion and audio
  modules, and the PoseGuider learn to redraw a frame from a reference frame of the same video and the frame's
  pose drawing. One random crop is shared by target, pose and reference; the image condition is dropped 10% of
  the time (zero CLIP embedding, no reference attention).
* **Step 2 (video + audio)**: starting from the step-1 weights, only the motion modules (optionally initialised
  from an AnimateDiff v2 motion checkpoint), the MM-HAA audio modules and the AudioProj train, on 12-frame clips
  with masks drawn from the keypoints and +-2-frame wav2vec2 windows; image condition dropped 10%, audio 5%.

Both steps: v-prediction with zero terminal SNR on a DDIM schedule with **scaled_linear** betas (what the
official training scripts build, spec Q15; inference uses linear betas, set ``diffusion.beta_schedule: linear`` to
train on the inference schedule), noise offset 0.05, min-SNR weighting (gamma 5), AdamW (8-bit optional),
gradient clipping 1.0, mixed precision and gradient checkpointing. Checkpoints are written atomically and a run
continues from its newest one; every ``validation.every`` steps a short clip is rendered with the inference
sampler; at the end the whole network is exported as a ``.safetensors`` that ``MMGT Load Video Net`` opens
strictly.

Usage (one GPU / several GPUs)::

    python -m training.train_video --config step1.yaml
    accelerate launch --num_processes 4 -m training.train_video --config step2.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from mmgt_core.constants import SIZE_MULTIPLE
from mmgt_core.errors import InputError, MMGTError, WeightsError
from mmgt_core.files import replace_folder, write_json_atomically
from mmgt_core.pretrained import load_pretrained, load_vae
from mmgt_core.types import OptionalCancel, OptionalProgress
from mmgt_core.video.conditioning import clip_image_embeds, load_clip_image_encoder
from mmgt_core.video.config import RELEASED_BRANCH_WEIGHTS, AudioProjConfig, VideoNetConfig
from mmgt_core.video.net import VideoNet
from mmgt_core.video.scheduler import make_scheduler
from mmgt_core.video.vae_codec import encode_images
from mmgt_core.weights import COMPONENT_VIDEO_NET, load_weights, read_config, save_weights, strict_load

from .config import TrainVideoConfig, apply_overrides, load_train_config, save_config
from .smga_data import read_wav
from .video_data import (
    STEP_FILES,
    ImagePairExamples,
    Manifest,
    PreparedClip,
    StepSampler,
    VideoClipExamples,
    batch_masks,
    collate_examples,
    full_frame_box,
    load_manifest,
    to_model_pixels,
)

CHECKPOINT_DIR = "checkpoints"
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
LOG_FILE = "train_log.jsonl"
EXPORT_NAMES = {1: "mmgt_video_step1.safetensors", 2: "mmgt_video_step2.safetensors"}
TRAINED_NET = "video network being trained"  # how weight-mismatch errors name it
TRAINING_META_KEY = "mmgt_training"  # extra entry in the exported config: the full net config + provenance
_STEP_DIR = re.compile(r"^step-(\d{8})$")


# ---------------------------------------------------------------------------------------------------------------
# Network configs and initial weights


def image_only(config: VideoNetConfig) -> VideoNetConfig:
    """The step-1 network: the same UNets without motion modules and without MM-HAA audio modules."""
    return replace(config, motion=replace(config.motion, resolutions=(), mid_block=False),
                   audio=replace(config.audio, down_block_depths=()))


def resolve_net_config(config: TrainVideoConfig, manifest: Manifest) -> VideoNetConfig:
    """The full (step-2) network config: given, else from the init file's metadata, else from the base UNet."""
    models = config.models
    if models.net_config:
        return VideoNetConfig.from_dict(models.net_config)
    if models.init_net:
        _, metadata = load_weights(models.init_net)
        stored = read_config(metadata)
        full = stored.get(TRAINING_META_KEY, {}).get("full_net") or stored
        return VideoNetConfig.from_dict(full) if full else VideoNetConfig.sd15()
    if models.base_unet:
        audio_proj = AudioProjConfig(blocks=manifest.wav2vec_layers, channels=manifest.wav2vec_hidden)
        return VideoNetConfig.from_diffusers_unet_config(Path(models.base_unet) / "config.json",
                                                         audio_proj=audio_proj)
    raise InputError("models", "no network to start from.",
                     "Set models.base_unet (step 1, e.g. sd-image-variations-diffusers/unet), models.init_net "
                     "(step 2: the step-1 export) or models.net_config.")


def _is_temporal_or_audio(key: str) -> bool:
    return ".motion_modules." in key or ".audio_modules." in key


def load_base_unet(net: VideoNet, folder: str) -> None:
    """SD-layout UNet weights (diffusers folder) into both UNets; the ReferenceNet has no conv_norm_out/conv_out."""
    from diffusers import UNet2DConditionModel

    unet = load_pretrained(UNet2DConditionModel, folder, "base UNet", fix="Use a diffusers 'unet' folder "
                           "(official step 1: sd-image-variations-diffusers/unet).")
    state = unet.state_dict()
    head = ("conv_norm_out.", "conv_out.")  # absent in the ReferenceNet
    strict_load(net.reference_unet, state, "ReferenceNet", folder, may_ignore=lambda k: k.startswith(head))
    strict_load(net.denoising_unet, state, "denoising UNet", folder, may_lack=_is_temporal_or_audio)


def load_pose_guider_init(net: VideoNet, path: str) -> None:
    """ControlNet-openpose ``controlnet_cond_embedding.*`` into the PoseGuider, except conv_out (kept at zero)."""
    state, _ = load_weights(path)
    prefix = "controlnet_cond_embedding."
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and "conv_out" not in k}
    if not picked:
        raise WeightsError(f"'{path}' has no controlnet_cond_embedding.* weights; use "
                           "control_v11p_sd15_openpose/diffusion_pytorch_model.bin (or .safetensors).")
    strict_load(net.pose_guider, picked, "PoseGuider", path, may_lack=lambda k: k.startswith("conv_out."))


def load_motion_module(net: VideoNet, path: str) -> None:
    """AnimateDiff v2 motion weights (``down_blocks.0.motion_modules.0...``) into the denoising UNet."""
    state, _ = load_weights(path)
    motion = {f"denoising_unet.{k}": v for k, v in state.items() if ".motion_modules." in k}
    own = {k for k in net.state_dict() if ".motion_modules." in k}
    if not motion:
        raise WeightsError(f"'{path}' holds no motion-module weights; use AnimateDiff's mm_sd_v15_v2.ckpt.")
    strict_load(net, motion, TRAINED_NET, path, may_lack=lambda k: k not in own)


def build_net(config: TrainVideoConfig, full: VideoNetConfig) -> VideoNet:
    """The network of this step with its initial weights (seeded, so frozen random parts are reproducible)."""
    models, step1 = config.models, config.step == 1
    if not step1 and not models.init_net:
        raise InputError("models.init_net", "step 2 starts from the step-1 network.",
                         "Set models.init_net to the step-1 export (mmgt_video_step1.safetensors).")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = VideoNet(image_only(full) if step1 else full, zero_init=True)
    if step1 and models.base_unet:
        load_base_unet(net, models.base_unet)
    if models.init_net:  # step 1 takes only the 2D parts of a video net, step 2 all but what it adds
        state, _ = load_weights(models.init_net)
        allowance = {"may_ignore" if step1 else "may_lack": _is_temporal_or_audio}
        strict_load(net, state, TRAINED_NET, models.init_net, **allowance)
    if step1 and models.pose_guider_init:
        load_pose_guider_init(net, models.pose_guider_init)
    if not step1 and models.motion_module:
        load_motion_module(net, models.motion_module)
    return net


def trainable_names(net: VideoNet, step: int) -> list[str]:
    """Official trainable sets: step 1 = denoiser + ReferenceNet but up_blocks.3 + PoseGuider; step 2 = motion and
    audio modules + AudioProj."""
    names = [name for name, _ in net.named_parameters()]
    if step == 1:
        return [name for name in names if name.startswith(("denoising_unet.", "pose_guider.")) or (
            name.startswith("reference_unet.") and "up_blocks.3" not in name)]
    return [name for name in names
            if name.startswith("audioproj.") or (name.startswith("denoising_unet.") and _is_temporal_or_audio(name))]


# ---------------------------------------------------------------------------------------------------------------
# The trained module (one forward = what DDP synchronises)


class VideoTrainingModule(nn.Module):
    """Wraps the VideoNet: pose features, reference banks, audio tokens and the denoiser in one forward."""

    def __init__(self, net: VideoNet, step: int, branch_weights: tuple[float, float, float]) -> None:
        super().__init__()
        self.net, self.step, self.branch_weights = net, step, branch_weights

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, clip_embeds: torch.Tensor,
                reference_latents: torch.Tensor, image_keep: torch.Tensor, pose: torch.Tensor,
                audio: Optional[torch.Tensor] = None, audio_keep: Optional[torch.Tensor] = None,
                masks: Any = None) -> torch.Tensor:
        net = self.net
        pose_features = net.pose_guider(pose)
        reference = None
        if bool(image_keep.any()):  # rows without the image condition read no bank (official uncond_fwd)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.step == 1):
                reference = net.reference_kv(reference_latents, clip_embeds, round_to_fp16=False)
        tokens = None
        if audio is not None:
            tokens = net.audioproj(audio)
            if audio_keep is not None:
                tokens = tokens * audio_keep.to(tokens.dtype).view(-1, 1, 1, 1)
        return net.denoising_unet(noisy, timesteps, clip_embeds, audio_tokens=tokens, pose_features=pose_features,
                                  masks=masks, branch_weights=self.branch_weights, reference=reference,
                                  reference_rows=image_keep)


@dataclass
class NoiseDraw:
    """The random part of one training batch: noise, timesteps and which rows keep their image/audio condition."""

    noise: torch.Tensor
    timesteps: torch.Tensor
    image_keep: torch.Tensor
    audio_keep: torch.Tensor


def draw_noise(config: TrainVideoConfig, shape: torch.Size, generator: torch.Generator, device: torch.device,
               drop_conditions: bool = True) -> NoiseDraw:
    """Offset noise of ``shape`` (B, C, F, h, w), uniform timesteps and the condition dropout, drawn in a fixed
    order from the CPU ``generator`` (a resumed run draws the same numbers), then moved to ``device``."""
    rows, diffusion = shape[0], config.diffusion
    noise = torch.randn(shape, generator=generator)
    noise += diffusion.noise_offset * torch.randn((rows, shape[1], 1, 1, 1), generator=generator)
    timesteps = torch.randint(0, diffusion.num_train_timesteps, (rows,), generator=generator)
    image_keep = torch.rand(rows, generator=generator) >= (config.dropout.image if drop_conditions else 0.0)
    audio_keep = torch.rand(rows, generator=generator) >= (config.dropout.audio if drop_conditions else 0.0)
    return NoiseDraw(*(value.to(device) for value in (noise, timesteps, image_keep, audio_keep)))


def min_snr_weights(scheduler: Any, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Official min-SNR weights: min(snr', gamma) / snr' with snr' = snr + 1 for v-prediction."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1.0 - alphas)
    if prediction_type == "v_prediction":
        snr = snr + 1.0
    return torch.minimum(snr, torch.full_like(snr, gamma)) / snr


def diffusion_loss(prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, scheduler: Any,
                   snr_gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-example MSE (mean over all but the batch), min-SNR weighted, averaged over the batch."""
    per_example = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)
    if snr_gamma > 0:
        per_example = per_example * min_snr_weights(scheduler, timesteps, snr_gamma, prediction_type)
    return per_example.mean()


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_dirs(out_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints (a folder ``step-NNNNNNNN`` holding state.json), oldest first."""
    found = [(child, _STEP_DIR.match(child.name)) for child in (Path(out_dir) / CHECKPOINT_DIR).glob("step-*")]
    return sorted((int(match.group(1)), child) for child, match in found if match and (child / STATE_FILE).is_file())


def _write_optimizer_state(folder: Path, payload: dict[str, Any]) -> None:
    torch.save(payload, folder / OPTIMIZER_FILE)


def save_checkpoint(out_dir: Path, step: int, trainable: dict[str, torch.Tensor], optimizer_payload: dict[str, Any],
                    state: dict[str, Any], keep_last: int) -> Path:
    """Write a checkpoint into a temporary folder, then rename it into place (never a half-written checkpoint)."""
    root = Path(out_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    temp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        temp.mkdir()
        save_file({k: v.detach().float().cpu().contiguous() for k, v in trainable.items()}, str(temp / TRAINABLE_FILE))
        _write_optimizer_state(temp, optimizer_payload)
        write_json_atomically(state, temp / STATE_FILE)  # last: marks the folder as complete
        replace_folder(temp, final)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    for _, stale in checkpoint_dirs(out_dir)[:-max(keep_last, 1)]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def remove_unfinished_checkpoints(out_dir: Path) -> None:
    """Delete temporary folders left by a process killed while saving."""
    root = Path(out_dir) / CHECKPOINT_DIR
    for child in [*root.glob(".tmp-step-*"), *root.glob(".old-step-*")]:  # .old-*: see replace_folder
        shutil.rmtree(child, ignore_errors=True)


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(state.json, trainable tensors, optimizer payload) of a finished checkpoint (optimizer opened weights-only)."""
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    tensors = load_file(str(folder / TRAINABLE_FILE))
    payload = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    return state, tensors, payload


# ---------------------------------------------------------------------------------------------------------------
# Optimizer


def make_optimizer(name: str, params: list[nn.Parameter], config: TrainVideoConfig) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (imported only when chosen)."""
    optim = config.optim
    kwargs = {"lr": optim.lr, "betas": (optim.adam_beta1, optim.adam_beta2), "weight_decay": optim.weight_decay,
              "eps": optim.adam_epsilon}
    if name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if name == "adamw8bit":
        return _bitsandbytes().optim.AdamW8bit(params, **kwargs)
    raise InputError("optim.optimizer", f"unknown optimizer '{name}'.", "Use adamw or adamw8bit.")


def _bitsandbytes() -> Any:
    try:
        import bitsandbytes
    except ImportError as exc:
        raise InputError("optim.optimizer", "adamw8bit needs the bitsandbytes package, which is not installed.",
                         "pip install bitsandbytes (CUDA only), or set optim.optimizer: adamw.") from exc
    return bitsandbytes


# ---------------------------------------------------------------------------------------------------------------
# The trainer


@dataclass
class TrainResult:
    """What a run produced."""

    export_path: Path
    step: int
    losses: list[float]
    checkpoint: Optional[Path]
    validation_videos: list[Path]


class VideoTrainer:
    """Everything one run needs; ``train()`` runs it. The pieces are public for tests and notebooks."""

    def __init__(self, config: TrainVideoConfig) -> None:
        self.config = config
        self.out = Path(config.out_dir)
        self.manifest = checked_manifest(config)
        self.accelerator = make_accelerator(config)
        self.device = self.accelerator.device
        self.full_config = resolve_net_config(config, self.manifest)
        check_dims(config, self.full_config, self.manifest)
        self.net, self.trainable = self._trainable_net()
        self.module = VideoTrainingModule(self.net, config.step, tuple(config.train_branch_weights))
        self.scheduler = make_scheduler(**scheduler_overrides(config))
        self.vae, self.clip = load_frozen_encoders(config, self.accelerator)
        self.optimizer, self.lr_schedule = self._optimizer_with_warmup()
        self.model, self.optimizer = self.accelerator.prepare(self.module, self.optimizer)
        examples = ImagePairExamples if config.step == 1 else VideoClipExamples
        self.examples = examples(self.manifest, config.data, config.seed)
        self.step = 0

    # ----- set-up helpers

    def _trainable_net(self) -> tuple[VideoNet, list[str]]:
        """This step's network in train mode, only its official trainable set requiring gradients."""
        net = build_net(self.config, self.full_config)
        trainable = trainable_names(net, self.config.step)
        wanted = set(trainable)
        for name, parameter in net.named_parameters():
            parameter.requires_grad_(name in wanted)
        net.train()
        if self.config.optim.gradient_checkpointing:
            net.enable_gradient_checkpointing()
        return net, trainable

    def _trained_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def _optimizer_with_warmup(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """The optimizer over the trained parameters and its linear learning-rate warm-up."""
        optimizer = make_optimizer(self.config.optim.optimizer, self._trained_parameters(), self.config)
        warmup = max(self.config.optim.lr_warmup_steps, 1)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))

    @property
    def unwrapped(self) -> VideoNet:
        return self.accelerator.unwrap_model(self.model).net

    # ----- one step

    def batch(self, step: int, micro: int = 0) -> dict[str, Any]:
        """The examples of this process for an optimizer step (same numbers as the DataLoader draws)."""
        optim = self.config.optim
        indices = list(StepSampler(step, step + 1, optim.batch_size, optim.gradient_accumulation_steps,
                                   self.accelerator.num_processes, self.accelerator.process_index))
        per_micro = optim.batch_size
        return collate_examples([self.examples[n] for n in indices[micro * per_micro:(micro + 1) * per_micro]])

    def generator(self, step: int, micro: int = 0) -> torch.Generator:
        """CPU generator of the noise, timesteps and dropout of one micro-batch (resume draws the same numbers)."""
        seed = int(np.random.SeedSequence([self.config.seed, step, micro, self.accelerator.process_index])
                   .generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    def loss(self, batch: dict[str, Any], generator: torch.Generator, drop_conditions: bool = True) -> torch.Tensor:
        """The training loss of one batch (noise, timesteps and condition dropout drawn from ``generator``)."""
        inputs = self.model_inputs(batch, generator, drop_conditions)
        target = inputs.pop("target")
        diffusion = self.config.diffusion
        return diffusion_loss(self.model(**inputs), target, inputs["timesteps"], self.scheduler, diffusion.snr_gamma,
                              diffusion.prediction_type)

    def model_inputs(self, batch: dict[str, Any], generator: torch.Generator,
                     drop_conditions: bool = True) -> dict[str, Any]:
        """Latents, noise, timesteps, v-target, CLIP/reference/pose/audio/mask inputs of one batch."""
        device = self.device
        latents, reference_latents, embeds = self.encode_conditions(batch, generator)
        drawn = draw_noise(self.config, latents.shape, generator, device, drop_conditions)
        inputs = {
            "noisy": self.scheduler.add_noise(latents, drawn.noise, drawn.timesteps),
            "target": self.scheduler.get_velocity(latents, drawn.noise, drawn.timesteps),
            "timesteps": drawn.timesteps,
            "clip_embeds": embeds * drawn.image_keep.view(-1, 1, 1),
            "reference_latents": reference_latents,
            "image_keep": drawn.image_keep,
            "pose": batch["pose"].to(device),
        }
        if self.config.step == 2:
            inputs.update(audio=batch["audio"].to(device), audio_keep=drawn.audio_keep,
                          masks=batch_masks(batch["masks"], device, torch.float32))
        return inputs

    def encode_conditions(self, batch: dict[str, Any], generator: torch.Generator
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target latents (B, 4, F, h, w), reference latents (B, 4, h, w) and the references' CLIP embeddings."""
        latents = self.encode_video(batch["target"], generator)
        reference_latents = encode_images(self.vae, to_model_pixels(batch["reference"].numpy()),
                                          sample_generator=generator).float().to(self.device)
        embeds = torch.stack([clip_image_embeds(self.clip, image) for image in batch["reference"]]).to(self.device)
        return latents, reference_latents, embeds

    def encode_video(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> latents (B, 4, F, h, w) float32 (VAE sample x its scale, official)."""
        rows, _, frames = pixels.shape[:3]
        flat = pixels.transpose(1, 2).flatten(0, 1)
        latents = encode_images(self.vae, flat, sample_generator=generator).float().to(self.device)
        return latents.unflatten(0, (rows, frames)).transpose(1, 2)

    def optimizer_step(self, batches: list[dict[str, Any]], step: int) -> float:
        """Accumulate the micro-batches, clip, step; returns the mean loss (over micro-batches and processes)."""
        total = 0.0
        for micro, batch in enumerate(batches):
            with self.accelerator.no_sync(self.model) if micro < len(batches) - 1 else nullcontext():
                loss = self.loss(batch, self.generator(step, micro)) / len(batches)
                self.accelerator.backward(loss)
            total += float(self.accelerator.reduce(loss.detach(), "mean"))
        self.accelerator.clip_grad_norm_(self._trained_parameters(), self.config.optim.max_grad_norm)
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    # ----- checkpoints

    def save_checkpoint(self, step: int) -> Optional[Path]:
        """Main process writes the checkpoint of the weights after ``step`` optimizer steps."""
        self.accelerator.wait_for_everyone()
        path = None
        if self.accelerator.is_main_process:
            params = dict(self.unwrapped.named_parameters())
            trainable = {name: params[name] for name in self.trainable}
            payload = {"optimizer": self.optimizer.state_dict(), "lr_schedule": self.lr_schedule.state_dict()}
            scaler = getattr(self.accelerator, "scaler", None)
            if scaler is not None:
                payload["scaler"] = scaler.state_dict()
            state = {"step": step, "train_step": self.config.step, "net": self.full_config.to_dict(),
                     "trainable": len(trainable), "time": time.time()}
            path = save_checkpoint(self.out, step, trainable, payload, state, self.config.checkpoint.keep_last)
        self.accelerator.wait_for_everyone()
        return path

    def resume(self) -> int:
        """Load the newest checkpoint of this run (if any); returns the step to continue from."""
        if self.accelerator.is_main_process:
            remove_unfinished_checkpoints(self.out)
        found = checkpoint_dirs(self.out)
        if not found or not self.config.checkpoint.resume:
            return 0
        step, folder = found[-1]
        state, tensors, payload = read_checkpoint(folder)
        if state.get("train_step") != self.config.step or VideoNetConfig.from_dict(state["net"]) != self.full_config:
            raise InputError("out_dir", f"the checkpoint '{folder}' belongs to another run (step or network differ).",
                             "Use a new out_dir, or set checkpoint.resume: false to start over.")
        trainable = set(self.trainable)
        strict_load(self.unwrapped, tensors, TRAINED_NET, str(folder), may_lack=lambda k: k not in trainable)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.lr_schedule.load_state_dict(payload["lr_schedule"])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and "scaler" in payload:
            scaler.load_state_dict(payload["scaler"])
        self.step = int(state["step"])
        return self.step

    # ----- outputs

    def export(self) -> Path:
        """The whole network as safetensors (component video_net, config in the metadata); main process only."""
        path = self.out / EXPORT_NAMES[self.config.step]
        if self.accelerator.is_main_process:
            export_net(self.unwrapped, path, self.full_config, self.config, self.step)
        self.accelerator.wait_for_everyone()
        return path

    def validate(self, step: int) -> Optional[Path]:
        """Render a short clip with the inference sampler (main process); returns the mp4 path."""
        if not self.accelerator.is_main_process:
            return None
        net = self.unwrapped
        was_training = net.training
        net.eval()
        try:
            return render_validation(net, self.vae, self.clip, self.manifest, self.config, step, self.out)
        finally:
            net.train(was_training)

    # ----- the loop

    def train(self, progress: OptionalProgress = None, check_cancel: OptionalCancel = None) -> TrainResult:
        """Run from the newest checkpoint (or step 0) to ``optim.max_steps``; export at the end."""
        from tqdm.auto import tqdm

        config = self.config
        start = self.resume()
        if self.accelerator.is_main_process:
            save_config(config, self.out / "config.yaml")
        losses, videos, last_checkpoint, saved_at = [], [], None, start
        with tqdm(total=config.optim.max_steps, initial=start, desc="train", unit="step",
                  disable=not self.accelerator.is_local_main_process) as bar:
            for step, batches in self._micro_batches(start):
                if check_cancel is not None:
                    check_cancel()
                loss = self.optimizer_step(batches, step)
                self.step = step + 1
                losses.append(loss)
                self._log(step + 1, loss, bar)
                if progress is not None:
                    progress(self.step, config.optim.max_steps)
                if config.checkpoint.every and self.step % config.checkpoint.every == 0:
                    last_checkpoint, saved_at = self.save_checkpoint(self.step), self.step
                if config.validation.every and self.step % config.validation.every == 0:
                    videos.append(self.validate(self.step))
        if self.step > saved_at:  # always end on a checkpoint, so a later run with more steps continues here
            last_checkpoint = self.save_checkpoint(self.step)
        return TrainResult(self.export(), self.step, losses, last_checkpoint, [v for v in videos if v is not None])

    def _micro_batches(self, start: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        optim = self.config.optim
        sampler = StepSampler(start, optim.max_steps, optim.batch_size, optim.gradient_accumulation_steps,
                              self.accelerator.num_processes, self.accelerator.process_index)
        loader = DataLoader(self.examples, batch_size=optim.batch_size, sampler=sampler,
                            collate_fn=collate_examples, num_workers=self.config.data.num_workers)
        batches: list[dict[str, Any]] = []
        step = start
        for batch in loader:
            batches.append(batch)
            if len(batches) == optim.gradient_accumulation_steps:
                yield step, batches
                batches, step = [], step + 1

    def _log(self, step: int, loss: float, bar: Any) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if self.accelerator.is_main_process and (step % max(self.config.log_every, 1) == 0 or step == 1):
            with open(self.out / LOG_FILE, "a", encoding="utf-8") as log:
                log.write(json.dumps({"step": step, "loss": loss, "lr": self.lr_schedule.get_last_lr()[0]}) + "\n")

    def close(self) -> None:
        """Release the accelerate state so another trainer can start in this process (tests, notebooks)."""
        from accelerate.state import AcceleratorState

        self.accelerator.end_training()
        AcceleratorState._reset_state(reset_partial_state=True)


# ---------------------------------------------------------------------------------------------------------------
# Checks and set-up


def checked_manifest(config: TrainVideoConfig) -> Manifest:
    """Refuse a config that cannot work, then read the manifest (with this step's files), before any model loads."""
    data, diffusion = config.data, config.diffusion
    if data.width % SIZE_MULTIPLE or data.height % SIZE_MULTIPLE:
        raise InputError("data.width/height", f"{data.width}x{data.height} is not a multiple of {SIZE_MULTIPLE}.",
                         "Use 256 or 512 (the official sizes).")
    if diffusion.zero_snr and diffusion.prediction_type != "v_prediction":
        raise InputError("diffusion.prediction_type", "zero terminal SNR needs v-prediction.",
                         "Keep prediction_type: v_prediction (official).")
    if config.optim.mixed_precision not in ("no", "fp16", "bf16"):
        raise InputError("optim.mixed_precision", f"unknown value '{config.optim.mixed_precision}'.",
                         "Use no, fp16 or bf16.")
    if config.checkpoint.export_dtype not in ("fp32", "fp16", "bf16"):
        raise InputError("checkpoint.export_dtype", f"unknown dtype '{config.checkpoint.export_dtype}'.",
                         "Use fp32, fp16 or bf16.")
    if not config.models.vae or not config.models.image_encoder:
        raise InputError("models", "models.vae and models.image_encoder are required.",
                         "Point them to sd-vae-ft-mse and sd-image-variations-diffusers/image_encoder.")
    manifest = load_manifest(config.manifest, require=STEP_FILES[config.step])
    if config.optim.optimizer == "adamw8bit":
        _bitsandbytes()
    return manifest


def check_dims(config: TrainVideoConfig, net: VideoNetConfig, manifest: Manifest) -> None:
    """Step 2: the clips must fit the motion modules and the prepared audio features the AudioProj (layers x hidden)."""
    if config.step != 2:
        return
    max_frames = net.motion.max_frames
    if config.data.clip_frames > max_frames:
        raise InputError("data.clip_frames", f"the motion modules hold positions for at most {max_frames} frames.",
                         f"Use 12 (official) to {max_frames} frames.")
    proj = net.audio_proj
    if (proj.blocks, proj.channels) != (manifest.wav2vec_layers, manifest.wav2vec_hidden):
        raise InputError("manifest", f"the data has wav2vec2 features of {manifest.wav2vec_layers} layers x "
                         f"{manifest.wav2vec_hidden}, the AudioProj expects {proj.blocks} x {proj.channels}.",
                         "Prepare the data with the wav2vec2 model the network was built for (wav2vec2-base-960h).")
    if proj.seq_len != 2 * config.data.audio_margin + 1:
        raise InputError("data.audio_margin", f"the AudioProj takes {proj.seq_len}-frame windows.",
                         f"Use audio_margin {(proj.seq_len - 1) // 2}.")


def make_accelerator(config: TrainVideoConfig) -> Any:
    """accelerate's Accelerator; fp16 is never used on a CPU (bf16 instead)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    on_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    precision = "bf16" if on_cpu and config.optim.mixed_precision == "fp16" else config.optim.mixed_precision
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]  # uncond batches skip the ReferenceNet
    return Accelerator(mixed_precision=precision, cpu=on_cpu, kwargs_handlers=handlers)


def load_frozen_encoders(config: TrainVideoConfig, accelerator: Any) -> tuple[Any, Any]:
    """The VAE (diffusers folder) and the CLIP image encoder, frozen in eval mode, on the accelerator's device in
    its mixed-precision dtype (else float32)."""
    device = accelerator.device
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(str(accelerator.mixed_precision), torch.float32)
    vae = load_vae(config.models.vae, device, dtype).requires_grad_(False)
    clip = load_clip_image_encoder(config.models.image_encoder, device=device, dtype=dtype).requires_grad_(False)
    return vae, clip


def scheduler_overrides(config: TrainVideoConfig) -> dict[str, Any]:
    """The training DDIM schedule (on top of the released inference config)."""
    diffusion = config.diffusion
    overrides: dict[str, Any] = {"beta_schedule": diffusion.beta_schedule, "beta_start": diffusion.beta_start,
                                 "beta_end": diffusion.beta_end, "num_train_timesteps": diffusion.num_train_timesteps,
                                 "prediction_type": diffusion.prediction_type}
    if not diffusion.zero_snr:
        overrides.update(rescale_betas_zero_snr=False, timestep_spacing="leading")
    return overrides


def export_net(net: VideoNet, path: Path, full: VideoNetConfig, config: TrainVideoConfig, step: int) -> Path:
    """Save the network strictly loadable by ``mmgt_core.video.net.load_video_net`` (its own config in metadata)."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[config.checkpoint.export_dtype]
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    stored = net.config.to_dict()
    stored[TRAINING_META_KEY] = {"full_net": full.to_dict(), "train_step": config.step, "global_step": step}
    return save_weights(state, path, COMPONENT_VIDEO_NET, stored, f"training/train_video.py step {config.step}, "
                        f"{step} steps")


# ---------------------------------------------------------------------------------------------------------------
# Validation render


def render_validation(net: VideoNet, vae: Any, clip: Any, manifest: Manifest, config: TrainVideoConfig, step: int,
                      out_dir: Path) -> Path:
    """A short clip of one prepared video, rendered by the inference sampler, saved as mp4 with its audio."""
    from mmgt_core.keypoints import PoseSequence
    from mmgt_core.media import write_mp4
    from mmgt_core.pipeline import VideoInputs, VideoPipeline
    from mmgt_core.video.settings import VideoSettings

    settings = config.validation
    entry = manifest.clips[min(settings.clip_index, len(manifest.clips) - 1)]
    prepared = PreparedClip(manifest, entry)
    width, height = config.data.width, config.data.height
    frames = min(settings.frames, entry.frames)
    box = full_frame_box(manifest.width, manifest.height, (width, height))
    reference = box.apply_frames(prepared.frames.read([0]))[0]
    keypoints = torch.from_numpy(box.apply_keypoints(prepared.keypoints[:frames]))
    features = prepared.audio_windows(list(range(frames)), 0)[:, 0] if config.step == 2 else None
    inputs = VideoInputs(reference, keypoints=PoseSequence(keypoints, width, height, manifest.fps),
                         audio_features=features, hide_legs=config.data.mask_legs)
    render = VideoSettings(width=width, height=height, seed=config.seed, steps=settings.steps,
                           guidance_scale=settings.guidance_scale, branch_weights=RELEASED_BRANCH_WEIGHTS,
                           mask_mode=settings.mask_mode, context_frames=min(config.data.clip_frames, frames),
                           context_overlap=0)
    video = VideoPipeline(net, vae, clip)(inputs, render).frames
    wave, rate = read_wav(manifest.root / entry.paths["audio"])
    audio = wave[: int(round(frames / manifest.fps * rate))][None]
    return write_mp4(out_dir / "validation" / f"step-{step:08d}.mp4", video, manifest.fps, audio, rate)


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def train_video(config: TrainVideoConfig, progress: OptionalProgress = None,
                check_cancel: OptionalCancel = None) -> TrainResult:
    """Build a trainer, run it, release it."""
    trainer = VideoTrainer(config)
    try:
        return trainer.train(progress, check_cancel)
    finally:
        trainer.close()


def parse_args(argv: Optional[list[str]] = None) -> TrainVideoConfig:
    parser = argparse.ArgumentParser(description="Train the MMGT video network (step 1 or step 2).")
    parser.add_argument("--config", help="YAML config (see training/README.md); other flags override it")
    parser.add_argument("--step", type=int, choices=[1, 2])
    parser.add_argument("--manifest", help="manifest.json from prepare_dataset.py")
    parser.add_argument("--out", help="run folder (checkpoints/, validation/, the export)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one field, e.g. --set optim.lr=2e-5 (repeatable)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    args = parser.parse_args(argv)
    if args.config:
        config = load_train_config(args.config)
    elif args.step and args.manifest and args.out:
        config = TrainVideoConfig.for_step(args.step, args.manifest, args.out)
    else:
        parser.error("give --config, or --step, --manifest and --out")
    for name, value in (("step", args.step), ("manifest", args.manifest), ("out_dir", args.out)):
        if value is not None:
            setattr(config, name, value)
    config = apply_overrides(config, args.set)
    if args.no_resume:
        config.checkpoint.resume = False
    return config


def main(argv: Optional[list[str]] = None) -> int:
    config = parse_args(argv)
    try:
        result = train_video(config)
    except MMGTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:  # one report per run, not per process
        return 0
    if result.losses:
        print(f"step {result.step}: last loss {result.losses[-1]:.4f}; exported {result.export_path}")
    else:
        print(f"nothing to do (already at step {result.step}); exported {result.export_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["TrainResult", "VideoTrainer", "VideoTrainingModule", "build_net", "diffusion_loss", "export_net",
           "image_only", "load_motion_module", "main", "min_snr_weights",
           "render_validation", "save_checkpoint", "train_video", "trainable_names"]
