"""The one place that talks to the ComfyUI host (``folder_paths``, ``comfy.*``).

Inside ComfyUI it registers the ``mmgt`` model folder, wraps every network we load in ComfyUI's model patcher
(``ModelHandle``: loaded by ``load_models_gpu`` right before it computes, evictable afterwards), uses ComfyUI's
devices and dtype policy, its ``ProgressBar`` (which is also the interruption point) and its interrupt flag.
Outside ComfyUI (CLI, training, tests) it falls back to plain torch: CUDA when available, else CPU; tqdm for
progress; a cancel check that never cancels; a models folder given by ``MMGT_MODELS_DIR`` or ``./models/mmgt``.

Importing this module never downloads, never creates folders and never initialises CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import nn

from mmgt_core.errors import MMGTError, WeightsError
from mmgt_core.memory import release_freed_heap
from mmgt_core.types import ProgressFn

try:  # ComfyUI present
    import comfy.model_management as model_management  # type: ignore[import-not-found]
    import comfy.utils as comfy_utils  # type: ignore[import-not-found]
    import folder_paths  # type: ignore[import-not-found]

    IN_COMFYUI = True
except ImportError:  # plain Python: CLI, training, tests
    folder_paths = None
    model_management = None
    comfy_utils = None
    IN_COMFYUI = False

MODEL_FOLDER = "mmgt"
WEIGHT_EXTENSIONS = {".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".onnx", ".json"}
DTYPE_CHOICES = ["auto", "fp32", "bf16", "fp16"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def register_model_folder() -> None:
    """Register ``models/mmgt`` with ComfyUI (no folder is created; users create it when they add files)."""
    if not IN_COMFYUI:
        return
    path = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    paths, extensions = folder_paths.folder_names_and_paths.setdefault(MODEL_FOLDER, ([], set()))
    if path not in paths:
        paths.append(path)
    extensions.update(WEIGHT_EXTENSIONS)


def model_dirs() -> list[Path]:
    """Folders searched for MMGT model files, in priority order."""
    if IN_COMFYUI:
        return [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
    return [Path(os.environ.get("MMGT_MODELS_DIR", os.path.join("models", MODEL_FOLDER)))]


def list_model_files() -> list[str]:
    """Relative paths of every file (recursively) under the MMGT model folders."""
    if IN_COMFYUI:
        return sorted(folder_paths.get_filename_list(MODEL_FOLDER))
    names: set[str] = set()
    for root in model_dirs():
        if root.is_dir():
            names.update(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return sorted(names)


def resolve_model_path(name: str) -> str:
    """Absolute path of a file or folder under the MMGT model folders, or a WeightsError saying where it goes."""
    candidate = Path(name)
    if candidate.is_absolute() and candidate.exists():
        return str(candidate)
    for root in model_dirs():
        if (root / name).exists():
            return str(root / name)
    folders = ", ".join(str(p) for p in model_dirs())
    raise WeightsError(f"'{name}' was not found in the MMGT model folder ({folders}). Put the file there and "
                       "refresh the node (press R in ComfyUI).")


# ---------------------------------------------------------------------------------------------------------------
# Model handles: ComfyUI's model management owns where our weights live

ModelKind = Literal["diffusion", "encoder", "vae"]  # ComfyUI's unet / text-encoder / VAE device and dtype policy
OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class ComputeMemoryError(MMGTError):
    """A stage did not fit in the device memory even after the host freed everything it could."""


class _PatcherRoot(nn.Module):
    """The module a ComfyUI patcher holds: our network plus a plain, writable ``device`` attribute (diffusers
    and transformers models expose a read-only ``device`` property, which the patcher must set)."""

    def __init__(self, network: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.network = network
        self.device = device
        self.dtype_of_weights = dtype

    def get_dtype(self) -> torch.dtype:
        return self.dtype_of_weights


@cache
def _root_class(name: str) -> type[_PatcherRoot]:
    """The root class called ``name``, one per network class (ComfyUI logs "Requested to load MMGT_VideoNet")."""
    return type(name, (_PatcherRoot,), {"__doc__": _PatcherRoot.__doc__})


@dataclass(eq=False)
class ModelHandle:
    """One network this pack loaded. Inside ComfyUI a model patcher (``patcher``) tracks it: ComfyUI loads it
    onto ``load_device`` when a node asks (``load_for_compute``) and may evict it to ``offload_device`` at any time
    afterwards. Outside ComfyUI ``load_for_compute`` is a plain ``.to(load_device)``."""

    name: str
    module: nn.Module
    dtype: torch.dtype
    load_device: torch.device
    offload_device: torch.device
    patcher: Any = None


def _kind_devices(kind: ModelKind) -> tuple[torch.device, torch.device]:
    if not IN_COMFYUI:  # CUDA when available, else the CPU
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), torch.device("cpu")
    if kind == "encoder":
        return model_management.text_encoder_device(), model_management.text_encoder_offload_device()
    if kind == "vae":
        return model_management.vae_device(), model_management.vae_offload_device()
    return model_management.get_torch_device(), model_management.unet_offload_device()


def target_dtype(kind: ModelKind, choice: str) -> torch.dtype:
    """The weights dtype for a network of this kind, on the device ComfyUI will compute it on: an explicit choice,
    else ComfyUI's policy for this kind of model (unet_dtype, text_encoder_dtype, vae_dtype), else fp16 on CUDA /
    bf16 on CPU. fp16 on a CPU becomes bf16 (fp16 matmuls are ~200x slower there)."""
    device = _kind_devices(kind)[0]
    if choice not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {choice!r}")
    if choice != "auto":
        dtype = _DTYPES[choice]
    elif not IN_COMFYUI:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    elif kind == "encoder":
        dtype = model_management.text_encoder_dtype(device)
    elif kind == "vae":
        dtype = model_management.vae_dtype(device, [torch.bfloat16, torch.float32])  # core's SD VAE working dtypes
    else:
        dtype = model_management.unet_dtype(device, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if dtype not in _DTYPES.values():
        dtype = torch.float16 if device.type != "cpu" else torch.bfloat16  # fp8 etc. need ComfyUI's cast layers
    if device.type == "cpu" and dtype == torch.float16:
        return torch.bfloat16
    return dtype


def manage_model(module: nn.Module, name: str, kind: ModelKind, dtype: Optional[torch.dtype] = None) -> ModelHandle:
    """Put a freshly loaded network under the host's model management (built on the offload device).

    ``dtype`` None keeps the module's own dtype (e.g. a float32 audio encoder the official code runs in fp32).
    """
    load_device, idle_device = _kind_devices(kind)
    current = next(module.parameters()).dtype
    dtype = current if dtype is None else dtype
    module = (module.to(idle_device) if dtype == current else module.to(device=idle_device, dtype=dtype)).eval()
    handle = ModelHandle(name, module, dtype, load_device, idle_device)
    if IN_COMFYUI:
        import comfy.model_patcher as model_patcher  # type: ignore[import-not-found]

        patcher_class = getattr(model_patcher, "CoreModelPatcher", None) or model_patcher.ModelPatcher
        root = _root_class(f"MMGT_{type(module).__name__}")(module, idle_device, dtype)
        handle.patcher = patcher_class(root, load_device=load_device, offload_device=idle_device,
                                       size=model_management.module_size(module))
    return handle


def _send_back(handles: Sequence[ModelHandle]) -> None:
    """Leave no network half-moved: every weight back on its offload device, ComfyUI's bookkeeping cleared."""
    for handle in handles:
        if handle.patcher is not None:
            loaded = model_management.current_loaded_models
            for index in range(len(loaded) - 1, -1, -1):
                if loaded[index].model is handle.patcher:
                    finalizer = getattr(loaded.pop(index), "model_finalizer", None)
                    if finalizer is not None:
                        finalizer.detach()
            handle.patcher.detach()
        handle.module.to(handle.offload_device)
    soft_empty_cache()


