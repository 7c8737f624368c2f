"""Reading images/audio and writing mp4 with sound through PyAV (no ffmpeg subprocess), atomically."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from .errors import InputError


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (alpha dropped, greyscale expanded)."""
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError("image", f"could not read '{path}': {exc}.", "Use a PNG or JPEG file.") from exc


def read_audio(path: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """Any audio (or video-with-audio) file as a (channels, samples) float32 waveform and its rate."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError("audio", f"'{path}' has no audio track.", "Use a file with speech in it.")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout="mono" if stream.channels == 1 else "stereo")
            chunks = [frame.to_ndarray() for packet in container.decode(stream) for frame in resampler.resample(packet)]
            chunks += [frame.to_ndarray() for frame in resampler.resample(None)]
            rate = int(stream.rate)
    except av.error.FFmpegError as exc:
        raise InputError("audio", f"could not decode '{path}': {exc}.", "Use a WAV, FLAC or MP3 file.") from exc
    if not chunks:
        raise InputError("audio", f"'{path}' holds no audio samples.")
    return torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32)), rate


def write_mp4(path: str | os.PathLike[str], frames: torch.Tensor, fps: float,
              audio: torch.Tensor | None = None, sample_rate: int = 16000) -> Path:
    """Write (T, H, W, 3) frames in [0, 1] as H.264 mp4 with optional AAC audio (channels, samples).

    Written to a temporary file first and renamed, so a failure never leaves a half-written video.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    height, width = pixels.shape[1] // 2 * 2, pixels.shape[2] // 2 * 2  # yuv420p needs even sides
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".mp4", dir=target.parent)
    os.close(handle)
    try:
        with av.open(temp_name, "w", format="mp4") as container:
            video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            sound = container.add_stream("aac", rate=sample_rate) if audio is not None else None
            for frame in pixels:
                container.mux(video.encode(av.VideoFrame.from_ndarray(frame[:height, :width], format="rgb24")))
            container.mux(video.encode())
            if sound is not None:
                wave = audio.float().cpu().numpy().reshape(-1, audio.shape[-1])[:2]
                layout = "mono" if wave.shape[0] == 1 else "stereo"
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave), format="fltp", layout=layout)
                chunk.sample_rate = sample_rate
                container.mux(sound.encode(chunk))
                container.mux(sound.encode())
        os.replace(temp_name, target)
    finally:
        if os.path.exists(temp_name):
            os.remove(temp_name)
    return target
