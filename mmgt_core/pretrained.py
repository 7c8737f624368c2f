"""Local Hugging Face model folders (transformers and diffusers ``from_pretrained``): never downloads, third-party
load reports quieted, every load verified, failures said in words."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .errors import WeightsError
from .quiet import quiet_loading
from .weights import nothing_allowed, readable_load_error


def load_pretrained(model_class: Any, folder: str | os.PathLike[str], what: str, kind: Optional[str] = None,
                    fix: str = "", may_lack: Callable[[str], bool] = nothing_allowed) -> Any:
    """``model_class.from_pretrained(folder, local_files_only=True)``, quietly.

    ``kind`` (a :mod:`mmgt_core.model_files` key) first checks the folder's config.json. Raises WeightsError
    naming ``what`` (and adding ``fix``) when the folder cannot be loaded or a weight is missing or mis-shaped;
    ``may_lack(key)`` allows a missing weight.
    """
    from .model_files import require_folder_kind

    folder = Path(folder)
    if kind is not None:
        require_folder_kind(folder, kind)
    try:
        with quiet_loading():
            model, info = model_class.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, pickle.UnpicklingError) as error:
        raise WeightsError(f"could not load the {what} from '{folder}': {readable_load_error(error)} {fix}".rstrip()
                           ) from error
    missing = [key for key in info["missing_keys"] if not may_lack(key)]
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise WeightsError(f"the {what} weights in '{folder}' do not match its config: missing {missing[:8]}, "
                           f"mismatched {mismatched[:8]}. {fix}".rstrip())
    return model


def load_vae(folder: str | os.PathLike[str], device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> nn.Module:
    """A local diffusers ``AutoencoderKL`` folder (sd-vae-ft-mse) in eval mode."""
    from diffusers import AutoencoderKL

    vae = load_pretrained(AutoencoderKL, folder, "VAE", kind="vae",
                          fix="Put stabilityai/sd-vae-ft-mse (config.json + weights) in models/mmgt/sd-vae-ft-mse.")
    with quiet_loading():  # diffusers warns about casting on .to()
        return vae.to(device=device, dtype=dtype).eval()