def load_for_compute(handles: Sequence[ModelHandle], memory_required: int, stage: str, workload: str,
                     lower: Optional[str]) -> None:
    """Load the networks a stage is about to run, asking ComfyUI to free ``memory_required`` bytes of working
    memory beside them (it unloads or offloads other models first). A failure while moving weights sends every
    one of them back to its offload device and raises a ComputeMemoryError for out-of-memory."""
    try:
        if IN_COMFYUI:
            # force_full_load: our layers are plain torch modules without ComfyUI's cast-on-demand weights, so
            # they must sit wholly on one device (ComfyUI still frees room first and may evict them later).
            model_management.load_models_gpu([h.patcher for h in handles], memory_required=int(memory_required),
                                             force_full_load=True)
        else:
            for handle in handles:
                handle.module.to(handle.load_device)
    except OutOfMemory:
        _send_back(handles)
        raise ComputeMemoryError(_memory_message(stage, workload, lower, "loading the weights")) from None
    except BaseException:
        _send_back(handles)  # e.g. a cancel or an error mid-move
        raise
    for handle in handles:
        if len({tensor.device for tensor in (*handle.module.parameters(), *handle.module.buffers())}) > 1:
            _send_back(handles)
            raise ComputeMemoryError(f"{stage}: ComfyUI loaded only part of {handle.name} onto "
                                     f"{handle.load_device}; MMGT networks run wholly on one device. Run ComfyUI "
                                     "without --novram, or free memory for it.")


