"""Output node: decode MMGT video latents chunk by chunk and stream them into an mp4 with the driving audio."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import av
import torch

from mmgt_core.errors import InputError
from mmgt_core.media import Mp4Writer
from mmgt_core.timeline import output_frame_count
from mmgt_core.video.vae_codec import ALREADY_UNSCALED, iter_decoded_chunks

from . import host
from .common import SAMPLING_CATEGORY, node_errors
from .stage2 import CHUNK_FRAMES_INPUT, LATENTS_TYPE, VAE_INPUTS, VideoLatents, vae_for_decoding

NODE_NAME = "MMGT Save Video"
PREVIEW_FRAMES = 4


class VideoFile:
    """VIDEO outside ComfyUI (CLI, tests): a written mp4 read on demand, with the methods of ComfyUI's
    ``VideoFromFile`` that only need the file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)

    def get_stream_source(self) -> str:
        return self.path

    def get_dimensions(self) -> tuple[int, int]:
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            return stream.width, stream.height

    def get_duration(self) -> float:
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            return float(stream.duration * stream.time_base)


def video_from_file(path: Path) -> Any:
    """ComfyUI's core VIDEO for a file (``VideoFromFile``), or :class:`VideoFile` outside ComfyUI."""
    try:
        from comfy_api.latest import InputImpl  # type: ignore[import-not-found]

        return InputImpl.VideoFromFile(str(path))
    except ImportError:
        pass
    try:
        from comfy_api.input_impl import VideoFromFile  # type: ignore[import-not-found]  # older ComfyUI

        return VideoFromFile(str(path))
    except ImportError:
        return VideoFile(path)


def next_output_file(filename_prefix: str, root: str, extension: str = ".mp4") -> tuple[Path, str, str]:
    """``<root>/<subfolders>/<name>_00001_.mp4`` with the next free counter, like ComfyUI's savers.

    Returns (path, file name, subfolder). The prefix may hold subfolders but must stay inside ``root``.
    """
    root_path = os.path.abspath(root)
    full = os.path.normpath(os.path.join(root_path, filename_prefix.strip() or "MMGT"))
    if os.path.commonpath([root_path, full]) != root_path or full == root_path:
        raise InputError("filename_prefix", f"'{filename_prefix}' points outside the output folder.",
                         "Use a name like 'MMGT/video' (subfolders are fine, '..' is not).")
    folder, base = os.path.split(full)
    pattern = re.compile(rf"^{re.escape(base)}_(\d+)_?{re.escape(extension)}$")
    taken = [int(m.group(1)) for name in (os.listdir(folder) if os.path.isdir(folder) else [])
             if (m := pattern.match(name))]
    name = f"{base}_{max(taken, default=0) + 1:05d}_{extension}"
    return Path(folder) / name, name, os.path.relpath(folder, root_path).replace(os.sep, "/").lstrip(".")


def _preview_indices(count: int, wanted: int = PREVIEW_FRAMES) -> list[int]:
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


class SaveVideo:
    DESCRIPTION = ("Decodes MMGT video latents a few frames at a time and streams them straight into an H.264 mp4 "
                   "with the driving audio (AAC, first sample on the first frame), so memory does not grow with "
                   "the length. Written to a temporary file and renamed when complete: cancelling or a full disk "
                   "leaves no partial file. Returns the VIDEO (the saved file) and a few preview frames.")
    CATEGORY = SAMPLING_CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("VIDEO", "IMAGE")
    RETURN_NAMES = ("video", "preview")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "latents": (LATENTS_TYPE, {"tooltip": "From MMGT Sample Video (carries the fps and the driving audio)."}),
            "filename_prefix": ("STRING", {"default": "MMGT/video", "tooltip": "File name in ComfyUI's output "
                                           "folder; subfolders allowed. A counter and .mp4 are appended."}),
            "chunk_frames": CHUNK_FRAMES_INPUT,
        }, "optional": {**VAE_INPUTS}}

    def save(self, latents: VideoLatents, filename_prefix: str, chunk_frames: int, mmgt_vae: Any = None,
             vae: Any = None) -> dict[str, Any]:
        with node_errors(NODE_NAME):
            path, name, subfolder = next_output_file(filename_prefix, host.output_directory())
            wave, rate = latents.driving_audio()
            count = output_frame_count(latents.frame_count, None if wave is None else wave.shape[-1],
                                       rate, latents.fps)
            wanted = _preview_indices(count)
            previews: list[torch.Tensor] = []
            progress = host.progress_reporter(count)
            with vae_for_decoding(latents, chunk_frames, mmgt_vae, vae, NODE_NAME) as (decoder, chunk), \
                    Mp4Writer(path, latents.fps, wave, rate) as writer:
                for frames in iter_decoded_chunks(decoder, latents.samples, chunk, scaling_factor=ALREADY_UNSCALED,
                                                  check_cancel=host.check_cancel, stop=count):
                    first = writer.frames_written
                    previews += [frames[i - first] for i in wanted if first <= i < first + frames.shape[0]]
                    writer.write(frames)
                    progress(writer.frames_written, count)
        ui = {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
        return {"ui": ui, "result": (video_from_file(writer.target), torch.stack(previews))}


NODE_CLASS_MAPPINGS = {"MMGT_SaveVideo": SaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"MMGT_SaveVideo": NODE_NAME}
