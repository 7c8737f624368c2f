"""Loader lists and validation before anything runs: only files of the loader's component, the expected name
first, a missing default shown as missing, and VALIDATE_INPUTS messages for missing/wrong files and bad sizes."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from mmgt_core import model_files
from mmgt_core.models_table import MODEL_FILES_BY_KEY
from mmgt_core.tiny_models import write_tiny_smga
from mmgt_core.weights import save_weights


def _models(host) -> Path:
    folder = Path(host["folder_paths"].get_folder_paths("mmgt")[0])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _install(models: Path, fixtures: Path) -> None:
    """An official-style SMGA, a unilm WavLM, two stand-in ONNX files and the three HF folders."""
    (models / "wavlm").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fixtures / "audio" / "wavlm_tiny" / "WavLM-tiny.pt", models / "wavlm" / "WavLM-Large.pt")
    write_tiny_smga(models / "smga.safetensors")
    torch.save({"ema_state_dict": {"input_projection.weight": torch.zeros(2, 2), "null_cond_embed": torch.zeros(2),
                                   "final_layer.weight": torch.zeros(2, 2)}}, models / "audio2pose_best_model.pt")
    save_weights({"reference_unet.conv_in.weight": torch.zeros(1), "denoising_unet.conv_in.weight": torch.zeros(1)},
                 models / "mmgt_video.safetensors", "video_net", {}, "test")
    (models / "dwpose").mkdir(exist_ok=True)
    for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx"):
        (models / "dwpose" / name).write_bytes(b"onnx stand-in")
    for source, name in (("stage2/tiny_vae", "sd-vae-ft-mse"), ("stage2/tiny_image_encoder", "image_encoder"),
                         ("audio/wav2vec2_tiny", "wav2vec2-base-960h")):
        shutil.copytree(fixtures / source, models / name, copy_function=shutil.copyfile)


def test_each_loader_lists_only_its_component_with_the_expected_name_first(comfy_host, fixtures_dir):
    models = _models(comfy_host)
    _install(models, fixtures_dir)
    classes = comfy_host["classes"]

    def listed(node: str, name: str) -> list[str]:
        return classes[node].INPUT_TYPES()["required"][name][0]

    assert listed("MMGT_LoadSMGA", "checkpoint") == ["audio2pose_best_model.pt", "smga.safetensors"]
    assert listed("MMGT_LoadVideoNet", "checkpoint") == ["mmgt_video.safetensors"]
    assert listed("MMGT_LoadWavLM", "model") == ["wavlm/WavLM-Large.pt"]
    assert listed("MMGT_LoadVAE", "folder") == ["sd-vae-ft-mse"]
    assert listed("MMGT_LoadImageEncoder", "folder") == ["image_encoder"]
    assert listed("MMGT_LoadWav2Vec2", "folder") == ["wav2vec2-base-960h"]
    assert listed("MMGT_ReferencePose", "detector") == ["dwpose/yolox_l.onnx"]  # listed once, not twice
    assert listed("MMGT_ReferencePose", "pose_model") == ["dwpose/dw-ll_ucoco_384.onnx"]
    assert classes["MMGT_LoadSMGA"].VALIDATE_INPUTS(checkpoint="audio2pose_best_model.pt") is True
    assert classes["MMGT_LoadImageEncoder"].VALIDATE_INPUTS(folder="image_encoder") is True


def test_an_empty_models_folder_shows_missing_entries_and_fails_validation(comfy_host):
    _models(comfy_host)
    classes = comfy_host["classes"]
    for node, name, key in (("MMGT_LoadSMGA", "checkpoint", "smga"), ("MMGT_LoadWavLM", "model", "wavlm"),
                            ("MMGT_LoadVideoNet", "checkpoint", "video_net"), ("MMGT_LoadVAE", "folder", "vae"),
                            ("MMGT_ReferencePose", "detector", "dwpose_det")):
        entries = classes[node].INPUT_TYPES()["required"][name][0]
        expected = MODEL_FILES_BY_KEY[key].path
        assert len(entries) == 1 and entries[0].startswith("(missing)") and expected in entries[0], node
        message = classes[node].VALIDATE_INPUTS(**{name: MODEL_FILES_BY_KEY[key].names[0]},
                                                **({"backend": "dwpose"} if node == "MMGT_ReferencePose" else {}))
        assert isinstance(message, str) and "missing" in message and "MMGT Download Models" in message, node
    # the default file name of a saved workflow is reported as missing, never accepted
    assert "missing" in classes["MMGT_LoadWavLM"].VALIDATE_INPUTS(model="wavlm/WavLM-Large.pt")
    # mediapipe needs no ONNX files; auto needs them unless MediaPipe is installed
    reference_pose = classes["MMGT_ReferencePose"]
    assert reference_pose.VALIDATE_INPUTS(backend="mediapipe", detector="x", pose_model="y") is True
    auto = reference_pose.VALIDATE_INPUTS(backend="auto", detector="x", pose_model="y")
    assert (auto is True) == (importlib.util.find_spec("mediapipe") is not None)


@pytest.mark.parametrize("node", ["MMGT_ReferencePose", "MMGT_DetectKeypoints"])
def test_both_missing_dwpose_files_are_named_not_only_the_first(comfy_host, node):
    _models(comfy_host)
    message = comfy_host["classes"][node].VALIDATE_INPUTS(
        detector="dwpose/yolox_l.onnx", pose_model="dwpose/dw-ll_ucoco_384.onnx",
        **({"backend": "dwpose"} if node == "MMGT_ReferencePose" else {}))
    assert isinstance(message, str) and "yolox_l.onnx" in message and "dw-ll_ucoco_384.onnx" in message, message


def test_a_file_of_another_component_is_not_listed_and_fails_validation(comfy_host, fixtures_dir):
    models = _models(comfy_host)
    _install(models, fixtures_dir)
    shutil.copyfile(models / "smga.safetensors", models / "net-32500.pth.safetensors")
    classes = comfy_host["classes"]
    assert "net-32500.pth.safetensors" not in classes["MMGT_LoadVideoNet"].INPUT_TYPES()["required"]["checkpoint"][0]
    message = classes["MMGT_LoadVideoNet"].VALIDATE_INPUTS(checkpoint="net-32500.pth.safetensors")
    assert isinstance(message, str) and "SMGA" in message
    message = classes["MMGT_LoadImageEncoder"].VALIDATE_INPUTS(folder="wav2vec2-base-960h")
    assert isinstance(message, str) and "wav2vec2 folder" in message


def test_header_peeks_are_cached_by_path_mtime_and_size(tmp_path, monkeypatch):
    path = tmp_path / "audio2pose_best_model.pt"
    torch.save({"ema_state_dict": {"x": torch.zeros(1)}}, path)
    calls = []
    original = model_files._peek_file
    monkeypatch.setattr(model_files, "_peek_file", lambda p: calls.append(p) or original(p))
    assert model_files.peek_kind(path) == "smga" and model_files.peek_kind(path) == "smga"
    assert len(calls) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    assert model_files.peek_kind(tmp_path / "other") == "folder:wav2vec2"


@pytest.mark.parametrize(("width", "height", "ok"), [(512, 448, True), (500, 512, False), (512, 32, False),
                                                    (4096, 512, False)])
def test_sample_video_sizes_are_validated_before_running(comfy_host, width, height, ok):
    result = comfy_host["classes"]["MMGT_SampleVideo"].VALIDATE_INPUTS(width=width, height=height)
    assert (result is True) == ok
    if width == 500:
        assert "multiple of 64" in result and "448" in result


@pytest.mark.parametrize("backend", ["dwpose", "auto"])
def test_reference_pose_run_names_the_missing_dwpose_input(comfy_host, backend):
    if backend == "auto" and importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("auto falls back to MediaPipe, which is installed")
    _models(comfy_host)
    node = comfy_host["classes"]["MMGT_ReferencePose"]()
    with pytest.raises(Exception, match=r"^\[MMGT Reference Pose\] input 'detector': .*yolox_l\.onnx.*Download"):
        node.detect(torch.zeros(1, 64, 64, 3), backend, "dwpose/yolox_l.onnx", "dwpose/dw-ll_ucoco_384.onnx")