def _memory_message(stage: str, workload: str, lower: Optional[str], when: str) -> str:
    advice = f"Lower {lower}, or start" if lower else "Close other programs using the GPU, or start"
    return (f"{stage} ran out of device memory while {when} for {workload}, even after ComfyUI unloaded the other "
            f"models. {advice} ComfyUI with --lowvram (or --cpu).")


@contextmanager
def compute_with(handles: Sequence[ModelHandle], *, stage: str, workload: str, lower: Optional[str],
                 memory_required: int) -> Iterator[None]:
    """Load ``handles`` for compute, then run the block; an out-of-memory error inside it becomes a readable
    ComputeMemoryError naming the stage, the workload that did not fit and what to lower."""
    release_freed_heap()  # what ran since the last block freed (earlier nodes' locals and after-block work)
    load_for_compute(handles, memory_required, stage, workload, lower)
    try:
        yield
    except OutOfMemory:
        soft_empty_cache()
        raise ComputeMemoryError(_memory_message(stage, workload, lower, "computing")) from None
    finally:
        release_freed_heap()  # the block's freed temporaries leave the RSS before the next node runs


def free_memory_bytes(device: torch.device) -> Optional[int]:
    """Free memory of an accelerator (ComfyUI's count inside ComfyUI); None for a CPU."""
    if IN_COMFYUI:
        return None if model_management.is_device_cpu(device) else int(model_management.get_free_memory(device))
    return int(torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else None


PROGRESS_UPDATES = 100
"""Most progress events one node sends to the browser (one per percent; the last step always goes out)."""


def progress_reporter(total: int) -> ProgressFn:
    """A ``progress(step, total)`` callable: ComfyUI's ProgressBar (throttled to ``PROGRESS_UPDATES`` events; every
    call is still an interruption point), or tqdm."""
    if IN_COMFYUI:
        bar = comfy_utils.ProgressBar(total)
        last_sent = {"bucket": 0, "total": total}

        def report(step: int, new_total: int) -> None:
            if new_total != last_sent["total"]:  # a new total starts the count again
                last_sent.update(bucket=0, total=new_total)
            bucket = min(step, new_total) * PROGRESS_UPDATES // max(new_total, 1)
            if bucket > last_sent["bucket"]:
                last_sent["bucket"] = bucket
                bar.update_absolute(step, new_total)
            else:
                model_management.throw_exception_if_processing_interrupted()

        return report
    from tqdm.auto import tqdm

    bar = tqdm(total=total, leave=False, disable=os.environ.get("MMGT_NO_PROGRESS") == "1")

    def report_tqdm(step: int, new_total: int) -> None:
        bar.total = new_total
        bar.n = step
        bar.refresh()
        if step >= new_total:
            bar.close()

    return report_tqdm


def check_cancel() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel; no-op outside ComfyUI."""
    if IN_COMFYUI:
        model_management.throw_exception_if_processing_interrupted()


def soft_empty_cache() -> None:
    """Give cached accelerator memory back (ComfyUI's helper, or torch's)."""
    if IN_COMFYUI:
        model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def input_directory() -> str:
    """ComfyUI's input folder, or ./input."""
    return folder_paths.get_input_directory() if IN_COMFYUI else os.path.abspath("input")


def list_input_files() -> list[str]:
    """Files directly in the input folder (empty when it does not exist)."""
    directory = input_directory()
    return sorted(f for f in os.listdir(directory) if os.path.isfile(os.path.join(directory, f))) \
        if os.path.isdir(directory) else []


def output_directory() -> str:
    """ComfyUI's output folder, or ``MMGT_OUTPUT_DIR`` / ./output outside ComfyUI."""
    return folder_paths.get_output_directory() if IN_COMFYUI else os.path.abspath(os.environ.get("MMGT_OUTPUT_DIR",
                                                                                                 "output"))

