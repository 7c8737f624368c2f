"""Stage-I audio features vs the official fixtures: EDGE baseline (librosa), WavLM (unilm -> transformers), concat.

Tolerances:
* EDGE one-hot columns (onset, beat): exact. EDGE float columns: max |ours - official| <= 1e-3 x the column's
  largest magnitude (fixture README: ~1e-3 relative; they depend on librosa/soxr versions).
* WavLM (tiny unilm checkpoint converted to transformers): atol 1e-4 (fixture README, module level).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file
from tensor_meter import ReturnedTensors

from mmgt_core.audio import wavlm as wavlm_module
from mmgt_core.audio.edge_features import (
    BEAT_COLUMN,
    EDGE_FEATURE_DIM,
    ONE_HOT_COLUMNS,
    ONSET_COLUMN,
    edge_features,
    fit_frames,
    official_start_bpm,
)
from mmgt_core.audio.stage1 import stage1_feature_dim, stage1_features
from mmgt_core.audio.waveform import frame_count, resample
from mmgt_core.audio.wavlm import (
    convert_unilm_wavlm,
    export_wavlm_safetensors,
    load_wavlm,
    parse_conv_layers,
    plan_chunks_seconds,
    wavlm_features,
    wavlm_last_layer,
)
from mmgt_core.errors import WeightsError
from mmgt_core.tiny_models import synthetic_speech
from mmgt_core.weights import load_weights, read_config

WAVLM_ATOL = 1e-4
EDGE_FLOAT_RTOL = 1e-3


@pytest.fixture(scope="module")
def speech(audio_dir):
    return soundfile.read(str(audio_dir / "speech_3p2s_16k.wav"), dtype="float32")


@pytest.fixture(scope="module")
def tiny_wavlm(audio_dir):
    return load_wavlm(audio_dir / "wavlm_tiny" / "WavLM-tiny.pt")


@pytest.fixture(scope="module")
def official_wavlm(audio_dir):
    return load_file(str(audio_dir / "wavlm_features.safetensors"))


@pytest.fixture(scope="module")
def official_edge(audio_dir):
    return load_file(str(audio_dir / "baseline_features.safetensors"))["baseline_speech"].numpy()


def assert_edge_close(ours: np.ndarray, official: np.ndarray) -> None:
    one_hot = list(ONE_HOT_COLUMNS)
    np.testing.assert_array_equal(ours[:, one_hot], official[:, one_hot])
    floats = [c for c in range(EDGE_FEATURE_DIM) if c not in one_hot]
    scale = np.abs(official[:, floats]).max(axis=0)
    error = np.abs(ours[:, floats] - official[:, floats]).max(axis=0)
    assert (error <= EDGE_FLOAT_RTOL * scale).all(), f"EDGE float columns off: {error / scale}"


# ------------------------------------------------------------------------------------------------- EDGE


def test_edge_features_match_official(speech, official_edge):
    wave, rate = speech
    ours = edge_features(wave, rate).numpy()
    assert ours.shape == official_edge.shape and ours.dtype == np.float32
    assert_edge_close(ours, official_edge)


def test_start_bpm_reproduces_the_official_fallback(speech, audio_dir):
    wave, rate = speech
    info = json.loads((audio_dir / "audio_info.json").read_text())
    expected = info["baseline"]["speech"]["start_bpm_fallback"]
    assert official_start_bpm(wave, rate) == pytest.approx(expected, rel=1e-9)


def test_edge_features_fit_odd_lengths_and_silence_has_no_onsets_or_beats(speech):
    wave, rate = speech
    odd = wave[:32321]
    features = edge_features(odd, rate).numpy()
    assert features.shape == (frame_count(odd.shape[0], rate), EDGE_FEATURE_DIM)
    assert set(np.unique(features[:, list(ONE_HOT_COLUMNS)])) <= {0.0, 1.0}
    silent = edge_features(np.zeros(16000, dtype=np.float32), 16000).numpy()
    assert silent.shape == (frame_count(16000, 16000), EDGE_FEATURE_DIM) and np.isfinite(silent).all()
    assert not silent[:, ONSET_COLUMN].any() and not silent[:, BEAT_COLUMN].any()


def test_fit_frames_pads_floats_with_last_row_and_one_hots_with_zero():
    rows = np.arange(3 * EDGE_FEATURE_DIM, dtype=np.float32).reshape(3, EDGE_FEATURE_DIM)
    rows[:, list(ONE_HOT_COLUMNS)] = 1.0
    padded = fit_frames(rows, 5)
    assert padded.shape == (5, EDGE_FEATURE_DIM)
    np.testing.assert_array_equal(padded[:3], rows)
    assert (padded[3:, 0] == rows[-1, 0]).all() and not padded[3:, list(ONE_HOT_COLUMNS)].any()
    np.testing.assert_array_equal(fit_frames(rows, 2), rows[:2])


# ------------------------------------------------------------------------------------------------- WavLM


def test_wavlm_unilm_checkpoint_matches_official(tiny_wavlm, speech, official_wavlm):
    wave, _ = speech
    assert tiny_wavlm.normalize_waveform
    frames50 = wavlm_last_layer(tiny_wavlm, wave)
    torch.testing.assert_close(frames50, official_wavlm["wavlm_last_layer_50hz"][0], atol=WAVLM_ATOL, rtol=0)
    feats = wavlm_features(tiny_wavlm, wave)
    torch.testing.assert_close(feats, official_wavlm["wavlm_feats_25fps"], atol=WAVLM_ATOL, rtol=0)


def test_every_unilm_key_is_mapped_onto_transformers(audio_dir, tiny_wavlm):
    state, metadata = load_weights(audio_dir / "wavlm_tiny" / "WavLM-tiny.pt")
    hf_state, hf_config = convert_unilm_wavlm(state, read_config(metadata))
    expected = {k.replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v") for k in tiny_wavlm.model.state_dict()}
    assert set(hf_state) == expected
    assert hf_config["do_stable_layer_norm"] and hf_config["feat_extract_norm"] == "layer"
    # the tiny model has no post_extract_proj (conv dim == encoder dim): the projection must be an exact identity
    torch.testing.assert_close(hf_state["feature_projection.projection.weight"], torch.eye(32), atol=0, rtol=0)
    torch.testing.assert_close(hf_state["encoder.layers.1.attention.gru_rel_pos_const"],
                               state["encoder.layers.1.self_attn.grep_a"], atol=0, rtol=0)

    with pytest.raises(WeightsError, match="does not match"):
        wavlm_module.wavlm_from_unilm({k: v for k, v in state.items() if "fc2" not in k}, read_config(metadata), "x")
    with pytest.raises(WeightsError, match="gru_rel_pos"):
        convert_unilm_wavlm(state, {**read_config(metadata), "gru_rel_pos": False})


def test_conv_spec_is_parsed_without_eval():
    large = parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")
    assert len(large) == 7 and large[0] == (512, 10, 5) and large[-1] == (512, 2, 2)
    with pytest.raises(WeightsError):
        parse_conv_layers("__import__('os').getcwd()")


def test_other_wavlm_sources_give_the_same_features(tmp_path, audio_dir, speech, official_wavlm):
    wave, _ = speech
    expected = official_wavlm["wavlm_feats_25fps"]
    unilm_safetensors = load_wavlm(audio_dir / "wavlm_tiny" / "WavLM-tiny_model.safetensors",
                                   unilm_cfg=audio_dir / "wavlm_tiny" / "WavLM-tiny_cfg.json")
    exported = load_wavlm(export_wavlm_safetensors(audio_dir / "wavlm_tiny" / "WavLM-tiny.pt",
                                                   tmp_path / "wavlm_tiny.safetensors"))
    unilm_safetensors.model.save_pretrained(tmp_path / "hf")
    hf_folder = load_wavlm(tmp_path / "hf")
    for encoder in (unilm_safetensors, exported, hf_folder):
        assert encoder.normalize_waveform
        torch.testing.assert_close(wavlm_features(encoder, wave), expected, atol=WAVLM_ATOL, rtol=0)
    with pytest.raises(WeightsError, match="cfg"):
        load_wavlm(audio_dir / "wavlm_tiny" / "WavLM-tiny_model.safetensors")


def test_wavlm_bf16_on_cpu_stays_close_to_official(audio_dir, speech, official_wavlm):
    """bf16 precision only (~0.05 here); without the positional-conv float32 workaround the error is ~2.5."""
    encoder = load_wavlm(audio_dir / "wavlm_tiny" / "WavLM-tiny.pt", dtype=torch.bfloat16)
    feats = wavlm_features(encoder, speech[0])
    assert feats.dtype == torch.float32
    assert (feats - official_wavlm["wavlm_feats_25fps"]).abs().max() < 0.2


def test_chunk_plan_covers_every_frame_once(tiny_wavlm):
    config = tiny_wavlm.model.config
    ten_minutes = 600 * 16000
    chunks = plan_chunks_seconds(config, ten_minutes, 20.0, 5.0)
    kept = [c.sample_start // 320 + c.keep_from for c in chunks]
    assert kept == [i * 1000 for i in range(len(chunks))]
    assert sum(c.keep_count for c in chunks) == wavlm_module.conv_frames(ten_minutes, config)
    longest = max(wavlm_module.conv_frames(c.sample_end - c.sample_start, config) for c in chunks)
    assert longest <= 1000 + 2 * 250  # bounded attention size, whatever the clip length


def test_chunked_matches_unchunked(tiny_wavlm, speech):
    """Chunks stitch exactly (context covering the clip); with 2 s of context the tiny random model stays close
    (mean |diff| < 0.05, max < 0.5 on values up to ~10) and closer than with 0.5 s: attention is global."""
    wave, _ = speech
    whole = wavlm_last_layer(tiny_wavlm, wave)
    stitched = wavlm_last_layer(tiny_wavlm, wave, chunk_seconds=1.0, context_seconds=4.0)
    torch.testing.assert_close(stitched, whole, atol=1e-5, rtol=0)
    near = (wavlm_last_layer(tiny_wavlm, wave, chunk_seconds=1.0, context_seconds=2.0) - whole).abs()
    far = (wavlm_last_layer(tiny_wavlm, wave, chunk_seconds=1.0, context_seconds=0.5) - whole).abs()
    assert near.mean() < 0.05 and near.max() < 0.5 and near.mean() < far.mean()


def test_attention_runs_in_row_blocks_with_transformers_result(tiny_wavlm):
    """On a 30 s chunk (the longest one model call sees) the row-block attention gives transformers' own result
    while no tensor reaches the size of one heads x T x T attention map, which the stock attention builds."""
    from transformers import WavLMModel

    ours = tiny_wavlm.model
    stock = WavLMModel(ours.config).eval()
    stock.load_state_dict(ours.state_dict())
    wave = torch.from_numpy(synthetic_speech(30.0, 16000))[None]
    outputs, largest = [], []
    for model in (ours, stock):
        with torch.inference_mode(), ReturnedTensors() as meter:
            outputs.append(model(wave).last_hidden_state)
        largest.append(meter.largest_bytes)
    frames = outputs[0].shape[1]
    heads = ours.config.num_attention_heads
    attention_map_bytes = heads * frames * frames * 4
    assert frames == 1499 and wavlm_module.ATTENTION_BLOCK_ELEMENTS // (heads * frames) < frames  # several blocks
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=0)
    assert largest[1] >= attention_map_bytes > 2 * largest[0]


# ------------------------------------------------------------------------------------------------- Stage I


def test_stage1_concatenates_wavlm_then_edge(tiny_wavlm, speech, official_wavlm, official_edge):
    wave, rate = speech
    steps, cancels = [], []
    features = stage1_features(wave, rate, tiny_wavlm, device="cpu", dtype=torch.float32,
                               progress=lambda step, total: steps.append((step, total)),
                               check_cancel=lambda: cancels.append(1))
    assert features.shape == (80, stage1_feature_dim(tiny_wavlm)) == (80, 32 + 35)
    torch.testing.assert_close(features[:, :32], official_wavlm["wavlm_feats_25fps"], atol=WAVLM_ATOL, rtol=0)
    assert_edge_close(features[:, 32:].numpy(), official_edge)
    assert steps[-1] == (2, 2) and len(cancels) >= 2


def test_stage1_resamples_44k_stereo_to_one_row_per_video_frame(tiny_wavlm, speech):
    wave, rate = speech
    stereo44 = torch.from_numpy(np.stack([resample(wave[:30000], rate, 44100).numpy()] * 2))[None]
    features = stage1_features(stereo44, 44100, tiny_wavlm)
    expected_rows = frame_count(resample(stereo44[0, 0], 44100, 16000).shape[0], 16000)
    assert features.shape == (expected_rows, 67) and torch.isfinite(features).all()


def test_stage1_cancel_stops_the_work(tiny_wavlm, speech):
    class Stop(Exception):
        pass

    def cancel():
        raise Stop

    with pytest.raises(Stop):
        stage1_features(speech[0], speech[1], tiny_wavlm, check_cancel=cancel)
