"""A meter for memory claims that RSS cannot make deterministic: what tensors torch operations return."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass(frozen=True)
class ReturnedTensor:
    shape: tuple[int, ...]
    nbytes: int
    storage: int  # data pointer of the tensor's storage (views of one storage share it)


class ReturnedTensors(TorchDispatchMode):
    """Inside ``with ReturnedTensors() as meter:`` every tensor a torch operation returns is recorded in
    ``meter.tensors`` (shape, size in bytes, storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.tensors: list[ReturnedTensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.tensors.append(ReturnedTensor(tuple(tensor.shape), tensor.numel() * tensor.element_size(),
                                                   tensor.untyped_storage().data_ptr()))
        return out

    @property
    def largest_bytes(self) -> int:
        return max((tensor.nbytes for tensor in self.tensors), default=0)

    def storages_shaped(self, shape: tuple[int, ...]) -> int:
        """How many distinct storages the returned tensors of exactly ``shape`` had."""
        return len({tensor.storage for tensor in self.tensors if tensor.shape == shape})
