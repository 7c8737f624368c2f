"""Output you can trust: every mp4 writer keeps the first audio sample on the first video frame (AAC priming
edited out), cuts the audio to the video's duration, and writes atomically with ordinary file modes."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmgt_core.media import Mp4Writer, OutputWriteError, probe_av_sync, write_mp4
from mmgt_core.timeline import audio_sample_count, video_frame_count

CLIP_SECONDS = 60.0
CLICK_TIMES = (0.0, 5.0, 59.0)  # start, the 5 s, and near the end (drift)
SIDE = 64


def click_track(rate: int, channels: int, fps: float, seconds: float = CLIP_SECONDS
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Black frames with a white one, and silence with a full-scale impulse, at each click time."""
    frames = torch.zeros(video_frame_count(round(seconds * rate), rate, fps), SIDE, SIDE, 3, dtype=torch.uint8)
    audio = torch.zeros(channels, round(seconds * rate))
    for moment in CLICK_TIMES:
        frames[round(moment * fps)] = 255
        audio[:, round(moment * rate)] = 0.9
    return frames, audio


def click_offsets_ms(path: Path) -> tuple[list[float], dict]:
    """For each white frame: (time of the loudest audio sample near it) − (its presentation time), in ms."""
    info = probe_av_sync(path)
    with av.open(str(path)) as container:
        whites = [float(f.pts * f.time_base) for f in container.decode(video=0)
                  if f.to_ndarray(format="gray").mean() > 128]
    assert len(whites) == len(CLICK_TIMES), "every white frame must survive the encode"
    mono = np.abs(info["audio"]).mean(0)
    rate = info["sample_rate"]
    offsets = []
    for moment in whites:
        centre = round((moment - info["first_audio"]) * rate)
        low = max(0, centre - rate // 10)
        peak = low + int(np.argmax(mono[low:centre + rate // 10]))
        offsets.append((info["first_audio"] + peak / rate - moment) * 1000)
    return offsets, info


@pytest.mark.parametrize("fps", [25.0, 30.0])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_click_track_is_sample_exact(tmp_path, rate, channels, fps):
    frames, audio = click_track(rate, channels, fps)
    path = write_mp4(tmp_path / "clicks.mp4", frames, fps, audio, rate, chunk_frames=250)
    offsets, info = click_offsets_ms(path)
    assert info["first_video"] == 0.0 and info["first_audio"] == 0.0
    assert all(abs(offset) <= 1.0 for offset in offsets), f"A/V offsets {offsets} ms (priming not edited out?)"
    assert info["frames"] == frames.shape[0] == round(CLIP_SECONDS * fps)
    video_seconds = info["frames"] / fps
    assert info["video_duration"] == pytest.approx(video_seconds, abs=1e-3)
    assert info["audio_duration"] == pytest.approx(video_seconds, abs=1e-3), "edit list ends with the video"
    decoded = info["audio"].shape[1]
    assert 0 <= decoded - audio_sample_count(info["frames"], fps, rate) < 1024, "at most the last AAC frame's tail"
    assert info["audio"].shape[0] == channels


def test_a_rate_aac_lacks_is_resampled_in_sync(tmp_path):
    frames, audio = click_track(37800, 1, 25.0)
    offsets, info = click_offsets_ms(write_mp4(tmp_path / "odd.mp4", frames, 25.0, audio, 37800, chunk_frames=250))
    assert info["sample_rate"] == 48000 and all(abs(offset) <= 1.0 for offset in offsets), offsets
    assert info["audio_duration"] == pytest.approx(CLIP_SECONDS, abs=1e-3)


def test_audio_is_cut_or_padded_to_the_video_in_the_writer(tmp_path):
    rate, fps = 16000, 25.0
    frames = torch.zeros(50, SIDE, SIDE, 3)  # 2.0 s of video
    for seconds in (1.3, 2.7):  # shorter (padded) and longer (cut) than the video
        sound = torch.full((1, round(seconds * rate)), 0.5)
        info = probe_av_sync(write_mp4(tmp_path / f"{seconds}.mp4", frames, fps, sound, rate))
        assert info["audio_duration"] == pytest.approx(2.0, abs=1e-3)
        assert info["video_duration"] == pytest.approx(2.0, abs=1e-3)


def test_length_rule_rounds_to_nearest():
    assert video_frame_count(round(7.3 * 16000), 16000, 25.0) == 183  # 182.5 → 183 (halves round up)
    assert video_frame_count(round(7.3 * 16000), 16000, 30.0) == 219
    assert video_frame_count(round(7.38 * 16000), 16000, 25.0) == 185  # 184.5 → 185
    assert video_frame_count(round(7.37 * 16000), 16000, 25.0) == 184  # 184.25 → 184
    assert audio_sample_count(183, 25.0, 16000) == 117120
    with pytest.raises(ValueError):
        video_frame_count(16000, 16000, 0.0)


def test_output_has_the_umask_mode_and_no_temp_is_left(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_mp4(tmp_path / "out.mp4", torch.rand(5, SIDE, SIDE, 3), 25.0, torch.zeros(1, 8000), 16000)
    finally:
        os.umask(previous)
    assert (path.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_failed_write_leaves_the_previous_output_untouched(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="boom"):
        with Mp4Writer(target, 25.0, torch.zeros(1, 16000), 16000) as writer:
            writer.write(torch.rand(4, SIDE, SIDE, 3))
            assert writer.temp_path.exists()
            raise RuntimeError("boom")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_disk_error_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.mp4"

    def disk_full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputWriteError, match="No space left on device.*Nothing was written"):
        with Mp4Writer(target, 25.0) as writer:
            writer.write(torch.rand(2, SIDE, SIDE, 3))
            monkeypatch.setattr(av.VideoFrame, "from_ndarray", staticmethod(disk_full))
            writer.write(torch.rand(2, SIDE, SIDE, 3))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_keypoint_and_weight_files_get_the_umask_mode_too(tmp_path):
    from mmgt_core.keypoints_io import save_keypoints_file, save_sequence
    from mmgt_core.tiny_models import synthetic_reference_pose
    from mmgt_core.weights import save_weights

    previous = os.umask(0o027)
    try:
        written = [save_keypoints_file(synthetic_reference_pose(), tmp_path / "pose.safetensors"),
                   save_sequence(synthetic_reference_pose(), tmp_path, "pose", "json"),
                   save_weights({"w": torch.zeros(2)}, tmp_path / "w.safetensors", "video_net", {}, "test")]
    finally:
        os.umask(previous)
    assert [path.stat().st_mode & 0o777 for path in written] == [0o640] * 3
