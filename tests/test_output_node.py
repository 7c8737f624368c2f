"""MMGT Save Video: latents → mp4 streamed chunk by chunk with the driving audio, atomically, in the test executor."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from executor import run
from mmgt_core.media import PARTIAL_PREFIX, probe_av_sync

RATE = 16000


class MakeTestLatents:
    """Test-only source of MMGT_LATENTS: seeded random latents and a click track (impulse at 0 s)."""

    FUNCTION = "make"
    RETURN_TYPES = ("MMGT_LATENTS",)
    CATEGORY = "tests"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"frames": ("INT", {"default": 30, "min": 1, "max": 10000}),
                             "audio_seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0})}}

    def make(self, frames: int, audio_seconds: float) -> tuple[Any]:
        from nodes.stage2 import VideoLatents

        samples = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        audio = None
        if audio_seconds > 0:
            wave = torch.zeros(1, 2, round(audio_seconds * RATE))
            wave[..., 0] = 0.9
            audio = {"waveform": wave, "sample_rate": RATE}
        return (VideoLatents(samples, 25.0, audio),)


def _prompt(frames: int, audio_seconds: float, prefix: str = "MMGT/video") -> dict[str, Any]:
    return {
        "1": {"class_type": "MakeTestLatents", "inputs": {"frames": frames, "audio_seconds": audio_seconds}},
        "2": {"class_type": "MMGT_LoadVAE", "inputs": {"folder": "sd-vae-ft-mse", "dtype": "fp32"}},
        "3": {"class_type": "MMGT_SaveVideo", "inputs": {"latents": ["1", 0], "mmgt_vae": ["2", 0],
                                                         "filename_prefix": prefix, "chunk_frames": 4}},
    }


@pytest.fixture()
def host(comfy_host, fixtures_dir):
    folder_paths = comfy_host["folder_paths"]
    models = Path(folder_paths.get_folder_paths("mmgt")[0])
    shutil.copytree(fixtures_dir / "stage2" / "tiny_vae", models / "sd-vae-ft-mse", copy_function=shutil.copyfile)
    comfy_host["classes"]["MakeTestLatents"] = MakeTestLatents
    comfy_host["output"] = Path(folder_paths.get_output_directory())
    return comfy_host


def test_save_video_streams_latents_into_a_synced_mp4(host):
    from nodes.output import VideoFile

    result = run(_prompt(frames=30, audio_seconds=1.0), host["classes"])

    path = host["output"] / "MMGT" / "video_00001_.mp4"
    assert result.ui["3"] == {"images": [{"filename": "video_00001_.mp4", "subfolder": "MMGT", "type": "output"}],
                              "animated": (True,)}
    video, preview = result.outputs["3"]
    assert isinstance(video, VideoFile) and Path(video.get_stream_source()) == path
    assert video.get_dimensions() == (64, 64)
    info = probe_av_sync(path)
    assert info["frames"] == 25, "1.0 s of audio at 25 fps: 25 of the 30 generated frames (length rule)"
    assert info["first_video"] == 0.0 and info["first_audio"] == 0.0
    assert info["video_duration"] == pytest.approx(1.0, abs=1e-3)
    assert info["audio_duration"] == pytest.approx(1.0, abs=1e-3)
    assert int(np.argmax(np.abs(info["audio"]).mean(0))) <= RATE // 1000, "the click plays with the first frame"
    assert preview.shape == (4, 64, 64, 3) and 0 <= preview.min() and preview.max() <= 1
    assert preview.std() > 0
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no temp folder left"
    again = run(_prompt(frames=8, audio_seconds=0.0), host["classes"])
    assert again.ui["3"]["images"][0]["filename"] == "video_00002_.mp4"
    assert probe_av_sync(host["output"] / "MMGT" / "video_00002_.mp4")["audio"] is None, "pose-only: no audio"


def test_cancel_during_the_write_leaves_no_file(host, monkeypatch):
    import comfy.model_management as model_management

    import nodes.output as output

    original = output.Mp4Writer.write
    seen_temp: list[bool] = []

    def write_then_cancel(self: Any, frames: torch.Tensor) -> None:
        original(self, frames)
        if self.frames_written >= 8:
            seen_temp.append(self.temp_path.exists())
            model_management.interrupt_current_processing(True)

    monkeypatch.setattr(output.Mp4Writer, "write", write_then_cancel)
    previous = host["output"] / "MMGT" / "video_00001_.mp4"
    previous.parent.mkdir(parents=True)
    previous.write_bytes(b"an earlier video")
    with pytest.raises(model_management.InterruptProcessingException):
        run(_prompt(frames=40, audio_seconds=1.6), host["classes"])
    assert seen_temp == [True], "cancelled while the mp4 was being written"
    assert sorted(p.name for p in previous.parent.iterdir()) == [previous.name]
    assert previous.read_bytes() == b"an earlier video"
    assert not any(p.name.startswith(PARTIAL_PREFIX) for p in host["output"].rglob("*"))


def test_a_prefix_outside_the_output_folder_is_refused(host):
    from nodes.common import MMGTNodeError

    with pytest.raises(MMGTNodeError, match=r"\[MMGT Save Video\].*filename_prefix.*outside the output folder"):
        run(_prompt(frames=4, audio_seconds=0.0, prefix="../escape"), host["classes"])
