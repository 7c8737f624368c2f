"""First-run rough edges: readable error type, throttled progress, pip names for missing packages, quiet
loaders, folder loaders that recognise the wrong model kind, and notices for short or silent audio."""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmgt_core.audio.wav2vec import load_wav2vec2
from mmgt_core.dependencies import pip_name
from mmgt_core.errors import WeightsError
from mmgt_core.video.conditioning import load_clip_image_encoder


def comfy_type_name(klass: type) -> str:
    """What ComfyUI's execution.full_type_name prints for an exception class."""
    return klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"


def test_node_errors_show_as_mmgt_error_without_a_module_path(comfy_host):
    common = importlib.import_module("nodes.common")
    with pytest.raises(common.MMGTNodeError) as caught, common.node_errors("MMGT Load VAE"):
        raise WeightsError("the folder has no config.json")
    assert comfy_type_name(type(caught.value)) == "MMGTError"
    assert str(caught.value) == "[MMGT Load VAE] the folder has no config.json"


def test_progress_sends_at_most_100_updates_and_stays_an_interruption_point(comfy_host):
    host = importlib.import_module("nodes.host")
    utils, management = sys.modules["comfy.utils"], sys.modules["comfy.model_management"]
    utils.PROGRESS_LOG.clear()
    report = host.progress_reporter(15000)
    for step in range(1, 15001):
        report(step, 15000)
    assert 90 <= len(utils.PROGRESS_LOG) <= 100 and utils.PROGRESS_LOG[-1] == (15000, 15000)
    report = host.progress_reporter(15000)
    report(1, 15000)  # first percent: sent
    management.interrupt_current_processing(True)
    with pytest.raises(management.InterruptProcessingException):
        report(2, 15000)  # not sent, but still checks the interrupt flag


def test_a_missing_package_is_named_by_its_pip_name(comfy_host, monkeypatch, caplog):
    assert pip_name("cv2") == "opencv-python-headless" and pip_name("PIL.Image") == "Pillow"
    def ours(name: str) -> bool:
        return name == "nodes" or name.startswith(("nodes.", "mmgt_core."))

    for name in [n for n in sys.modules if ours(n)]:
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and getattr(sys.modules[parent], child, None) is sys.modules[name]:
            # the fresh import below rebinds the package attribute too; put the original back after the test
            monkeypatch.setattr(sys.modules[parent], child, sys.modules[name])
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    before = set(sys.modules)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ModuleNotFoundError(name="cv2")
    try:
        with caplog.at_level(logging.WARNING, logger="ComfyUI-MMGT"):
            nodes = importlib.import_module("nodes")
    finally:
        for name in [n for n in set(sys.modules) - before if ours(n)]:
            del sys.modules[name]  # no fresh copies of our modules outlive the test
    assert any("opencv-python-headless" in reason for reason in nodes.SKIPPED_MODULES.values())
    assert "pip install opencv-python-headless" in caplog.text


def test_folder_loaders_are_quiet(fixtures_dir, capfd):
    import transformers

    verbosity = transformers.logging.get_verbosity()
    load_wav2vec2(fixtures_dir / "audio" / "wav2vec2_tiny")
    load_clip_image_encoder(fixtures_dir / "stage2" / "tiny_image_encoder")
    out, err = capfd.readouterr()
    assert "Loading weights" not in out + err and "MISSING" not in out + err and "UNEXPECTED" not in out + err
    assert transformers.logging.get_verbosity() == verbosity  # restored after loading


def test_tiny_model_set_is_written_without_library_bars_or_warnings(tmp_path, capfd):
    from mmgt_core.tiny_models import write_tiny_model_set

    write_tiny_model_set(tmp_path / "mmgt")
    out, err = capfd.readouterr()
    assert "Writing model shards" not in out + err and "kept in float32" not in out + err


@pytest.mark.parametrize("loader, folder, match", [
    (load_clip_image_encoder, "audio/wav2vec2_tiny", "holds a wav2vec2 folder, not the CLIP"),
    (load_wav2vec2, "stage2/tiny_image_encoder", "holds a CLIP vision image-encoder folder, not the wav2vec2")])
def test_folder_loaders_refuse_the_other_model_kind(fixtures_dir, loader, folder, match):
    with pytest.raises(WeightsError, match=match):
        loader(fixtures_dir / folder)


