"""Reading images/audio and writing mp4 with sound through PyAV (no ffmpeg subprocess), atomically.

Every mp4 this pack writes goes through :class:`Mp4Writer`:

* **Sample-exact A/V sync.** H.264 video + AAC audio. AAC encoders prepend one frame of priming (1024
  samples); the audio frames are given explicit timestamps from sample 0, so the encoder emits the priming
  packet at a negative time and the mp4 muxer writes an edit list that starts the audio track 1024 samples in
  (the way standard muxers do). Players and decoders that honour the edit list (browsers, QuickTime, VLC,
  FFmpeg/PyAV) play the first real sample together with the first video frame. The audio is cut or padded to
  exactly the video's duration by the length rule of :mod:`mmgt_core.timeline`; the edit list ends there too
  (decoders that ignore edit-list ends may output up to 1023 extra silent samples after the end).
* **Streaming.** Frames are encoded as they are written and the audio is interleaved with them, so memory
  does not grow with the length.
* **Atomic, clean writes.** The file is written in a per-run folder ``.mmgt-partial-*`` next to the output
  and renamed onto the output path only when complete; the folder is removed on any exit (error, cancel,
  SIGINT/SIGTERM), and folders left by a killed run (SIGKILL, power loss) are removed by the next writer in
  the same place (each live run holds a lock on its folder). The output gets the ordinary umask-derived mode.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Optional

import av
import numpy as np
import torch
from PIL import Image

from .constants import ENCODER_SAMPLE_RATE
from .errors import InputError, MMGTError
from .timeline import audio_sample_count

PARTIAL_PREFIX = ".mmgt-partial-"
LOCK_NAME = "lock"
AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
FALLBACK_SAMPLE_RATE = 48000
STALE_UNLOCKED_SECONDS = 60.0  # a partial folder without a lock file is stale after this long


_EFFECTIVE_IDS = os.access in os.supports_effective_ids  # the ids that writes are checked against


class OutputWriteError(MMGTError, OSError):
    """The video could not be written (disk full, permission, codec); nothing was left at the output path."""


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


def check_output_path(path: str | os.PathLike[str], input_name: str = "out") -> Path:
    """The output file path, checked before any work: not a folder, and its folder exists or can be made and is
    writable. Raises InputError naming ``input_name``."""
    target = Path(path).expanduser()
    if str(path).endswith(("/", os.sep)) or target.is_dir():
        raise InputError(input_name, f"'{path}' is a folder.", "Give a file name, e.g. out.mp4.")
    folder = target.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(input_name, f"'{existing}' is not a folder, so '{target}' cannot be written.",
                         "Choose an output path inside a folder.")
    if not os.access(existing, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE_IDS):
        raise InputError(input_name, f"the folder '{existing}' is not writable.",
                         "Choose a folder you can write to.")
    return target


def _lock_file(handle: IO[bytes]) -> bool:
    """Take an exclusive, non-blocking lock on an open file; False when another process holds it."""
    try:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    except OSError:
        return False


def remove_stale_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.mmgt-partial-*`` folders in ``folder`` that no live run holds (left by a killed run)."""
    removed = []
    directory = Path(folder)
    if not directory.is_dir():
        return removed
    for candidate in directory.glob(f"{PARTIAL_PREFIX}*"):
        if not candidate.is_dir():
            continue
        lock = candidate / LOCK_NAME
        try:
            if lock.exists():
                with open(lock, "rb+") as handle:
                    if not _lock_file(handle):
                        continue  # a live run is writing there
            elif time.time() - candidate.stat().st_mtime < STALE_UNLOCKED_SECONDS:
                continue  # just being created by a live run
            shutil.rmtree(candidate)
            removed.append(candidate)
        except OSError:
            continue  # in use (Windows) or already gone
    return removed


