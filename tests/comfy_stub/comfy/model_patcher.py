"""Test stub of comfy.model_patcher.ModelPatcher: the parts of its behaviour the host's model management relies on.

Written from the host's semantics (comfy/model_patcher.py, ComfyUI 0.3.x): the patcher holds ``model`` and gives it
a ``device`` attribute (set to the offload device when the model has none), ``model_loaded_weight_memory`` counts
bytes on the load device, ``partially_load`` moves whole modules (all of them on a full load; with a budget, the
largest modules that fit), ``detach`` sends everything back to the offload device. No weight patches (LoRA) here.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import model_management


class ModelPatcher:
    def __init__(self, model: torch.nn.Module, load_device: torch.device, offload_device: torch.device,
                 size: int = 0) -> None:
        self.size = size
        self.model = model
        if getattr(self.model, "device", None) is None:
            self.model.device = offload_device
        self.load_device = load_device
        self.offload_device = offload_device
        if not hasattr(self.model, "model_loaded_weight_memory"):
            self.model.model_loaded_weight_memory = 0
        if not hasattr(self.model, "model_lowvram"):
            self.model.model_lowvram = False
        self.model_size()

    # sizes
    def model_size(self) -> int:
        if self.size <= 0:
            self.size = model_management.module_size(self.model)
        return self.size

    def loaded_size(self) -> int:
        return self.model.model_loaded_weight_memory

    def current_loaded_device(self) -> torch.device:
        return self.model.device

    # moving weights
    def _modules_by_size(self) -> list[tuple[int, torch.nn.Module]]:
        """Modules that own parameters (or buffers) directly, largest first, like the host's load list."""
        found = []
        for module in self.model.modules():
            own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
            if own:
                found.append((sum(t.nelement() * t.element_size() for t in own), module))
        return sorted(found, key=lambda item: -item[0])

    def load(self, device_to: torch.device, lowvram_model_memory: float = 0, force_patch_weights: bool = False,
             full_load: bool = False) -> None:
        model_management.simulate_device_capacity(self, device_to, full_load or lowvram_model_memory == 0)
        if full_load or lowvram_model_memory == 0:
            self.model.to(device_to)
            moved = self.model_size()
            self.model.model_lowvram = False
        else:
            moved = 0
            for size, module in self._modules_by_size():
                if moved + size < lowvram_model_memory:
                    module.to(device_to)  # the host moves only modules that fit; the rest stays offloaded
                    moved += size
            self.model.model_lowvram = moved < self.model_size()
        self.model.device = device_to
        self.model.model_loaded_weight_memory = moved

    def unpatch_model(self, device_to: Optional[torch.device] = None, unpatch_weights: bool = True) -> None:
        if unpatch_weights and device_to is not None:
            self.model.to(device_to)
            self.model.device = device_to
            self.model.model_loaded_weight_memory = 0
            self.model.model_lowvram = False

    def partially_load(self, device_to: torch.device, extra_memory: float = 0,
                       force_patch_weights: bool = False) -> int:
        before = self.model.model_loaded_weight_memory
        if before > 0 and not self.model.model_lowvram:
            return 0  # already wholly loaded
        full = before + extra_memory > self.model_size()
        try:
            self.load(device_to, lowvram_model_memory=before + extra_memory, full_load=full)
        except BaseException:
            self.detach()
            raise
        return self.model.model_loaded_weight_memory - before

    def partially_unload(self, device_to: torch.device, memory_to_free: float = 0) -> int:
        freed = 0
        for size, module in sorted(self._modules_by_size(), key=lambda item: item[0]):
            if freed > memory_to_free:
                break
            module.to(device_to)
            freed += size
        self.model.model_lowvram = True
        self.model.model_loaded_weight_memory = max(0, self.model.model_loaded_weight_memory - freed)
        return freed

    def detach(self, unpatch_all: bool = True) -> torch.nn.Module:
        if unpatch_all:
            self.unpatch_model(self.offload_device, unpatch_weights=True)
        return self.model


CoreModelPatcher = ModelPatcher  # newer hosts: an alias (or ModelPatcherDynamic); never a subclass to extend
