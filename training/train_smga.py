"""Train (or fine-tune) the Stage-I SMGA audio-to-pose model.

Follows the official recipe (MMGT_SPEC 1.7, ``train_a2p.py``): uniform t ∈ [0, 999], x0 target, loss =
pos + vel + acc + 3·(face pos + vel + acc), audio dropped for classifier-free guidance with p = 0.25, EMA of the
weights every step, lr 2e-4, weight decay 0.02, batch 128. Differences, on purpose: AdamW by default (Adan when
the ``adan-pytorch`` package is installed and asked for), an optional EMA warm-up for short runs, bf16 autocast,
resumable atomic checkpoints, and export of the EMA weights to safetensors with their config.

Usage::

    python -m training.train_smga --data DATA_DIR --out RUN_DIR --features stage1 --wavlm WavLM-Large.pt
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from mmgt_core.errors import InputError
from mmgt_core.files import atomic_write
from mmgt_core.smga.diffusion import cosine_schedule, p_losses
from mmgt_core.smga.model import GestureDecoder, SMGAConfig, load_smga
from mmgt_core.types import OptionalCancel, OptionalProgress
from mmgt_core.weights import COMPONENT_SMGA, save_weights

STATE_FILE = "train_state.pt"
EXPORT_FILE = "smga.safetensors"


@dataclass
class TrainConfig:
    """Everything a run needs; stored in the checkpoint so a resume can check it is the same run."""

    out_dir: str
    model: SMGAConfig = field(default_factory=SMGAConfig)
    steps: int = 10_000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.02
    optimizer: str = "adamw"  # or "adan" (needs the adan-pytorch package)
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1+step)/(10+step)); False = official constant decay
    cond_drop_prob: float = 0.25
    bf16: str = "auto"  # "auto" (CUDA with bf16, or CPU), "on", "off"
    device: str = "cpu"
    seed: int = 0
    save_every: int = 1000
    log_every: int = 50
    grad_clip: Optional[float] = None  # the official run does not clip
    init_from: Optional[str] = None  # fine-tune from SMGA weights (official .pt or our safetensors)


@dataclass
class TrainResult:
    """What a run produced."""

    export_path: Path
    step: int
    losses: list[float]


def use_bf16(setting: str, device: torch.device) -> bool:
    """Resolve the bf16 autocast setting for a device."""
    if setting not in ("auto", "on", "off"):
        raise InputError("bf16", f"unknown setting '{setting}'.", "Use auto, on or off.")
    if setting != "auto":
        return setting == "on"
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu"


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, or Adan (official betas) when the optional package is installed."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adan":
        try:
            from adan_pytorch import Adan  # optional dependency
        except ImportError as exc:
            raise InputError("optimizer", "Adan needs the 'adan-pytorch' package.",
                             "pip install adan-pytorch, or use --optimizer adamw.") from exc
        return Adan(params, lr=lr, betas=(0.02, 0.08, 0.01), weight_decay=weight_decay)
    raise InputError("optimizer", f"unknown optimizer '{name}'.", "Use adamw or adan.")


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameters only (as the official EMA)."""
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param.detach().to(ema_param.dtype), 1.0 - decay)


def ema_decay_at(step: int, config: TrainConfig) -> float:
    return min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_warmup else config.ema_decay


