"""Run inside a real ComfyUI checkout (cwd and sys.path = COMFYUI_PATH): nodes/host.py's model handles against the
host's own comfy.model_management / comfy.model_patcher on the CPU (--cpu). Prints "REAL HOST OK" at the end.

Used by tests/test_real_comfyui.py::test_model_handles_work_with_the_real_model_management. A stand-in for
torchvision is installed only when the interpreter lacks it (comfy.model_base imports it; nothing here uses it).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from pathlib import Path

sys.argv = ["main.py", "--cpu"]
from diffusers import AutoencoderKL  # noqa: E402  (imported before any torchvision stand-in)

if importlib.util.find_spec("torchvision") is None:
    class _Anything(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)
            return _Anything(name)

        def __call__(self, *args: object, **kwargs: object) -> object:
            return _Anything("call")

    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops"):
        sys.modules[name] = _Anything(name)

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher as mp  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nodes import host  # noqa: E402

records: list[str] = []
handler = logging.Handler()
handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)

assert host.IN_COMFYUI
vae = AutoencoderKL(block_out_channels=(16, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, latent_channels=4)
mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
vae_handle = host.manage_model(vae, "the VAE", "vae", host.target_dtype("vae", "auto"))
mlp_handle = host.manage_model(mlp, "SMGA", "diffusion", host.target_dtype("diffusion", "bf16"))
expected_class = getattr(mp, "CoreModelPatcher", None) or mp.ModelPatcher
assert type(vae_handle.patcher) is expected_class, type(vae_handle.patcher)
assert mlp_handle.dtype == torch.bfloat16 and vae_handle.dtype != torch.float16

with host.compute_with([vae_handle, mlp_handle], stage="smoke", workload="x", lower="y", memory_required=2**20):
    vae_handle.module.decode(torch.randn(1, 4, 8, 8, dtype=vae_handle.dtype))
    mlp_handle.module(torch.randn(3, 8, dtype=torch.bfloat16))
assert {m.model for m in mm.current_loaded_models} == {vae_handle.patcher, mlp_handle.patcher}
assert any(r.startswith("Requested to load MMGT_AutoencoderKL") for r in records), records
mm.unload_all_models()
assert mm.current_loaded_models == [] and vae_handle.patcher.loaded_size() == 0

try:
    with host.compute_with([mlp_handle], stage="Stage X", workload="9 frames", lower="the size", memory_required=1):
        raise torch.OutOfMemoryError("CUDA out of memory")
except host.ComputeMemoryError as error:
    assert "Stage X" in str(error) and "9 frames" in str(error) and "Lower the size" in str(error)
else:
    raise AssertionError("an out-of-memory error must become a ComputeMemoryError")
assert mm.current_loaded_models and mm.current_loaded_models[0].model is mlp_handle.patcher  # reloaded cleanly
print(f"patcher {type(vae_handle.patcher).__name__}; log: {[r for r in records if 'MMGT_' in r]}")
print("REAL HOST OK")
