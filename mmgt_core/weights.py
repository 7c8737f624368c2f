"""Safe weight files: open, identify, verify and convert MMGT checkpoints.

Weights are data, never code. ``.safetensors`` files are read directly; ``.pt``/``.pth``/``.ckpt`` files are
opened only with ``torch.load(weights_only=True)``, which refuses any pickle that would need to import or run
code. Every load into a module goes through :func:`strict_load`, which reports missing, unexpected and
mis-shaped keys in words a person can act on.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import WeightsError
from .files import atomic_write

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"

META_COMPONENT = "mmgt_component"
META_CONFIG = "mmgt_config"
META_SOURCE = "mmgt_source"

COMPONENT_SMGA = "smga"
COMPONENT_VIDEO_NET = "video_net"
COMPONENT_WAVLM_UNILM = "wavlm_unilm"
COMPONENT_WAVLM = "wavlm"
COMPONENT_UNKNOWN = "unknown"

COMPONENT_DESCRIPTIONS = {
    COMPONENT_SMGA: "Stage-I SMGA audio-to-pose model (official audio2pose_best_model.pt)",
    COMPONENT_VIDEO_NET: "Stage-II video network (official net-*.pth: ReferenceNet + 3D UNet + PoseGuider + AudioProj)",
    COMPONENT_WAVLM_UNILM: "WavLM in the microsoft/unilm layout (official WavLM-Large.pt)",
    COMPONENT_WAVLM: "WavLM converted to the transformers layout",
    COMPONENT_UNKNOWN: "unrecognised weights",
}

VIDEO_NET_PREFIXES = ("reference_unet.", "denoising_unet.", "pose_guider.", "audioproj.")
SMGA_SIGNATURE_KEYS = ("input_projection.weight", "null_cond_embed", "final_layer.weight")


def _flatten_tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten nested dicts of tensors into one dotted-key dict (non-tensor leaves are dropped)."""
    flat: dict[str, torch.Tensor] = {}
    if isinstance(tree, torch.Tensor):
        flat[prefix.rstrip(".")] = tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            flat.update(_flatten_tensors(value, f"{prefix}{key}."))
    return flat


def readable_load_error(error: BaseException) -> str:
    """One line for a failed load; a refused pickle (also when a library wrapped it) says that this pack never
    unpickles code."""
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and not isinstance(cause, pickle.UnpicklingError) and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, pickle.UnpicklingError):
        return ("a pickled weight file in it holds code or objects that are not plain weights, and this pack never "
                "unpickles code. Use the model's .safetensors weights, or re-download the folder from its source.")
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _torch_load_safely(path: Path) -> Any:
    """torch.load with weights_only=True; turn a refusal into a message that says why and what to do."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"Refused to open '{path.name}': it contains pickled code or objects that are not plain weights, "
            f"and this pack never unpickles code ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
            "Get the file from its official source, or convert a trusted copy to .safetensors on a machine you "
            "control with `python -m mmgt_core convert IN OUT`."
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"Could not read '{path}': {exc}. The file may be truncated or not a PyTorch file.") from exc


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Open a weight file safely and return ``(state_dict, metadata)``.

    Official containers are unwrapped: an SMGA checkpoint yields its ``ema_state_dict`` and a unilm WavLM
    checkpoint yields its ``model`` dict (with ``cfg`` stored as JSON under metadata ``mmgt_config``).
    """
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"Weight file not found: '{file}'.")
    if file.suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(file)
    if file.suffix in PICKLE_SUFFIXES:
        return _unwrap_official(_torch_load_safely(file), file)
    raise WeightsError(
        f"'{file.name}' has an unsupported extension. Use .safetensors, or an official .pt/.pth checkpoint."
    )


def _load_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"Could not read '{file}': {exc}. The file may be truncated or not safetensors.") from exc
    return state, metadata