def batch_indices(step: int, dataset_size: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the batch for a step: a fixed permutation per epoch, so a resumed run sees the same batches."""
    per_epoch = max(1, math.ceil(dataset_size / batch_size))
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(dataset_size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[position * batch_size:(position + 1) * batch_size]


def get_batch(dataset: Dataset, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Stack dataset items (fast path for the in-memory window dataset)."""
    if all(hasattr(dataset, name) for name in ("x", "cond_frame", "cond")):
        items = (dataset.x[indices], dataset.cond_frame[indices], dataset.cond[indices])
    else:
        items = tuple(default_collate([dataset[int(i)] for i in indices])[:3])
    return tuple(item.to(device) for item in items)


class Trainer:
    """Holds the model, its EMA copy, the optimizer and the RNG; one ``step()`` = one optimizer update."""

    def __init__(self, config: TrainConfig, dataset: Dataset) -> None:
        self.config, self.dataset = config, dataset
        self.device = torch.device(config.device)
        self.bf16 = use_bf16(config.bf16, self.device)
        torch.manual_seed(config.seed)  # dropout draws from the global RNG
        model = load_smga(config.init_from, config=config.model) if config.init_from else GestureDecoder(config.model)
        self.model = model.to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = make_optimizer(config.optimizer, self.model.parameters(), config.lr, config.weight_decay)
        self.schedule = cosine_schedule().to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.step_count = 0

    def step(self) -> float:
        indices = batch_indices(self.step_count, len(self.dataset), self.config.batch_size, self.config.seed)
        x, cond_frame, cond = get_batch(self.dataset, indices, self.device)
        t = torch.randint(0, self.schedule.n_timestep, (x.shape[0],), generator=self.generator,
                          device=self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss, _ = p_losses(self.model, self.schedule, x, cond_frame, cond, t,
                               cond_drop_prob=self.config.cond_drop_prob, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, ema_decay_at(self.step_count, self.config))
        self.step_count += 1
        return float(loss.detach())

    def state(self) -> dict[str, Any]:
        return {
            "model_state_dict": self.model.state_dict(),
            "ema_state_dict": self.ema.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "step": self.step_count,
            "generator_state": self.generator.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "config_json": json.dumps(asdict(self.config)),
        }

    def load_state(self, state: dict[str, Any], source: str) -> None:
        stored = json.loads(state["config_json"])
        if stored["model"] != self.config.model.to_dict():
            raise InputError("resume", f"'{source}' was trained with model config {stored['model']}, not "
                             f"{self.config.model.to_dict()}.", "Use another --out folder or the same config.")
        self.model.load_state_dict(state["model_state_dict"])
        self.ema.load_state_dict(state["ema_state_dict"])
        self.optimizer.load_state_dict(state["optimizer_state_dict"])
        self.step_count = int(state["step"])
        self.generator.set_state(state["generator_state"])
        torch.set_rng_state(state["torch_rng_state"])

    def save(self, out_dir: Path) -> None:
        """The resumable state, written atomically: a crash never leaves half a checkpoint."""
        with atomic_write(out_dir / STATE_FILE) as temp:
            torch.save(self.state(), temp)

    def export(self, out_dir: Path) -> Path:
        """EMA weights → safetensors with component 'smga' and the model config (loadable by load_smga)."""
        return save_weights(self.ema.state_dict(), out_dir / EXPORT_FILE, component=COMPONENT_SMGA,
                            config=self.config.model.to_dict(), source=f"training/train_smga.py step {self.step_count}")


def train_smga(
    config: TrainConfig,
    dataset: Dataset,
    resume: bool = True,
    progress: OptionalProgress = None,
    check_cancel: OptionalCancel = None,
    log: Optional[Callable[[str], None]] = print,
) -> TrainResult:
    """Run (or resume) training until ``config.steps`` and export the EMA weights."""
    feature_dim = getattr(dataset, "feature_dim", config.model.cond_feature_dim)
    if feature_dim != config.model.cond_feature_dim:
        raise InputError("data", f"features have {feature_dim} columns but the model expects "
                         f"{config.model.cond_feature_dim}.", "Set cond_feature_dim to the feature width.")
    out_dir = Path(config.out_dir)
    trainer = Trainer(config, dataset)
    state_path = out_dir / STATE_FILE
    if resume and state_path.is_file():
        trainer.load_state(torch.load(state_path, map_location=trainer.device, weights_only=True), str(state_path))
    losses: list[float] = []
    while trainer.step_count < config.steps:
        if check_cancel is not None:
            check_cancel()
        losses.append(trainer.step())
        if progress is not None:
            progress(trainer.step_count, config.steps)
        if log is not None and trainer.step_count % config.log_every == 0:
            recent = losses[-config.log_every:]
            log(f"step {trainer.step_count}/{config.steps} loss {sum(recent) / len(recent):.4f}")
        if trainer.step_count % config.save_every == 0:
            trainer.save(out_dir)
    trainer.save(out_dir)
    return TrainResult(trainer.export(out_dir), trainer.step_count, losses)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the MMGT Stage-I SMGA model.")
    parser.add_argument("--data", required=True, help="folder of NAME.npy keypoints + NAME.wav speech")
    parser.add_argument("--out", required=True, help="run folder: train_state.pt and smga.safetensors")
    parser.add_argument("--features", choices=["stage1", "edge"], default="stage1",
                        help="stage1 = WavLM ‖ 35 EDGE (released model); edge = 35 EDGE only")
    parser.add_argument("--wavlm", help="WavLM-Large.pt (or converted safetensors) for --features stage1")
    parser.add_argument("--cache-dir", help="cache computed features here")
    parser.add_argument("--model-config", help="JSON of SMGAConfig fields (default: the released sizes)")
    parser.add_argument("--init-from", help="fine-tune from these SMGA weights")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--optimizer", choices=["adamw", "adan"], default="adamw")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--stride", type=int, default=12, help="window step in frames (12 ≈ 0.5 s)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    from training.smga_data import build_dataset, edge_feature_fn, stage1_feature_fn

    args = parse_args(argv)
    if args.features == "stage1" and not args.wavlm:
        raise SystemExit("--features stage1 needs --wavlm PATH (WavLM-Large.pt)")
    feature_fn = stage1_feature_fn(args.wavlm, args.device) if args.features == "stage1" else edge_feature_fn()
    dataset = build_dataset(args.data, feature_fn, stride=args.stride, cache_dir=args.cache_dir)
    model = SMGAConfig.from_dict(json.loads(Path(args.model_config).read_text())) if args.model_config else SMGAConfig()
    if args.features == "edge" and not args.model_config:
        model = SMGAConfig(cond_feature_dim=dataset.feature_dim)
    config = TrainConfig(out_dir=args.out, model=model, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer, bf16=args.bf16, device=args.device, seed=args.seed,
                         save_every=args.save_every, init_from=args.init_from)
    result = train_smga(config, dataset, resume=not args.no_resume)
    print(f"exported {result.export_path} after {result.step} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
