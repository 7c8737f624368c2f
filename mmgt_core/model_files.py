"""Which files in the MMGT model folders can be which component: the lists the loader nodes offer, and the
check their validation runs before anything executes.

A file is first judged by its name and suffix, then confirmed by peeking at its header without loading it: a
safetensors header (our ``mmgt_component`` metadata, else the key names), the key names inside a PyTorch zip
checkpoint (read from its pickle as plain strings, never unpickled), or a Hugging Face folder's config.json
(``model_type`` / ``_class_name``). Peeks are cached by path, modification time and size.
"""

from __future__ import annotations

import json
import os
import pickletools
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .models_table import MODEL_FILES_BY_KEY, ModelFile
from .weights import (
    COMPONENT_DESCRIPTIONS,
    COMPONENT_SMGA,
    COMPONENT_VIDEO_NET,
    COMPONENT_WAVLM,
    COMPONENT_WAVLM_UNILM,
    detect_component,
)

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
UNREADABLE = "unreadable"  # the header could not be read (the name decides)

# Components (weights.py names, plus folder and ONNX kinds) each loader accepts.
ACCEPTED_COMPONENTS: dict[str, tuple[str, ...]] = {
    "smga": (COMPONENT_SMGA,),
    "video_net": (COMPONENT_VIDEO_NET,),
    "wavlm": (COMPONENT_WAVLM_UNILM, COMPONENT_WAVLM, "folder:wavlm"),
    "dwpose_det": ("onnx:dwpose_det",),
    "dwpose_pose": ("onnx:dwpose_pose",),
    "vae": ("folder:vae",),
    "image_encoder": ("folder:image_encoder",),
    "wav2vec2": ("folder:wav2vec2",),
}
# Name hints used when a header cannot be read (and to tell the two DWPose ONNX files apart).
NAME_HINTS: dict[str, tuple[str, ...]] = {
    "smga": ("audio2pose", "smga"),
    "video_net": ("net-", "video"),
    "wavlm": ("wavlm",),
    "dwpose_det": ("yolox", "det"),
    "dwpose_pose": ("dw-ll", "ucoco", "rtmpose", "pose"),
}
FOLDER_DESCRIPTIONS = {
    "folder:vae": "diffusers VAE folder (AutoencoderKL)",
    "folder:image_encoder": "CLIP vision image-encoder folder",
    "folder:wav2vec2": "wav2vec2 folder",
    "folder:wavlm": "WavLM folder (transformers)",
    "folder:other": "Hugging Face folder of another model",
}

_PEEK_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Choice:
    """The loader list for one component: the entries, and whether any of them exists."""

    entries: list[str]
    present: bool


def missing_entry(model: ModelFile) -> str:
    """The one list entry shown when no file of this component is present: what to put where."""
    return f"(missing) put {model.path} in models/mmgt, or run MMGT Download Models"


def describe(kind: str) -> str:
    """Words for a peeked kind (component, folder kind or ONNX kind)."""
    return COMPONENT_DESCRIPTIONS.get(kind) or FOLDER_DESCRIPTIONS.get(kind) or {
        "onnx:dwpose_det": "DWPose person detector (ONNX)", "onnx:dwpose_pose": "DWPose whole-body model (ONNX)",
        UNREADABLE: "file whose header could not be read"}.get(kind, kind)


def _stat_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


def peek_kind(path: str | os.PathLike[str]) -> str:
    """The component a file or folder holds, judged from its header only (cached by path, mtime and size)."""
    path = Path(path)
    probe = path / "config.json" if path.is_dir() else path
    try:
        key = _stat_key(probe)
    except OSError:
        return UNREADABLE if path.is_file() else "folder:other"
    if key not in _PEEK_CACHE:
        _PEEK_CACHE[key] = _peek_folder(probe) if path.is_dir() else _peek_file(path)
    return _PEEK_CACHE[key]


def _peek_folder(config_file: Path) -> str:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "folder:other"
    model_type = str(config.get("model_type", "")).lower()
    architectures = [str(a) for a in config.get("architectures") or []]
    if str(config.get("_class_name", "")).startswith("AutoencoderKL"):
        return "folder:vae"
    if model_type == "clip_vision_model" or any(a.startswith("CLIPVision") for a in architectures):
        return "folder:image_encoder"
    if model_type == "wav2vec2":
        return "folder:wav2vec2"
    if model_type == "wavlm":
        return "folder:wavlm"
    return "folder:other"


def _peek_file(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".onnx"):
        return "onnx:dwpose_det" if any(h in name for h in NAME_HINTS["dwpose_det"]) else "onnx:dwpose_pose"
    try:
        if name.endswith(".safetensors"):
            keys, metadata = _safetensors_header(path)
        else:
            keys, metadata = _pickle_strings(path), {}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, struct.error):
        return UNREADABLE
    if keys is None:
        return UNREADABLE
    if "ema_state_dict" in keys and not metadata:
        return COMPONENT_SMGA
    if {"cfg", "model"} <= keys and any(k.startswith("feature_extractor.conv_layers.") for k in keys):
        return COMPONENT_WAVLM_UNILM
    return detect_component(dict.fromkeys(keys), metadata)


