"""Minimal test versions of the ComfyUI core nodes our workflows use (same names, types and outputs)."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any

import folder_paths
import numpy as np
import torch
from PIL import Image


def _input_files() -> list[str]:
    directory = folder_paths.get_input_directory()
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


class PreviewImage:
    OUTPUT_NODE = True
    FUNCTION = "preview"
    RETURN_TYPES = ()
    CATEGORY = "image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}}

    def preview(self, images: torch.Tensor) -> dict[str, Any]:
        assert images.ndim == 4 and images.shape[-1] == 3
        return {"ui": {"images": [{"count": int(images.shape[0]), "shape": list(images.shape)}]}, "result": ()}


class MaskToImage:
    FUNCTION = "convert"
    RETURN_TYPES = ("IMAGE",)
    CATEGORY = "mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",)}}

    def convert(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).movedim(1, -1).expand(-1, -1, -1, 3),)


class LoadImage:
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "MASK")
    CATEGORY = "image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": (_input_files(), {"image_upload": True})}}

    def load(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        picture = Image.open(folder_paths.get_annotated_filepath(image))
        rgb = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0)[None]
        if "A" in picture.getbands():
            mask = 1.0 - torch.from_numpy(np.asarray(picture.getchannel("A"), dtype=np.float32) / 255.0)
        else:
            mask = torch.zeros(rgb.shape[1:3])
        return rgb, mask[None]


class LoadAudio:
    FUNCTION = "load"
    RETURN_TYPES = ("AUDIO",)
    CATEGORY = "audio"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"audio": (_input_files(), {"audio_upload": True})}}

    def load(self, audio: str) -> tuple[dict[str, Any]]:
        import av

        with av.open(folder_paths.get_annotated_filepath(audio)) as container:
            stream = container.streams.audio[0]
            rate = stream.rate
            chunks = [frame.to_ndarray().reshape(frame.layout.nb_channels if frame.format.is_planar else 1, -1)
                      .astype(np.float32) for frame in container.decode(stream)]
        samples = np.concatenate(chunks, axis=1)
        if np.issubdtype(samples.dtype, np.integer):
            samples = samples / 32768.0
        return ({"waveform": torch.from_numpy(samples)[None], "sample_rate": rate},)


class CreateVideo:
    FUNCTION = "create"
    RETURN_TYPES = ("VIDEO",)
    CATEGORY = "image/video"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",), "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0})},
                "optional": {"audio": ("AUDIO",)}}

    def create(self, images: torch.Tensor, fps: float, audio: dict[str, Any] | None = None) -> tuple[Any]:
        return ({"images": images, "frame_rate": Fraction(fps).limit_denominator(1000), "audio": audio},)


class SaveVideo:
    OUTPUT_NODE = True
    FUNCTION = "save"
    RETURN_TYPES = ()
    CATEGORY = "image/video"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"video": ("VIDEO",), "filename_prefix": ("STRING", {"default": "video/ComfyUI"}),
                             "format": (["auto", "mp4"],), "codec": (["auto", "h264"],)}}

    def save(self, video: dict[str, Any], filename_prefix: str, format: str, codec: str) -> dict[str, Any]:
        import av

        out_dir = folder_paths.get_output_directory()
        path = os.path.join(out_dir, f"{filename_prefix}_00001.mp4")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        frames = (video["images"].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        with av.open(path, "w") as container:
            stream = container.add_stream("libx264", rate=video["frame_rate"])
            stream.height, stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
            stream.pix_fmt = "yuv420p"
            audio = video.get("audio")
            audio_stream = container.add_stream("aac", rate=audio["sample_rate"]) if audio else None
            for frame in frames:
                picture = av.VideoFrame.from_ndarray(frame[: stream.height, : stream.width], format="rgb24")
                container.mux(stream.encode(picture))
            container.mux(stream.encode())
            if audio_stream is not None:
                wave = audio["waveform"][0].float().numpy()
                layout = "mono" if wave.shape[0] == 1 else "stereo"
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:2]), format="fltp", layout=layout)
                chunk.sample_rate = audio["sample_rate"]
                container.mux(audio_stream.encode(chunk))
                container.mux(audio_stream.encode())
        return {"ui": {"images": [{"filename": os.path.basename(path), "type": "output"}], "animated": [True]},
                "result": ()}


class LoadVideo:
    """comfy_extras.nodes_video.LoadVideo: a video file from input/ (the VIDEO here is the dict CreateVideo makes)."""

    FUNCTION = "load"
    RETURN_TYPES = ("VIDEO",)
    CATEGORY = "image/video"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"file": (_input_files(), {"video_upload": True})}}

    def load(self, file: str) -> tuple[dict[str, Any]]:
        import av

        with av.open(folder_paths.get_annotated_filepath(file)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        images = torch.from_numpy(np.stack(frames)).float() / 255.0
        return ({"images": images, "frame_rate": Fraction(rate), "audio": _decode_audio(file)},)


def _decode_audio(file: str) -> dict[str, Any] | None:
    """The file's first audio stream as AUDIO ({"waveform": (1, C, S) float, "sample_rate"}), as core does."""
    import av

    with av.open(folder_paths.get_annotated_filepath(file)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().astype(np.float32).reshape(stream.channels, -1)
                  if frame.format.is_planar else frame.to_ndarray().astype(np.float32).reshape(-1, stream.channels).T
                  for frame in container.decode(stream)]
        rate = stream.rate
    return {"waveform": torch.from_numpy(np.concatenate(chunks, axis=1))[None], "sample_rate": int(rate)}


class GetVideoComponents:
    """comfy_extras.nodes_video.GetVideoComponents: frames, audio (None without an audio stream) and fps."""

    FUNCTION = "split"
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    CATEGORY = "image/video"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"video": ("VIDEO",)}}

    def split(self, video: dict[str, Any]) -> tuple[torch.Tensor, Any, float]:
        return video["images"], video.get("audio"), float(video["frame_rate"])


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (PreviewImage, MaskToImage, LoadImage, LoadAudio, CreateVideo,
                                                      SaveVideo, LoadVideo, GetVideoComponents)}