def _unwrap_official(obj: Any, file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Pick the weights out of the official checkpoint containers."""
    metadata = {META_SOURCE: file.name}
    if isinstance(obj, Mapping):
        if "ema_state_dict" in obj:  # official SMGA checkpoint; the EMA copy is what inference uses
            metadata[META_COMPONENT] = COMPONENT_SMGA
            return _strip_module_prefix(_flatten_tensors(obj["ema_state_dict"])), metadata
        if "cfg" in obj and "model" in obj:  # microsoft/unilm WavLM checkpoint
            metadata[META_COMPONENT] = COMPONENT_WAVLM_UNILM
            metadata[META_CONFIG] = json.dumps(_jsonable(obj["cfg"]))
            return _flatten_tensors(obj["model"]), metadata
        if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            return _strip_module_prefix(_flatten_tensors(obj["state_dict"])), metadata
        state = _flatten_tensors(obj)
        if state:
            return _strip_module_prefix(state), metadata
    raise WeightsError(f"'{file.name}' holds no tensors that this pack recognises as model weights.")


def _jsonable(value: Any) -> Any:
    """Best-effort conversion of a config object to JSON-compatible data."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a DataParallel/DDP ``module.`` prefix when every key has it."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return state


def detect_component(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """Name the MMGT component a state dict holds (metadata first, then key signatures)."""
    metadata = metadata or {}
    if metadata.get(META_COMPONENT):
        return metadata[META_COMPONENT]
    keys = state_dict.keys()
    if all(key in state_dict for key in SMGA_SIGNATURE_KEYS):
        return COMPONENT_SMGA
    prefixes_present = {prefix for prefix in VIDEO_NET_PREFIXES for key in keys if key.startswith(prefix)}
    if {"reference_unet.", "denoising_unet."} <= prefixes_present:
        return COMPONENT_VIDEO_NET
    if any(key.startswith("feature_extractor.conv_layers.") for key in keys) and any(
        key.startswith("encoder.layers.") for key in keys
    ):
        # unilm keeps its positional conv at encoder.pos_conv.0, transformers at encoder.pos_conv_embed
        return COMPONENT_WAVLM if any(key.startswith("encoder.pos_conv_embed.") for key in keys) \
            else COMPONENT_WAVLM_UNILM
    return COMPONENT_UNKNOWN


def require_component(
    state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str], expected: str, source: str
) -> None:
    """Raise a readable WeightsError when a file holds another component than the loader expects."""
    found = detect_component(state_dict, metadata)
    if found != expected:
        raise WeightsError(
            f"'{source}' holds the {COMPONENT_DESCRIPTIONS.get(found, found)}, but this loader needs the "
            f"{COMPONENT_DESCRIPTIONS.get(expected, expected)}. Pick the right file in the loader node."
        )


def nothing_allowed(key: str) -> bool:
    """The default allowance of :func:`strict_load`: no key may be missing or ignored."""
    return False


def _describe_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def strict_load(
    module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], component: str, source: str,
    may_lack: Callable[[str], bool] = nothing_allowed, may_ignore: Callable[[str], bool] = nothing_allowed,
) -> list[str]:
    """Load ``state_dict`` into ``module``: every key must match by name and shape, or WeightsError lists every
    mismatch. ``may_lack(key)`` lets a module key keep its initial value; ``may_ignore(key)`` drops a file key the
    module lacks. Returns the loaded keys."""
    own = module.state_dict()
    missing = sorted(key for key in set(own) - set(state_dict) if not may_lack(key))
    unexpected = sorted(key for key in set(state_dict) - set(own) if not may_ignore(key))
    mis_shaped = sorted(
        f"{key} (file {tuple(state_dict[key].shape)} vs model {tuple(own[key].shape)})"
        for key in set(own) & set(state_dict)
        if tuple(own[key].shape) != tuple(state_dict[key].shape)
    )
    if missing or unexpected or mis_shaped:
        parts = [f"'{source}' does not match the {COMPONENT_DESCRIPTIONS.get(component, component)}:"]
        for keys, what in ((missing, "missing keys"), (unexpected, "unexpected keys"),
                           (mis_shaped, "keys with other shapes")):
            if keys:
                parts.append(f"{len(keys)} {what} [{_describe_keys(keys)}]")
        parts.append("Check that the file is the right component and the model config matches it.")
        raise WeightsError(" ".join(parts))
    usable = {key: value for key, value in state_dict.items() if key in own}
    module.load_state_dict(usable, strict=len(usable) == len(own))
    return sorted(usable)


def save_weights(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    component: str,
    config: Mapping[str, Any] | None,
    source: str,
) -> Path:
    """Write ``state_dict`` as safetensors with MMGT metadata, atomically (temp file + rename)."""
    target = Path(path)
    # safetensors refuses tensors that share storage; the official SMGA shares one rotary buffer.
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state_dict.items()}
    metadata = {META_COMPONENT: component, META_CONFIG: json.dumps(_jsonable(config or {})), META_SOURCE: source}
    with atomic_write(target) as temp:
        save_file(tensors, str(temp), metadata=metadata)
    return target


def read_config(metadata: Mapping[str, str]) -> dict[str, Any]:
    """Return the JSON config stored in our safetensors metadata (empty when absent)."""
    raw = metadata.get(META_CONFIG)
    return json.loads(raw) if raw else {}
