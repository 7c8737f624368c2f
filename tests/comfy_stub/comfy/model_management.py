"""Test stub of comfy.model_management: devices, dtype policy, the interrupt flag and the model-memory bookkeeping.

The bookkeeping follows the host's semantics (comfy/model_management.py, ComfyUI 0.3.x): ``load_models_gpu`` wraps
each patcher in a ``LoadedModel``, reuses the entry already in ``current_loaded_models`` (most recent first), frees
room on a non-CPU load device for the weights plus ``memory_required`` (plus a reserve) by unloading other models,
then loads - fully when ``force_full_load`` (or on a CPU), else within a low-VRAM budget. ``free_memory`` unloads the
least useful models first; ``unload_all_models`` is ``free_memory(1e30, get_torch_device())``.

For tests, the compute device can be made distinct from the CPU by setting ``_torch_device = torch.device("cpu", 0)``
(tensors stay on the CPU; the patchers' bookkeeping and the ``.to()`` targets show where ComfyUI put them) and
given a capacity with ``DEVICE_CAPACITY``: a load past it raises ``torch.OutOfMemoryError`` like a full GPU.
"""

from __future__ import annotations

from typing import Any, Optional

import torch


class InterruptProcessingException(Exception):
    pass


interrupt_processing = False


def interrupt_current_processing(value: bool = True) -> None:
    global interrupt_processing
    interrupt_processing = value


def throw_exception_if_processing_interrupted() -> None:
    global interrupt_processing
    if interrupt_processing:
        interrupt_processing = False
        raise InterruptProcessingException()


# ------------------------------------------------------------------------------------------------------ devices

_torch_device = torch.device("cpu")
DEVICE_CAPACITY: Optional[int] = None  # bytes of the simulated compute device; None = unlimited
EXTRA_RESERVED_MEMORY = 400 * 1024 * 1024
LOG: list[tuple[str, Any]] = []  # ("load_models_gpu", (names, memory_required)), ("unload", name), ...


def get_torch_device() -> torch.device:
    return _torch_device


def is_device_cpu(device: torch.device) -> bool:
    return device.type == "cpu" and device.index is None


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return _torch_device


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


def vae_device() -> torch.device:
    return _torch_device


def vae_offload_device() -> torch.device:
    return torch.device("cpu")


def unet_dtype(device: Optional[torch.device] = None, model_params: int = 0,
               supported_dtypes: tuple = (torch.float16, torch.bfloat16, torch.float32),
               weight_dtype: Optional[torch.dtype] = None) -> torch.dtype:
    return torch.float32  # what the host picks on a CPU (no fp16/bf16 speed-up there)


def text_encoder_dtype(device: Optional[torch.device] = None) -> torch.dtype:
    return torch.float16  # the host's answer even on a CPU (its own encoders cast layer by layer)


def vae_dtype(device: Optional[torch.device] = None, allowed_dtypes: tuple = ()) -> torch.dtype:
    return torch.float32


def soft_empty_cache(force: bool = False) -> None:
    return None


# ----------------------------------------------------------------------------------------------- model memory


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def _bytes_on(device: torch.device) -> int:
    return sum(m.model.loaded_size() for m in current_loaded_models if m.device == device and m.model is not None)


def get_free_memory(device: Optional[torch.device] = None, torch_free_too: bool = False) -> Any:
    device = device or _torch_device
    if is_device_cpu(device) or DEVICE_CAPACITY is None:
        free = 64 * 2**30
    else:
        free = DEVICE_CAPACITY - _bytes_on(device)
    return (free, 0) if torch_free_too else free


def simulate_device_capacity(patcher: Any, device: torch.device, whole: bool) -> None:
    """Raise like a full GPU when loading ``patcher`` onto the simulated device would exceed its capacity."""
    if DEVICE_CAPACITY is None or is_device_cpu(device) or not whole:
        return
    others = sum(m.model.loaded_size() for m in current_loaded_models
                 if m.device == device and m.model is not None and m.model is not patcher)
    if others + patcher.model_size() > DEVICE_CAPACITY:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate ... (simulated by the test stub)")


def minimum_inference_memory() -> int:
    return int(1024**3 * 0.8) + EXTRA_RESERVED_MEMORY


class LoadedModel:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.device = model.load_device
        self.model_finalizer = None

    def model_memory(self) -> int:
        return self.model.model_size()

    def model_offloaded_memory(self) -> int:
        return self.model.model_size() - self.model.loaded_size()

    def model_memory_required(self, device: torch.device) -> int:
        if device == self.model.current_loaded_device():
            return self.model_offloaded_memory()
        return self.model_memory()

    def model_load(self, lowvram_model_memory: float = 0, force_patch_weights: bool = False) -> Any:
        budget = lowvram_model_memory if lowvram_model_memory != 0 else 1e32
        self.model.partially_load(self.device, budget, force_patch_weights=force_patch_weights)
        return self.model.model

    def model_unload(self, memory_to_free: Optional[float] = None, unpatch_weights: bool = True) -> bool:
        if memory_to_free is not None and memory_to_free < self.model.loaded_size():
            if self.model.partially_unload(self.model.offload_device, memory_to_free) >= memory_to_free:
                return False
        self.model.detach(unpatch_weights)
        LOG.append(("unload", type(self.model.model).__name__))
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoadedModel) and self.model is other.model


current_loaded_models: list[LoadedModel] = []


def free_memory(memory_required: float, device: torch.device, keep_loaded: list = ()) -> list[LoadedModel]:
    candidates = [(-m.model_offloaded_memory(), i) for i, m in enumerate(current_loaded_models)
                  if m.device == device and m not in keep_loaded]
    unloaded = []
    for _, index in sorted(candidates):
        free = get_free_memory(device)
        if free > memory_required:
            break
        if current_loaded_models[index].model_unload(memory_required - free):
            unloaded.append(index)
    return [current_loaded_models.pop(i) for i in sorted(unloaded, reverse=True)]


def load_models_gpu(models: list, memory_required: float = 0, force_patch_weights: bool = False,
                    minimum_memory_required: Optional[float] = None, force_full_load: bool = False) -> None:
    LOG.append(("load_models_gpu", ([type(m.model).__name__ for m in models], memory_required)))
    extra = max(minimum_inference_memory(), memory_required + EXTRA_RESERVED_MEMORY)
    to_load = []
    for patcher in dict.fromkeys(models):
        entry = LoadedModel(patcher)
        if entry in current_loaded_models:
            entry = current_loaded_models[current_loaded_models.index(entry)]
        to_load.append(entry)
    needed: dict[torch.device, float] = {}
    for entry in to_load:
        needed[entry.device] = needed.get(entry.device, 0) + entry.model_memory_required(entry.device)
    for device, weights in needed.items():
        if not is_device_cpu(device):
            free_memory(weights * 1.1 + extra, device)
    for entry in to_load:
        budget = 0
        if not force_full_load and not is_device_cpu(entry.device):
            free = get_free_memory(entry.device) + entry.model.loaded_size()
            budget = max(128 * 2**20, free - extra) - entry.model.loaded_size()
            budget = max(0.1, budget)
        entry.model_load(budget, force_patch_weights)
        if entry in current_loaded_models:
            current_loaded_models.remove(entry)
        current_loaded_models.insert(0, entry)


def unload_all_models() -> None:
    free_memory(1e30, get_torch_device())
