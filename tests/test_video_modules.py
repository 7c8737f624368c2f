"""Stage-II modules: key layout of the real-size net, and module parity with the official fixtures (set A).

Tolerances: atol 1e-4 (fixture README) except the reference banks, which the official code rounds to float16;
float noise before that rounding may flip a value by one fp16 ulp (<= 2^-10 relative), hence rtol 1e-3 there.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers.models.attention_processor import Attention
from safetensors.torch import load_file

from mmgt_core.errors import InputError, WeightsError
from mmgt_core.video.audio_proj import AudioProjModel
from mmgt_core.video.config import VideoNetConfig
from mmgt_core.video.mmhaa import level_masks
from mmgt_core.video.motion_module import MotionModule, sinusoidal_table
from mmgt_core.video.net import VideoNet, load_video_net
from mmgt_core.video.pose_guider import PoseGuider
from mmgt_core.video.reference_bank import self_attention_with_reference, split_heads
from mmgt_core.video.reference_unet import ReferenceNet
from mmgt_core.weights import strict_load
from tiny_fixture import tiny_net_config

ATOL = 1e-4


@pytest.fixture(scope="module")
def net_state(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "stage2" / "net_tiny.safetensors")


def _component(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def test_fullsize_state_dict_equals_official_manifest_and_holds_every_tensor(fixtures_dir):
    manifest = json.loads((fixtures_dir / "stage2" / "net_fullsize_sd15_manifest.json").read_text())
    with torch.device("meta"):
        net = VideoNet(VideoNetConfig.sd15(), zero_init=False)
    # load_video_net gives storage with to_empty(); a tensor that is not saved would stay garbage
    assert {name for name, _ in [*net.named_parameters(), *net.named_buffers()]} == set(net.state_dict())
    ours = {key: list(value.shape) for key, value in net.state_dict().items()}
    assert len(ours) == 2232
    assert ours == manifest
    assert sum(".motion_modules." in key for key in ours) == 588
    audio_keys = [key for key in ours if ".audio_modules." in key]
    assert len(audio_keys) == 252 and all(key.startswith("denoising_unet.down_blocks.") for key in audio_keys)
    # Hallo head-dim quirk (spec Q13)
    assert ours["denoising_unet.down_blocks.1.audio_modules.0.proj_in.weight"] == [320, 640, 1, 1]
    assert ours["denoising_unet.down_blocks.2.audio_modules.0.proj_in.weight"] == [640, 1280, 1, 1]


def test_config_round_trips_through_json(fixtures_dir):
    config = tiny_net_config(fixtures_dir)
    assert VideoNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_tiny_net_loads_strictly_and_rejects_a_broken_file(fixtures_dir, net_state):
    net = load_video_net(net_state, tiny_net_config(fixtures_dir))
    assert not net.training
    loaded = net.state_dict()
    key = "denoising_unet.down_blocks.1.audio_modules.0.transformer_blocks.0.attn2_2.to_k.weight"
    assert torch.equal(loaded[key], net_state[key])
    broken = dict(net_state)
    broken.pop(key)
    with pytest.raises(WeightsError, match="missing"):
        load_video_net(broken, tiny_net_config(fixtures_dir))


def test_audioproj_matches_official_and_refuses_a_wrong_feature_width(fixtures_dir, net_state):
    io = load_file(fixtures_dir / "stage2" / "audioproj_io.safetensors")
    model = AudioProjModel(tiny_net_config(fixtures_dir).audio_proj)
    strict_load(model, _component(net_state, "audioproj."), "audioproj", "net_tiny")
    with torch.no_grad():
        out = model(io["input"])
    torch.testing.assert_close(out, io["output"], atol=ATOL, rtol=0)
    with pytest.raises(InputError):
        model(io["input"][..., :16])


def test_pose_guider_matches_official(fixtures_dir, net_state):
    io = load_file(fixtures_dir / "stage2" / "pose_guider_io.safetensors")
    model = PoseGuider(tiny_net_config(fixtures_dir).pose_guider)
    strict_load(model, _component(net_state, "pose_guider."), "pose_guider", "net_tiny")
    pose = io["input_uint8_LHWC"].permute(3, 0, 1, 2)[None].float() / 255
    with torch.no_grad():
        out = model(pose)
    torch.testing.assert_close(out, io["output"], atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def reference_net(fixtures_dir, net_state) -> ReferenceNet:
    net = ReferenceNet.from_unet_config(tiny_net_config(fixtures_dir).unet)
    strict_load(net, _component(net_state, "reference_unet."), "reference_unet", "net_tiny")
    return net.eval()


def _write_inputs(fixtures_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    io = load_file(fixtures_dir / "stage2" / "unet_forward_io.safetensors")
    embeds = io["clip_image_embeds"][:, None]
    return io["ref_latent"].repeat(2, 1, 1, 1), torch.cat([torch.zeros_like(embeds), embeds])


def test_reference_banks_match_official(fixtures_dir, reference_net):
    latent, context = _write_inputs(fixtures_dir)
    expected = load_file(fixtures_dir / "stage2" / "reference_bank.safetensors")
    info = json.loads((fixtures_dir / "stage2" / "stage2_info.json").read_text())
    with torch.no_grad():
        bank = reference_net.write_bank(latent, context)
        raw = reference_net.write_bank(latent, context, round_to_fp16=False)
    entries = bank.sorted_entries()
    assert [name for name, _ in entries] == [writer for writer, _ in info["unet_forward"]["bank_pairs_writer_reader"]]
    for index, ((_, rounded), (_, unrounded)) in enumerate(zip(entries, raw.sorted_entries(), strict=True)):
        official = expected[f"bank_{index:02d}"]
        torch.testing.assert_close(rounded, official, atol=ATOL, rtol=1e-3)  # at most one fp16 ulp apart
        assert torch.equal(rounded, rounded.half().float())  # the official fp16 rounding is applied
        half_ulp = official.abs() * 2.0**-11 + 1e-5
        assert ((unrounded - official).abs() <= half_ulp).all()


def test_reference_net_output_matches_official(fixtures_dir, reference_net):
    latent, context = _write_inputs(fixtures_dir)
    expected = load_file(fixtures_dir / "stage2" / "unet_forward_io.safetensors")["reference_unet_out"]
    with torch.no_grad():
        out = reference_net(latent, 0, encoder_hidden_states=context).sample
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


def test_shared_bank_attention_equals_official_concatenation():
    """Projecting the bank once and broadcasting it over frames equals attn1(n, cat([n, bank repeated]))."""
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=4, dim_head=4).eval()
    batch, frames, tokens = 2, 3, 10
    hidden = torch.randn(batch * frames, tokens, 16)
    bank = torch.randn(batch, 7, 16)
    read_rows = torch.tensor([False, True])
    reference = (split_heads(attn.to_k(bank), 4), split_heads(attn.to_v(bank), 4))
    with torch.no_grad():
        ours = self_attention_with_reference(attn, hidden, frames, reference, read_rows)
        repeated = bank.repeat_interleave(frames, dim=0)
        official = attn(hidden, encoder_hidden_states=torch.cat([hidden, repeated], dim=1))
        plain = attn(hidden)
    torch.testing.assert_close(ours[frames:], official[frames:], atol=1e-6, rtol=0)  # cond rows read the bank
    torch.testing.assert_close(ours[:frames], plain[:frames], atol=1e-6, rtol=0)  # uncond rows do not


def test_motion_module_positions_and_frame_limit():
    module = MotionModule(32, heads=8, max_frames=32)
    assert "temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe" in module.state_dict()
    pe = module.temporal_transformer.transformer_blocks[0].attention_blocks[0].pos_encoder.pe
    assert pe.shape == (1, 32, 32)
    positions = torch.arange(32.0)
    torch.testing.assert_close(pe[0, :, 0], torch.sin(positions))  # channel pair 0 has frequency 1
    torch.testing.assert_close(pe[0, :, 1], torch.cos(positions))
    assert torch.equal(pe, sinusoidal_table(32, 32))
    with pytest.raises(InputError, match="frames per window"):
        module(torch.randn(33, 32, 2, 2), video_length=33)


def test_mask_layouts_are_equivalent_and_checked():
    frames, height, width = 2, 4, 6
    spatial = [torch.rand(frames, height // 2**k, width // 2**k) for k in range(2)]
    flat = [level.flatten(1) for level in spatial]
    as_spatial = SimpleNamespace(full=spatial, face=spatial, lips=spatial)
    as_flat = SimpleNamespace(full=flat, face=flat, lips=flat)
    args = (2, frames, height // 2, width // 2, torch.float32, torch.device("cpu"))
    for ours, theirs in zip(level_masks(as_spatial, 1, *args), level_masks(as_flat, 1, *args), strict=True):
        assert ours.shape == (2 * frames, (height // 2) * (width // 2))
        assert torch.equal(ours, theirs)
        assert torch.equal(ours[:frames], ours[frames:])  # shared by both CFG halves
    transposed = SimpleNamespace(full=[level.transpose(1, 2) for level in spatial], face=spatial, lips=spatial)
    with pytest.raises(InputError, match="full mask"):
        level_masks(transposed, 1, *args)


def test_pose_guider_rejects_wrong_layout():
    with pytest.raises(InputError):
        PoseGuider()(torch.rand(1, 6, 3, 64, 64))
