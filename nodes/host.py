"""The one place that talks to the ComfyUI host (``folder_paths``, ``comfy.*``).

Inside ComfyUI it registers the ``mmgt`` model folder, uses ComfyUI's devices, its ``ProgressBar`` (which is
also the interruption point) and its interrupt flag. Outside ComfyUI (CLI, training, tests) it falls back to
plain torch: CUDA when available, else CPU; tqdm for progress; a cancel check that never cancels; a models
folder given by ``MMGT_MODELS_DIR`` or ``./models/mmgt``.

Importing this module never downloads, never creates folders and never initialises CUDA.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from mmgt_core.errors import WeightsError
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
DEVICE_CHOICES = ["auto", "cpu", "cuda"]
OFFLOAD_CHOICES = ["none", "model_cpu_offload"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def register_model_folder() -> None:
    """Register ``models/mmgt`` with ComfyUI (no folder is created; users create it when they add files)."""
    if not IN_COMFYUI:
        return
    path = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    if MODEL_FOLDER in folder_paths.folder_names_and_paths:
        paths, extensions = folder_paths.folder_names_and_paths[MODEL_FOLDER]
        if path not in paths:
            paths.append(path)
        extensions.update(WEIGHT_EXTENSIONS)
    else:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([path], set(WEIGHT_EXTENSIONS))


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


def list_model_dirs() -> list[str]:
    """Relative paths of sub-folders (e.g. Hugging Face model folders) under the MMGT model folders."""
    names: set[str] = set()
    for root in model_dirs():
        if root.is_dir():
            names.update(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())
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


def torch_device(choice: str = "auto") -> torch.device:
    """The compute device: ComfyUI's choice inside ComfyUI, else CUDA when available, else CPU."""
    if choice != "auto":
        if choice == "cuda" and not torch.cuda.is_available():
            raise WeightsError("device 'cuda' was chosen but no CUDA GPU is available; choose 'auto' or 'cpu'.")
        return torch.device(choice)
    if IN_COMFYUI:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where idle weights wait (ComfyUI's unet offload device, or the CPU)."""
    if IN_COMFYUI:
        return model_management.unet_offload_device()
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Turn a dtype choice into a torch dtype. 'auto' is fp16 on CUDA and bf16 on CPU; fp16 on CPU becomes bf16."""
    if name not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {name!r}")
    if device.type == "cpu" and name in ("auto", "fp16"):
        return torch.bfloat16  # fp16 matmuls are ~200× slower than bf16 on CPUs
    if name == "auto":
        return torch.float16
    return _DTYPES[name]


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


def temp_directory() -> str:
    """ComfyUI's temp folder, or the system temp folder."""
    return folder_paths.get_temp_directory() if IN_COMFYUI else tempfile.gettempdir()


def input_directory() -> str:
    """ComfyUI's input folder, or ./input."""
    return folder_paths.get_input_directory() if IN_COMFYUI else os.path.abspath("input")


def list_input_files() -> list[str]:
    """Files directly in the input folder (empty when it does not exist)."""
    directory = input_directory()
    return sorted(f for f in os.listdir(directory) if os.path.isfile(os.path.join(directory, f))) \
        if os.path.isdir(directory) else []


def output_directory() -> str:
    """ComfyUI's output folder, or ./output."""
    return folder_paths.get_output_directory() if IN_COMFYUI else os.path.abspath("output")

