"""Every model file MMGT can use: where it goes, where it comes from, how big it is, and which modes need it.

``downloads`` lists the files ``python -m mmgt_core download`` / the MMGT Download Models node fetch from the
Hugging Face hub (repo, path in the repo, path under models/mmgt). An entry without downloads must be fetched by
hand; its ``source`` says from where. The WavLM row is fetched as the transformers folder microsoft/wavlm-large
(an accepted alternative): the official unilm ``WavLM-Large.pt`` is not on the hub (github.com/microsoft/unilm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RemoteFile:
    """One file on the Hugging Face hub and where it goes under ``models/mmgt``."""

    repo: str
    remote_path: str
    local_path: str
    revision: str = "main"


@dataclass(frozen=True)
class ModelFile:
    """One model file or folder under ``models/mmgt``."""

    key: str
    path: str  # relative to models/mmgt; a trailing "/" means a Hugging Face folder
    alternatives: tuple[str, ...]
    what: str
    source: str
    size: str
    licence: str
    modes: tuple[str, ...]
    downloads: tuple[RemoteFile, ...] = ()

    @property
    def is_folder(self) -> bool:
        """True for a Hugging Face model folder (config.json + weights) rather than one file."""
        return self.path.endswith("/")

    @property
    def names(self) -> tuple[str, ...]:
        """The expected name first, then the accepted alternatives, without trailing slashes."""
        return tuple(name.rstrip("/") for name in (self.path, *self.alternatives))

    def find(self, roots: list[Path]) -> Path | None:
        """The first existing location of this file (or an alternative) under ``roots``."""
        for root in roots:
            for name in self.names:
                if (candidate := root / name).exists():
                    return candidate
        return None


MODES = ("audio→video", "pose→video", "audio→pose")

MMGT_REPO = "addtime/MMGT_pretrained"
DWPOSE_REPO = "yzd-v/DWPose"

MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile("smga", "audio2pose_best_model.pt", ("smga.safetensors",),
              "Stage-I SMGA audio→pose model", "huggingface.co/addtime/MMGT_pretrained (stage_1/)",
              "≈1 GB (90 M params)", "see source", ("audio→video", "audio→pose"),
              (RemoteFile(MMGT_REPO, "stage_1/audio2pose_best_model.pt", "audio2pose_best_model.pt"),)),
    ModelFile("wavlm", "wavlm/WavLM-Large.pt", ("wavlm-large/",),
              "WavLM-Large speech encoder (unilm .pt, or a transformers folder)",
              "github.com/microsoft/unilm (WavLM-Large.pt, by hand) or huggingface.co/microsoft/wavlm-large "
              "(downloaded as wavlm-large/)", "1.26 GB", "MIT", ("audio→video", "audio→pose"),
              (RemoteFile("microsoft/wavlm-large", "config.json", "wavlm-large/config.json"),
               RemoteFile("microsoft/wavlm-large", "pytorch_model.bin", "wavlm-large/pytorch_model.bin"))),
    ModelFile("dwpose_det", "dwpose/yolox_l.onnx", (), "DWPose person detector",
              "huggingface.co/yzd-v/DWPose", "217 MB", "Apache-2.0", ("audio→video", "audio→pose"),
              (RemoteFile(DWPOSE_REPO, "yolox_l.onnx", "dwpose/yolox_l.onnx"),)),
    ModelFile("dwpose_pose", "dwpose/dw-ll_ucoco_384.onnx", (), "DWPose whole-body keypoints",
              "huggingface.co/yzd-v/DWPose", "134 MB", "Apache-2.0", ("audio→video", "audio→pose"),
              (RemoteFile(DWPOSE_REPO, "dw-ll_ucoco_384.onnx", "dwpose/dw-ll_ucoco_384.onnx"),)),
    ModelFile("video_net", "net-32500.pth", ("net-32500.safetensors", "mmgt_video.safetensors"),
              "Stage-II video network (ReferenceNet, 3D UNet, PoseGuider, AudioProj)",
              "huggingface.co/addtime/MMGT_pretrained (stage_2/process_2/)", "≈7.5–9.2 GB", "see source",
              ("audio→video", "pose→video"),
              (RemoteFile(MMGT_REPO, "stage_2/process_2/net-32500.pth", "net-32500.pth"),)),
    ModelFile("vae", "sd-vae-ft-mse/", (), "SD VAE (or use ComfyUI's VAE loader)",
              "huggingface.co/stabilityai/sd-vae-ft-mse", "335 MB", "MIT", ("audio→video", "pose→video"),
              (RemoteFile("stabilityai/sd-vae-ft-mse", "config.json", "sd-vae-ft-mse/config.json"),
               RemoteFile("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors",
                          "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"))),
    ModelFile("image_encoder", "image_encoder/", (), "CLIP ViT-L/14 image encoder (or ComfyUI's CLIP Vision)",
              "huggingface.co/lambdalabs/sd-image-variations-diffusers (image_encoder/)", "1.2 GB", "MIT",
              ("audio→video", "pose→video"),
              (RemoteFile("lambdalabs/sd-image-variations-diffusers", "image_encoder/config.json",
                          "image_encoder/config.json"),
               RemoteFile("lambdalabs/sd-image-variations-diffusers", "image_encoder/pytorch_model.bin",
                          "image_encoder/pytorch_model.bin"))),
    ModelFile("wav2vec2", "wav2vec2-base-960h/", (), "wav2vec2 speech features for MM-HAA",
              "huggingface.co/facebook/wav2vec2-base-960h", "378 MB", "Apache-2.0", ("audio→video", "pose→video"),
              tuple(RemoteFile("facebook/wav2vec2-base-960h", name, f"wav2vec2-base-960h/{name}")
                    for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin"))),
)

MODEL_FILES_BY_KEY: dict[str, ModelFile] = {model.key: model for model in MODEL_FILES}
