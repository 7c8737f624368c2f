"""Safe loading, component detection, strict-load reports and conversion to safetensors."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors import safe_open

from mmgt_core.__main__ import main as cli_main
from mmgt_core.errors import WeightsError
from mmgt_core.weights import (
    COMPONENT_SMGA,
    COMPONENT_UNKNOWN,
    COMPONENT_VIDEO_NET,
    COMPONENT_WAVLM_UNILM,
    detect_component,
    load_weights,
    read_config,
    require_component,
    save_weights,
    strict_load,
)


class _Exploit:
    """Unpickling this would run os.system; a safe loader must refuse it before that happens."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "net-1.pth"
    with open(path, "wb") as handle:
        pickle.dump({"denoising_unet.conv_in.weight": _Exploit(str(marker))}, handle)
    with pytest.raises(WeightsError, match="never unpickles code"):
        load_weights(path)
    assert not marker.exists(), "the payload ran"


def test_official_smga_checkpoint_loads_ema_weights(fixtures_dir):
    state, metadata = load_weights(fixtures_dir / "smga" / "smga_tiny_official.pt")
    reference, _ = load_weights(fixtures_dir / "smga" / "smga_tiny_ema_state_dict.safetensors")
    assert metadata["mmgt_component"] == COMPONENT_SMGA
    assert state.keys() == reference.keys() and len(state) == 155
    assert all(torch.equal(state[k], reference[k]) for k in state)
    assert detect_component(reference, {}) == COMPONENT_SMGA


def test_video_net_and_unilm_wavlm_are_recognised(fixtures_dir, tmp_path):
    net, _ = load_weights(fixtures_dir / "stage2" / "net_tiny.safetensors")
    assert detect_component(net, {}) == COMPONENT_VIDEO_NET
    sample = {k: v for prefix in ("reference_unet.", "denoising_unet.", "audioproj.")
              for k, v in list((k, v) for k, v in net.items() if k.startswith(prefix))[:5]}
    torch.save(sample, tmp_path / "net-5.pth")
    small, meta = load_weights(tmp_path / "net-5.pth")
    assert detect_component(small, meta) == COMPONENT_VIDEO_NET
    wavlm, meta = load_weights(fixtures_dir / "audio" / "wavlm_tiny" / "WavLM-tiny.pt")
    assert detect_component(wavlm, meta) == COMPONENT_WAVLM_UNILM
    assert read_config(meta)["encoder_layers"] == 2
    assert detect_component({"foo.weight": torch.zeros(1)}, {}) == COMPONENT_UNKNOWN


def test_wrong_component_gives_a_readable_error(fixtures_dir):
    state, meta = load_weights(fixtures_dir / "smga" / "smga_tiny_official.pt")
    with pytest.raises(WeightsError, match="SMGA.*needs the Stage-II video network"):
        require_component(state, meta, COMPONENT_VIDEO_NET, "audio2pose_best_model.pt")


def test_strict_load_reports_missing_unexpected_and_shape_mismatch():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    state.pop("1.bias")
    state["2.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(5, 3)
    with pytest.raises(WeightsError) as info:
        strict_load(module, state, "smga", "bad.safetensors")
    text = str(info.value)
    assert "1 missing keys [1.bias]" in text and "1 unexpected keys [2.weight]" in text
    assert "0.weight (file (5, 3) vs model (4, 3))" in text
    good = {k: torch.full_like(v, 0.5) for k, v in module.state_dict().items()}
    strict_load(module, good, "smga", "good.safetensors")
    assert torch.equal(module[0].weight, torch.full((4, 3), 0.5))


def test_save_weights_is_atomic_and_carries_metadata(tmp_path, monkeypatch):
    target = tmp_path / "out.safetensors"
    save_weights({"a": torch.ones(2)}, target, "smga", {"latent_dim": 4}, "src.pt")
    with safe_open(str(target), "pt") as handle:
        assert handle.metadata()["mmgt_component"] == "smga"
    import mmgt_core.weights as weights_module

    def failing_save(*args, **kwargs):
        with open(args[1], "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(weights_module, "save_file", failing_save)
    with pytest.raises(OSError):
        save_weights({"a": torch.zeros(2)}, target, "smga", {}, "src.pt")
    state, _ = load_weights(target)
    assert torch.equal(state["a"], torch.ones(2)), "a failed save must leave the previous file intact"
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"], "no temp file left behind"


def test_truncated_and_unknown_files_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00")
    with pytest.raises(WeightsError, match="truncated"):
        load_weights(bad)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "missing.pt")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(WeightsError, match="unsupported extension"):
        load_weights(tmp_path / "x.txt")


def test_convert_cli_writes_safetensors_with_config(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "smga.safetensors"
    assert cli_main(["convert", str(fixtures_dir / "smga" / "smga_tiny_official.pt"), str(out)]) == 0
    state, meta = load_weights(out)
    assert meta["mmgt_component"] == "smga" and meta["mmgt_source"] == "smga_tiny_official.pt"
    config = read_config(meta)
    assert (config["latent_dim"], config["ff_size"], config["num_layers"]) == (40, 96, 2)
    assert len(state) == 155
    net_out = tmp_path / "net.safetensors"
    assert cli_main(["convert", str(fixtures_dir / "stage2" / "net_tiny.safetensors"), str(net_out)]) == 2
    assert "--video-config" in capsys.readouterr().err, "the tiny net is not SD1.5-sized: a config is required"
    unknown = tmp_path / "u.safetensors"
    save_weights({"foo": torch.zeros(1)}, unknown, "", {}, "x")
    assert cli_main(["convert", str(unknown), str(tmp_path / "o.safetensors")]) == 2
    assert "not an MMGT checkpoint" in capsys.readouterr().err


def test_convert_cli_rewrites_unilm_wavlm_in_the_transformers_layout(fixtures_dir, tmp_path):
    out = tmp_path / "wavlm.safetensors"
    assert cli_main(["convert", str(fixtures_dir / "audio" / "wavlm_tiny" / "WavLM-tiny.pt"), str(out)]) == 0
    state, meta = load_weights(out)
    assert meta["mmgt_component"] == "wavlm" and detect_component(state, {}) == "wavlm"
    assert any(key.startswith("encoder.pos_conv_embed.") for key in state)
