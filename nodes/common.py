"""What the node modules share: readable errors, ComfyUI <-> core conversions, the keypoints socket, common
inputs, the loader base and the log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from mmgt_core.audio.waveform import to_mono
from mmgt_core.errors import InputError, MMGTError

from . import host
from .model_files import choices, validate_file

LOGGER = logging.getLogger("ComfyUI-MMGT")
POSE_CATEGORY = "MMGT/pose"
LOADERS_CATEGORY = "MMGT/loaders"
AUDIO_CATEGORY = "MMGT/audio"
SAMPLING_CATEGORY = "MMGT/sampling"
"""The pack's menus in ComfyUI's node library."""
KEYPOINTS_TYPE = "MMGT_KEYPOINTS"
KEYPOINTS_INPUT = (KEYPOINTS_TYPE, {"tooltip": "MMGT whole-body keypoints (134 points per frame) with their canvas "
                                               "size and frame rate, e.g. from MMGT Audio → Pose."})
DTYPE_INPUT = (host.DTYPE_CHOICES, {"default": "auto", "tooltip": "Weights precision. auto: ComfyUI's choice for "
                                                                  "this kind of model (its --fp16-unet, --bf16-vae "
                                                                  "... flags apply); fp16 is never used on a CPU "
                                                                  "(bf16 instead). The device is ComfyUI's (--cpu, "
                                                                  "--lowvram, --highvram, --gpu-only)."})


class KeypointsOutput:
    """Base of the pose nodes that return MMGT keypoints."""

    CATEGORY = POSE_CATEGORY
    RETURN_TYPES: tuple[str, ...] = (KEYPOINTS_TYPE,)
    RETURN_NAMES: tuple[str, ...] = ("keypoints",)


class KeypointsWithNotes(KeypointsOutput):
    """Base of the pose nodes that return MMGT keypoints and a notes line."""

    RETURN_TYPES = (KEYPOINTS_TYPE, "STRING")
    RETURN_NAMES = ("keypoints", "notes")


class TextReport:
    """Base of the loader-menu nodes that make a text report: shown on the node, returned as STRING, rerun on every
    queue (they look at the model folders again)."""

    CATEGORY = LOADERS_CATEGORY
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)

    @classmethod
    def IS_CHANGED(cls, **inputs: Any) -> float:
        return float("nan")  # never equal to itself: ComfyUI never reuses the last report

    @staticmethod
    def show(text: str) -> dict[str, Any]:
        """The node's return value: the report on the node and on its STRING output."""
        return {"ui": {"text": [text]}, "result": (text,)}


class MMGTNodeError(RuntimeError):
    """An error shown in ComfyUI as one readable line: which node, which input, what to do.

    ComfyUI prints an exception's type as ``module.qualname`` unless the module is ``builtins``; a custom node's
    module is a file path, so the class presents itself as plain ``MMGTError``.
    """


MMGTNodeError.__module__ = "builtins"
MMGTNodeError.__qualname__ = "MMGTError"


@contextmanager
def node_errors(display_name: str) -> Iterator[None]:
    """Re-raise MMGT errors from the core as ``[<node>] <message>`` without a wall of traceback."""
    try:
        yield
    except MMGTError as exc:
        raise MMGTNodeError(f"[{display_name}] {exc}") from None


@dataclass
class ManagedModel:
    """A network under the host's model management (``handle``), with its module and weights dtype at hand."""

    handle: host.ModelHandle

    @property
    def module(self) -> torch.nn.Module:
        return self.handle.module

    @property
    def dtype(self) -> torch.dtype:
        return self.handle.dtype


class ModelLoader:
    """Base of the loader nodes: the models/mmgt entry of component ``COMPONENT`` picked in the combo ``PICK``
    (input name, tooltip), then the weights dtype."""

    CATEGORY = LOADERS_CATEGORY
    FUNCTION = "load"
    COMPONENT: str
    PICK: tuple[str, str]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        name, tooltip = cls.PICK
        return {"required": {name: (choices(cls.COMPONENT), {"tooltip": tooltip}), "dtype": DTYPE_INPUT}}

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint: str | None = None, model: str | None = None,
                        folder: str | None = None) -> bool | str:
        """The picked entry checked before the run. ComfyUI passes the inputs this signature names (the loaders'
        combos are called checkpoint, model or folder) and leaves their combo check to it."""
        return validate_file(cls.COMPONENT, {"checkpoint": checkpoint, "model": model, "folder": folder}[cls.PICK[0]])

    @staticmethod
    def managed(node: str, load: Callable[..., Any], name: str, label: str, kind: host.ModelKind, dtype: str,
                network: Callable[[Any], torch.nn.Module] = lambda loaded: loaded) -> tuple[Any, host.ModelHandle]:
        """``load(path, dtype=...)`` of the entry ``name`` in the dtype that ``dtype`` picks for a ``kind`` network,
        and the handle of its ``network`` under the host's model management (named ``label``); errors read
        ``[node] ...``."""
        with node_errors(node):
            torch_dtype = host.target_dtype(kind, dtype)
            loaded = load(host.resolve_model_path(name), dtype=torch_dtype)
            return loaded, host.manage_model(network(loaded), label, kind, torch_dtype)


def uint8_frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 → ComfyUI IMAGE (T, H, W, 3) float32 in [0, 1]."""
    return frames.float().div(255.0)


def image_to_uint8_frames(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, C) float → (B, H, W, 3) uint8; alpha is dropped, grey is repeated to RGB."""
    if image.ndim == 3:
        image = image[None]
    if image.shape[-1] == 1:
        image = image.expand(*image.shape[:-1], 3)
    return (image[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8)


def audio_to_mono(audio: dict[str, Any], input_name: str = "audio") -> tuple[torch.Tensor, int]:
    """ComfyUI AUDIO → (mono float waveform, sample rate), with a clear error for malformed values."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(input_name, "is not a ComfyUI AUDIO value.", "Connect a LoadAudio node.")
    return to_mono(audio["waveform"]), int(audio["sample_rate"])