def _safetensors_header(path: Path) -> tuple[set[str], dict[str, str]]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError("safetensors header too large")
        header = json.loads(handle.read(length))
    metadata = header.pop("__metadata__", None) or {}
    return set(header), {str(k): str(v) for k, v in metadata.items()}


def _pickle_strings(path: Path) -> set[str] | None:
    """Every string constant in a PyTorch zip checkpoint's pickle, read as opcodes (nothing is executed)."""
    if not zipfile.is_zipfile(path):
        return None  # legacy (pre-1.6) torch.save format: the name decides
    with zipfile.ZipFile(path) as archive:
        member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
        if member is None:
            return None
        data = archive.read(member)
    strings: set[str] = set()
    for _opcode, argument, _position in pickletools.genops(data):
        if isinstance(argument, str):
            strings.add(argument)
    return strings


def _walk(roots: Iterable[Path]) -> tuple[set[str], set[str]]:
    """(files, Hugging Face folders) under the roots, as relative paths; files inside HF folders are skipped."""
    files: set[str] = set()
    folders: set[str] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            relative = Path(directory).relative_to(root)
            if "config.json" in names and relative != Path("."):
                folders.add(relative.as_posix())
                subdirs[:] = []
                continue
            files.update((relative / n).as_posix() for n in names if not n.startswith("."))
    return files, folders


def find_path(name: str, roots: Iterable[Path]) -> Path | None:
    """The first existing ``root/name`` (or ``name`` itself when it is an absolute path)."""
    if Path(name).is_absolute():
        return Path(name) if Path(name).exists() else None
    for root in roots:
        if (root / name).exists():
            return root / name
    return None


def _candidate(model: ModelFile, relative: str, is_folder: bool) -> bool:
    """Name/suffix pre-filter: could this entry be the component at all?"""
    accepts_folders = any(kind.startswith("folder:") for kind in ACCEPTED_COMPONENTS[model.key])
    if is_folder:
        return accepts_folders
    lower = relative.lower()
    if model.key.startswith("dwpose"):
        return lower.endswith(".onnx")
    return lower.endswith(WEIGHT_SUFFIXES) and not lower.endswith(".bin")


def matches(model: ModelFile, path: Path) -> bool:
    """True when the file or folder at ``path`` holds this loader's component (header peek; name when unreadable)."""
    kind = peek_kind(path)
    if kind == UNREADABLE:
        return any(hint in path.name.lower() for hint in NAME_HINTS.get(model.key, ()))
    return kind in ACCEPTED_COMPONENTS[model.key]


def loader_choices(key: str, roots: Iterable[Path]) -> Choice:
    """The entries a loader lists: files that are its component, the expected name first, then alternatives."""
    model = MODEL_FILES_BY_KEY[key]
    roots = list(roots)
    files, folders = _walk(roots)
    found = []
    for relative, is_folder in [(f, False) for f in sorted(files)] + [(d, True) for d in sorted(folders)]:
        if _candidate(model, relative, is_folder):
            path = find_path(relative, roots)
            if path is not None and matches(model, path):
                found.append(relative)
    preferred = [name for name in model.names if name in found]
    entries = preferred + [name for name in found if name not in preferred]
    return Choice(entries, True) if entries else Choice([missing_entry(model)], False)


def check_choice(key: str, value: str, roots: Iterable[Path]) -> str | None:
    """None when ``value`` names a present file of the right component, else a sentence saying what to do."""
    model = MODEL_FILES_BY_KEY[key]
    roots = list(roots)
    folders = ", ".join(str(r) for r in roots)
    if value.startswith("(missing)"):
        return (f"{model.what} is missing: put {model.path} in the MMGT model folder ({folders}) or run "
                "MMGT Download Models (python -m mmgt_core download), then press R to refresh.")
    path = find_path(value, roots)
    if path is None:
        return (f"'{value}' is missing from the MMGT model folder ({folders}). Put {model.what} there as "
                f"{model.path} (source: {model.source}) or run MMGT Download Models, then press R to refresh.")
    if not matches(model, path):
        return (f"'{value}' holds the {describe(peek_kind(path))}, not the {model.what}. Pick another file, or "
                f"put {model.path} in the MMGT model folder.")
    return None


def require_folder_kind(folder: str | os.PathLike[str], key: str) -> None:
    """Raise a WeightsError unless ``folder`` is a Hugging Face folder of component ``key`` (config.json checked
    before any weights are read)."""
    from .errors import WeightsError

    model = MODEL_FILES_BY_KEY[key]
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"'{folder}' is not a folder. The {model.what} is a Hugging Face folder: put "
                           f"{model.path} in models/mmgt (source: {model.source}).")
    if not (folder / "config.json").is_file():
        raise WeightsError(f"'{folder}' has no config.json, so it is not a Hugging Face model folder. Put the "
                           f"{model.what} there ({model.source}: config.json and the weights).")
    kind = peek_kind(folder)
    if kind not in ACCEPTED_COMPONENTS[key]:
        raise WeightsError(f"'{folder.name}' holds a {describe(kind)}, not the {model.what}. Pick the "
                           f"{model.path} folder in the loader (source: {model.source}).")
