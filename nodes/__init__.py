"""ComfyUI adapters. Each stage module adds its nodes; a stage whose optional packages are missing is skipped
with a logged reason instead of breaking the whole pack."""

from __future__ import annotations

import importlib

from mmgt_core.dependencies import pip_name

from . import host
from .common import LOGGER

STAGE_MODULES = ("pose", "stage1", "stage2", "output", "workflow", "video_pose", "motion", "download", "doctor")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
SKIPPED_MODULES: dict[str, str] = {}

host.register_model_folder()

for _name in STAGE_MODULES:
    try:
        _module = importlib.import_module(f".{_name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(__name__):
            continue  # the stage module itself is not part of this build
        _package = pip_name(exc.name or "")
        SKIPPED_MODULES[_name] = f"missing package '{_package}' (import {exc.name})"
        LOGGER.warning("[MMGT] %s nodes disabled: %s. Fix: run `python -m pip install %s` with ComfyUI's Python, or "
                       "pip install -r requirements.txt in the pack folder.", _name, SKIPPED_MODULES[_name], _package)
        continue
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