class PartialFolder:
    """A locked per-run temp folder next to the output; removed by :meth:`remove` or, after a kill, by
    :func:`remove_stale_partials` in the next run."""

    def __init__(self, target: Path) -> None:
        remove_stale_partials(target.parent)
        self.path = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{target.stem}.", dir=target.parent))
        self._lock: Optional[IO[bytes]] = open(self.path / LOCK_NAME, "wb+")
        _lock_file(self._lock)

    def remove(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delay SIGINT/SIGTERM while the output is committed or cleaned up (so a second Ctrl-C cannot leave a
    half-done rename or temp folder); they are delivered right after."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _audio_channels(audio: torch.Tensor) -> np.ndarray:
    """(samples,), (channels, samples) or (1, channels, samples) → (1 or 2, samples) float32, a view of a float32
    CPU input (no copy of a long clip; the writer clips each piece to [-1, 1] as it encodes it)."""
    wave = audio.detach().float().cpu().numpy()
    wave = wave.reshape(1, -1) if wave.ndim == 1 else wave.reshape(-1, wave.shape[-1])
    return wave[:2]


def _resampled(wave: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave), format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=new_rate)
    pieces = [f.to_ndarray() for f in resampler.resample(frame)] + [f.to_ndarray() for f in resampler.resample(None)]
    return np.ascontiguousarray(np.concatenate(pieces, axis=1).astype(np.float32))


class Mp4Writer:
    """Streams frames (and one audio track) into an H.264/AAC mp4, atomically; see the module docstring.

    Use as a context manager: ``with Mp4Writer(path, fps, audio, rate) as writer: writer.write(frames)``.
    Leaving the block normally commits the file (``writer.path``); leaving it by an exception removes
    everything. The audio is cut or zero-padded to the duration of the frames written.
    """

    AUDIO_CHUNK = 1024 * 16

    def __init__(self, path: str | os.PathLike[str], fps: float, audio: Optional[torch.Tensor] = None,
                 sample_rate: int = ENCODER_SAMPLE_RATE) -> None:
        if not fps > 0 or not np.isfinite(fps):
            raise InputError("fps", f"the frame rate must be a positive number (got {fps}).")
        self.target = check_output_path(path)
        self.fps = float(fps)
        self.frames_written = 0
        self.path: Optional[Path] = None
        self._wave = None if audio is None else _audio_channels(audio)
        self._rate = int(sample_rate)
        if self._wave is not None and self._rate not in AAC_SAMPLE_RATES:
            self._wave, self._rate = _resampled(self._wave, self._rate, FALLBACK_SAMPLE_RATE), FALLBACK_SAMPLE_RATE
        self._audio_done = 0
        self._partial: Optional[PartialFolder] = None
        self._container: Any = None
        self._video: Any = None
        self._sound: Any = None
        self._size: tuple[int, int] = (0, 0)
        self._frame_rate = Fraction(1)

    def __enter__(self) -> Mp4Writer:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._partial = PartialFolder(self.target)
        return self

    def __exit__(self, kind: Optional[type[BaseException]], error: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    @property
    def temp_path(self) -> Path:
        assert self._partial is not None, "use Mp4Writer as a context manager"
        return self._partial.path / f"{self.target.stem}.mp4"

    def _open(self, height: int, width: int) -> None:
        self._size = (height // 2 * 2, width // 2 * 2)  # yuv420p needs even sides
        if min(self._size) < 2:
            raise InputError("frames", f"a {width}×{height} frame is too small for H.264.")
        self._container = av.open(str(self.temp_path), "w", format="mp4")
        self._frame_rate = Fraction(self.fps).limit_denominator(1001)
        self._video = self._container.add_stream("libx264", rate=self._frame_rate)
        self._video.height, self._video.width = self._size
        self._video.pix_fmt = "yuv420p"
        if self._wave is not None:
            layout = "mono" if self._wave.shape[0] == 1 else "stereo"
            self._sound = self._container.add_stream("aac", rate=self._rate, layout=layout)

    def write(self, frames: torch.Tensor) -> None:
        """Append frames (n, H, W, 3): float in [0, 1] or uint8."""
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype not in (torch.uint8, torch.float32):
            frames = frames.float()  # bf16/fp16/fp64 frames
        pixels_np = frames[..., :3].detach().cpu().numpy()
        if pixels_np.dtype != np.uint8:  # numpy: no thread-pool start per small chunk
            pixels_np = np.rint(np.clip(pixels_np.astype(np.float32, copy=False), 0.0, 1.0) * 255.0).astype(np.uint8)
        try:
            if self._container is None:
                self._open(pixels_np.shape[1], pixels_np.shape[2])
            height, width = self._size
            for picture in pixels_np:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[:height, :width]), format="rgb24")
                frame.pts = self.frames_written
                frame.time_base = 1 / self._frame_rate
                self._container.mux(self._video.encode(frame))
                self.frames_written += 1
            self._write_audio(audio_sample_count(self.frames_written, self.fps, self._rate))
        except (OSError, av.error.FFmpegError) as error:
            raise self._write_error(error) from error

    def _write_audio(self, until: int) -> None:
        """Encode audio samples up to ``until`` (zero-padded past the clip's end), timestamped from sample 0."""
        if self._sound is None:
            return
        layout = "mono" if self._wave.shape[0] == 1 else "stereo"
        while self._audio_done < until:
            stop = min(until, self._audio_done + self.AUDIO_CHUNK)
            piece = np.clip(self._wave[:, self._audio_done:stop], -1.0, 1.0)
            if piece.shape[1] < stop - self._audio_done:
                piece = np.pad(piece, ((0, 0), (0, stop - self._audio_done - piece.shape[1])))
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
            frame.sample_rate = self._rate
            frame.pts = self._audio_done  # explicit timestamps: priming goes before 0, into the edit list
            frame.time_base = Fraction(1, self._rate)
            self._container.mux(self._sound.encode(frame))
            self._audio_done = stop

    def _write_error(self, error: BaseException) -> OutputWriteError:
        self.abort()
        return OutputWriteError(f"could not write the video '{self.target}': {error}. Nothing was written there; "
                                "check free disk space and permissions, or choose another output folder.")

    def close(self) -> Path:
        """Flush the encoders, then move the finished file onto the output path."""
        if self.path is not None:
            return self.path
        if self._container is None:
            self.abort()
            raise InputError("frames", "no frames were written.", "Give at least one frame.")
        try:
            self._container.mux(self._video.encode())
            self._write_audio(audio_sample_count(self.frames_written, self.fps, self._rate))
            if self._sound is not None:
                self._container.mux(self._sound.encode())
            self._container.close()
            self._container = None
            with _signals_held():
                os.replace(self.temp_path, self.target)
                self.path = self.target
                self._partial.remove()  # type: ignore[union-attr]
                self._partial = None
        except (OSError, av.error.FFmpegError) as error:
            raise self._write_error(error) from error
        except BaseException:  # Ctrl-C / SIGTERM while flushing: leave nothing behind
            self.abort()
            raise
        return self.target

    def abort(self) -> None:
        """Drop everything written so far (the output path is left as it was)."""
        with _signals_held():
            if self._container is not None:
                with contextlib.suppress(Exception):
                    self._container.close()
                self._container = None
            if self._partial is not None:
                self._partial.remove()
                self._partial = None


