"""Import names of the packages MMGT uses and the pip packages that provide them (one place for both)."""

from __future__ import annotations

PIP_NAMES: dict[str, str] = {
    "cv2": "opencv-python-headless",
    "PIL": "Pillow",
    "av": "av",
    "soxr": "soxr",
    "librosa": "librosa",
    "scipy": "scipy",
    "onnxruntime": "onnxruntime",
    "kornia": "kornia",
    "einops": "einops",
    "safetensors": "safetensors",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "huggingface_hub": "huggingface_hub",
    "mediapipe": "mediapipe",
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "tqdm": "tqdm",
}


def pip_name(module: str) -> str:
    """The pip package that provides the top-level import ``module`` (its own name when not listed)."""
    return PIP_NAMES.get(module.split(".")[0], module.split(".")[0])
