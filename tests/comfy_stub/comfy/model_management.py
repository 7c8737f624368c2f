"""Test stub of comfy.model_management: CPU devices and the interrupt flag."""

from __future__ import annotations

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


def get_torch_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def soft_empty_cache(force: bool = False) -> None:
    return None