def write_mp4(path: str | os.PathLike[str], frames: torch.Tensor, fps: float,
              audio: torch.Tensor | None = None, sample_rate: int = ENCODER_SAMPLE_RATE,
              chunk_frames: int = 16) -> Path:
    """Write (T, H, W, 3) frames in [0, 1] as H.264 mp4 with optional AAC audio (channels, samples), in sync and
    atomically (see :class:`Mp4Writer`); the audio is cut or padded to the video's duration."""
    with Mp4Writer(path, fps, audio, sample_rate) as writer:
        for start in range(0, frames.shape[0], chunk_frames):
            writer.write(frames[start:start + chunk_frames])
    return writer.target


def probe_av_sync(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Timing of a written mp4 as PyAV decodes it (edit lists applied): first video/audio timestamps (s),
    container durations (s), frame count, decoded audio (channels, samples) and rate. For checks and tests."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frame_times = [float(frame.pts * frame.time_base) for frame in container.decode(video)]
        info: dict[str, Any] = {"frames": len(frame_times), "first_video": frame_times[0] if frame_times else None,
                                "video_duration": float(video.duration * video.time_base) if video.duration else None,
                                "first_audio": None, "audio": None, "sample_rate": None, "audio_duration": None}
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return info
        stream = container.streams.audio[0]
        pieces = []
        for frame in container.decode(stream):
            if info["first_audio"] is None:
                info["first_audio"] = float(frame.pts * frame.time_base)
            pieces.append(frame.to_ndarray().reshape(len(frame.layout.channels), -1))
        info["sample_rate"] = int(stream.rate)
        info["audio_duration"] = float(stream.duration * stream.time_base) if stream.duration else None
        info["audio"] = np.concatenate(pieces, axis=1) if pieces else np.zeros((1, 0), np.float32)
    return info
