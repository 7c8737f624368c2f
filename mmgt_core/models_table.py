"""Every model file MMGT can use: where it goes, where it comes from, how big it is, and which modes need it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    def find(self, roots: list[Path]) -> Path | None:
        """The first existing location of this file (or an alternative) under ``roots``."""
        for root in roots:
            for name in (self.path, *self.alternatives):
                candidate = root / name.rstrip("/")
                if candidate.exists():
                    return candidate
        return None


MODES = ("audio→video", "pose→video", "audio→pose")

MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile("smga", "audio2pose_best_model.pt", ("smga.safetensors",),
              "Stage-I SMGA audio→pose model", "huggingface.co/addtime/MMGT_pretrained (stage_1/)",
              "≈1 GB (90 M params)", "see source", ("audio→video", "audio→pose")),
    ModelFile("wavlm", "wavlm/WavLM-Large.pt", ("wavlm-large/",),
              "WavLM-Large speech encoder (unilm .pt, or a transformers folder)",
              "github.com/microsoft/unilm (WavLM) or huggingface.co/microsoft/wavlm-large", "1.26 GB", "MIT",
              ("audio→video", "audio→pose")),
    ModelFile("dwpose_det", "dwpose/yolox_l.onnx", (), "DWPose person detector",
              "huggingface.co/yzd-v/DWPose", "217 MB", "Apache-2.0", ("audio→video", "audio→pose")),
    ModelFile("dwpose_pose", "dwpose/dw-ll_ucoco_384.onnx", (), "DWPose whole-body keypoints",
              "huggingface.co/yzd-v/DWPose", "134 MB", "Apache-2.0", ("audio→video", "audio→pose")),
    ModelFile("video_net", "net-32500.pth", ("net-32500.safetensors", "mmgt_video.safetensors"),
              "Stage-II video network (ReferenceNet, 3D UNet, PoseGuider, AudioProj)",
              "huggingface.co/addtime/MMGT_pretrained (stage_2/process_2/)", "≈7.5–9.2 GB", "see source",
              ("audio→video", "pose→video")),
    ModelFile("vae", "sd-vae-ft-mse/", (), "SD VAE (or use ComfyUI's VAE loader)",
              "huggingface.co/stabilityai/sd-vae-ft-mse", "335 MB", "MIT", ("audio→video", "pose→video")),
    ModelFile("image_encoder", "image_encoder/", (), "CLIP ViT-L/14 image encoder (or ComfyUI's CLIP Vision)",
              "huggingface.co/lambdalabs/sd-image-variations-diffusers (image_encoder/)", "1.2 GB", "MIT",
              ("audio→video", "pose→video")),
    ModelFile("wav2vec2", "wav2vec2-base-960h/", (), "wav2vec2 speech features for MM-HAA",
              "huggingface.co/facebook/wav2vec2-base-960h", "378 MB", "Apache-2.0", ("audio→video", "pose→video")),
)
