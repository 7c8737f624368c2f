"""MMGT Download Models / ``python -m mmgt_core download`` against a local hub stand-in on 127.0.0.1: exactly the
missing files, size and hash checked, atomic placement, an interrupted download that resumes, a corrupted file
that is rejected."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from hub_server import HubFile, HubServer
from safetensors.torch import load_file

from mmgt_core import download
from mmgt_core.model_files import loader_choices
from mmgt_core.models_table import MODEL_FILES, MODEL_FILES_BY_KEY

FIXTURE_FOLDERS = {"vae": "stage2/tiny_vae", "image_encoder": "stage2/tiny_image_encoder",
                   "wav2vec2": "audio/wav2vec2_tiny"}
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes what arrives in chunks of this size


def _bin(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _hub_files(fixtures: Path) -> dict[str, HubFile]:
    """Every downloadable file of the models table, as tiny files in the formats the loaders expect."""
    files: dict[str, HubFile] = {}
    for model in MODEL_FILES:
        for remote in model.downloads:
            name = remote.remote_path.split("/")[-1]
            if model.key in FIXTURE_FOLDERS:
                folder = fixtures / FIXTURE_FOLDERS[model.key]
                data = (folder / name).read_bytes() if (folder / name).exists() else \
                    _bin(load_file(folder / "model.safetensors"))
            elif model.key == "wavlm":
                data = json.dumps({"model_type": "wavlm"}).encode() if name == "config.json" else _bin({})
            elif model.key == "smga":
                data = _bin({"ema_state_dict": {"input_projection.weight": torch.randn(64, 8)}})
            else:
                data = f"{model.key} stand-in ".encode() * 500
            files[f"{remote.repo}/{remote.remote_path}"] = HubFile(data, lfs=not name.endswith(".json"))
    return files


@pytest.fixture()
def hub(fixtures_dir):
    with HubServer(_hub_files(fixtures_dir)) as server:
        yield server


def _key(model_key: str) -> str:
    remote = MODEL_FILES_BY_KEY[model_key].downloads[-1]
    return f"{remote.repo}/{remote.remote_path}"


def _large_video_net(hub: HubServer) -> str:
    """Serve a video net of one and a half download chunks; returns its hub key."""
    key = _key("video_net")
    data = torch.randint(0, 256, (CHUNK + CHUNK // 2,), dtype=torch.uint8).numpy().tobytes()
    hub.state.files[key] = HubFile(data, lfs=True)
    return key


def test_downloads_exactly_the_missing_files_and_places_them_whole(hub, tmp_path):
    models = tmp_path / "models" / "mmgt"
    (models / "dwpose").mkdir(parents=True)
    (models / "dwpose" / "yolox_l.onnx").write_bytes(b"already here")
    steps: list[tuple[int, int]] = []
    report = download.download_missing(models, "audio2video", endpoint=hub.endpoint,
                                       progress=lambda d, t: steps.append((d, t)), log=lambda _: None)
    assert "dwpose/yolox_l.onnx" in report.present and not report.manual
    assert set(report.downloaded) == {m.path for m in MODEL_FILES if m.key != "dwpose_det"}
    assert not any(key.endswith("yolox_l.onnx") for method, key, _ in hub.state.log if method == "GET")
    for model in MODEL_FILES:
        for remote in model.downloads:
            if model.key != "dwpose_det":
                assert (models / remote.local_path).read_bytes() == \
                    hub.state.files[f"{remote.repo}/{remote.remote_path}"].data
    assert not list((models / download.STAGING_DIR).rglob("*.part"))
    assert steps[-1][0] == steps[-1][1] == sum(f.data.__len__() for k, f in hub.state.files.items()
                                               if not k.endswith("yolox_l.onnx"))
    for key in ("vae", "image_encoder", "wav2vec2", "smga", "dwpose_pose"):
        assert loader_choices(key, [models]).present, key
    from mmgt_core.audio.wav2vec import load_wav2vec2

    load_wav2vec2(models / "wav2vec2-base-960h")  # the downloaded pickled .bin loads safely
    gets = len([entry for entry in hub.state.log if entry[0] == "GET"])
    again = download.download_missing(models, "audio2video", endpoint=hub.endpoint, log=lambda _: None)
    assert not again.downloaded and len([e for e in hub.state.log if e[0] == "GET"]) == gets


def test_an_interrupted_download_resumes_where_it_stopped(hub, tmp_path):
    models = tmp_path / "mmgt"
    key = _large_video_net(hub)
    size = len(hub.state.files[key].data)
    hub.state.cut_after[key] = CHUNK + 1000
    with pytest.raises(download.DownloadError, match="partial file is kept"):
        download.download_missing(models, "pose2video", endpoint=hub.endpoint, log=lambda _: None)
    part = models / download.STAGING_DIR / "net-32500.pth.part"
    kept = part.stat().st_size
    assert 0 < kept < size and not (models / "net-32500.pth").exists()
    hub.state.broken.clear()
    report = download.download_missing(models, "pose2video", endpoint=hub.endpoint, log=lambda _: None)
    assert "net-32500.pth" in report.downloaded
    ranges = [r for method, k, r in hub.state.log if method == "GET" and k == key]
    assert ranges[-1] == f"bytes={kept}-"
    assert (models / "net-32500.pth").read_bytes() == hub.state.files[key].data and not part.exists()


def test_a_corrupted_file_is_rejected_and_removed(hub, tmp_path):
    models = tmp_path / "mmgt"
    hub.state.corrupt.add(_key("smga"))
    with pytest.raises(download.DownloadError, match="arrived corrupted .sha256"):
        download.download_missing(models, "audio2pose", endpoint=hub.endpoint, log=lambda _: None)
    assert not (models / "audio2pose_best_model.pt").exists()
    assert not list((models / download.STAGING_DIR).rglob("audio2pose_best_model.pt*"))


def test_verify_checks_git_sha1_of_small_files(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"{}")
    file = HubFile(b"{}", lfs=False)
    from hub_server import etag_of

    assert download.verify(path, 2, etag_of(file)) is None
    assert "git sha1" in download.verify(path, 2, etag_of(HubFile(b"[]", lfs=False)))
    assert "size" in download.verify(path, 3, etag_of(file))


def test_cli_and_node_download_the_missing_files_of_their_mode(hub, tmp_path, monkeypatch, capsys, comfy_host):
    from mmgt_core.__main__ import main

    models = tmp_path / "cli"
    assert main(["download", "--mode", "audio2pose", "--models", str(models), "--endpoint", hub.endpoint]) == 0
    out = capsys.readouterr().out
    assert "downloaded  audio2pose_best_model.pt" in out and (models / "wavlm-large" / "config.json").is_file()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    node = comfy_host["classes"]["MMGT_DownloadModels"]
    result = node().download("pose2video")
    text = result["ui"]["text"][0]
    target = Path(comfy_host["folder_paths"].get_folder_paths("mmgt")[0])
    assert "downloaded  net-32500.pth" in text and (target / "sd-vae-ft-mse" / "config.json").is_file()
    assert result["result"] == (text,)


def test_cancel_reaches_the_caller_unchanged_and_the_next_run_resumes(hub, tmp_path):
    class Cancelled(Exception):
        pass

    models = tmp_path / "mmgt"
    key = _large_video_net(hub)
    calls = []

    def cancel_after_first_chunk() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Cancelled()

    with pytest.raises(Cancelled):
        download.download_missing(models, "pose2video", endpoint=hub.endpoint, check_cancel=cancel_after_first_chunk,
                                  log=lambda _: None)
    part = models / download.STAGING_DIR / "net-32500.pth.part"
    assert part.stat().st_size == CHUNK
    download.download_missing(models, "pose2video", endpoint=hub.endpoint, log=lambda _: None)
    assert (models / "net-32500.pth").read_bytes() == hub.state.files[key].data
    assert [r for m, k, r in hub.state.log if m == "GET" and k == key][-1] == f"bytes={CHUNK}-"