def test_a_pickled_bin_with_objects_is_refused_with_a_clear_error(fixtures_dir, tmp_path):
    folder = tmp_path / "wav2vec2-base-960h"
    folder.mkdir()
    shutil.copyfile(fixtures_dir / "audio" / "wav2vec2_tiny" / "config.json", folder / "config.json")
    torch.save({"weight": argparse.Namespace(code=1)}, folder / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="never unpickles code"):
        load_wav2vec2(folder)


# ------------------------------------------------------------------------------------- short or silent audio


def _speech_like(seconds: float, rate: int = 16000, silent_from: float | None = None) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    wave = 0.3 * torch.sin(2 * torch.pi * 180 * t) * (1 + torch.sin(2 * torch.pi * 3 * t))
    if silent_from is not None:
        wave[int(silent_from * rate):] = 0
    return wave


def test_audio_notices_flag_short_stage1_audio_and_silence():
    from mmgt_core.audio.notices import audio_notices, silent_share

    assert audio_notices(_speech_like(4.0), 16000, "I") == []
    short = audio_notices(_speech_like(0.3), 16000, "I")
    assert len(short) == 1 and "0.30 s" in short[0] and "padded" in short[0] and "8 frames" in short[0]
    assert audio_notices(_speech_like(0.3), 16000, "II") == []  # Stage II has no 3.2 s window
    assert any("silent" in n and "every sample" in n for n in audio_notices(torch.zeros(64000), 16000, "I"))
    mostly = audio_notices(_speech_like(10.0, silent_from=1.0), 16000, "II")
    assert len(mostly) == 1 and "90%" in mostly[0]
    assert silent_share(_speech_like(10.0, silent_from=5.0), 16000) == pytest.approx(0.5, abs=0.01)


def test_stage1_features_node_reports_short_audio_in_its_notes(comfy_host, fixtures_dir):
    from nodes.stage1 import LoadWavLM, Stage1AudioFeatures

    models = comfy_host["folder_paths"].get_folder_paths("mmgt")[0]
    shutil.copytree(fixtures_dir / "audio" / "wavlm_tiny", f"{models}/wavlm")
    wavlm = LoadWavLM().load("wavlm/WavLM-tiny.pt", "fp32")[0]
    audio = {"waveform": _speech_like(0.3)[None, None], "sample_rate": 16000}
    _, duration, frames, notes = Stage1AudioFeatures().encode(audio, wavlm)
    assert frames == 8 and "shorter than one SMGA window" in notes
    _, _, _, notes = Stage1AudioFeatures().encode({"waveform": _speech_like(3.3)[None, None],
                                                   "sample_rate": 16000}, wavlm)
    assert "shorter" not in notes and "silent" not in notes


# ------------------------------------------------------------------------------------------- doctor anywhere


def test_doctor_runs_from_a_comfyui_root_through_the_launcher(tmp_path):
    pack = Path(__file__).resolve().parents[1]
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "ComfyUI-MMGT").symlink_to(pack)
    (tmp_path / "models" / "mmgt" / "dwpose").mkdir(parents=True)
    (tmp_path / "models" / "mmgt" / "dwpose" / "yolox_l.onnx").write_bytes(b"x")
    done = subprocess.run([sys.executable, "custom_nodes/ComfyUI-MMGT/mmgt_cli.py", "doctor", "--models",
                           "models/mmgt", "--no-smoke"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"found    {Path('models/mmgt/dwpose/yolox_l.onnx')}" in done.stdout
    assert "MISSING  put it at models/mmgt/audio2pose_best_model.pt" in done.stdout


def test_doctor_says_when_the_models_folder_does_not_exist(tmp_path):
    from mmgt_core.cli_doctor import install_report

    text = install_report(tmp_path / "nowhere")
    assert "does not exist" in text and "MISSING  put it at" not in text and "not yet  audio→video" in text


def test_doctor_node_shows_the_same_table(comfy_host):
    from mmgt_core.cli_doctor import install_report

    folder = Path(comfy_host["folder_paths"].get_folder_paths("mmgt")[0])
    folder.mkdir(parents=True, exist_ok=True)
    result = comfy_host["classes"]["MMGT_Doctor"]().check()
    assert result["ui"]["text"][0] == result["result"][0] == install_report(folder)
    assert "MISSING  put it at models/mmgt/net-32500.pth" in result["result"][0]
