"""Denoising 3D UNet parity with the official code (fixture 4c), plus branch weights, CFG reference rows,
train/eval invariance, gradient checkpointing, non-square latents and bf16.

Tolerance: atol 1e-4 (fixture README; 1-vs-2-thread float noise of this output is <= 1e-5).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from mmgt_core.errors import InputError
from mmgt_core.video.net import VideoNet, load_video_net
from tiny_fixture import tiny_net_config

ATOL = 1e-4
CFG_ROWS = (False, True)  # batch [uncond; cond]: only the conditional half reads the reference


def official_reference(net: VideoNet, latent: torch.Tensor, embeds: torch.Tensor):
    """The pipeline's reference: ReferenceNet on [zeros; CLIP] (official batch), conditional row kept."""
    context = embeds.reshape(1, 1, -1)
    with torch.no_grad():
        both = net.reference_kv(latent.repeat(2, 1, 1, 1), torch.cat([torch.zeros_like(context), context]))
    return both.conditional_row()


@pytest.fixture(scope="module")
def case(fixtures_dir: Path, tiny_net: VideoNet) -> SimpleNamespace:
    """The fixture's CFG batch, built the way the official pipeline builds it."""
    io = load_file(fixtures_dir / "stage2" / "unet_forward_io.safetensors")
    tokens = load_file(fixtures_dir / "stage2" / "audioproj_io.safetensors")["output"]
    pose = load_file(fixtures_dir / "stage2" / "pose_guider_io.safetensors")["output"]
    embeds = io["clip_image_embeds"][:, None]
    levels = range(4)
    reference = official_reference(tiny_net, io["ref_latent"], io["clip_image_embeds"])
    return SimpleNamespace(
        io=io,
        sample=io["latents"].repeat(2, 1, 1, 1, 1),
        timestep=io["timestep"],
        context=torch.cat([torch.zeros_like(embeds), embeds]),
        audio=torch.cat([torch.zeros_like(tokens), tokens]),
        pose=pose,
        masks=SimpleNamespace(full=[io[f"full_mask_level{k}"] for k in levels],
                              face=[io[f"face_mask_level{k}"] for k in levels],
                              lips=[io[f"lip_mask_level{k}"] for k in levels]),
        reference=reference,
    )


def run(net: VideoNet, case: SimpleNamespace, **overrides) -> torch.Tensor:
    kwargs = dict(audio_tokens=case.audio, pose_features=case.pose, masks=case.masks, reference=case.reference,
                  reference_rows=CFG_ROWS)
    kwargs.update(overrides)
    sample = kwargs.pop("sample", case.sample)
    return net.denoising_unet(sample, case.timestep, kwargs.pop("context", case.context), **kwargs)


def test_released_weighted_forward_matches_official(tiny_net, case):
    with torch.no_grad():
        out = run(tiny_net, case, branch_weights=(1.0, 1.0, 2.0))
    torch.testing.assert_close(out, case.io["out_released_train_gc_scale112"], atol=ATOL, rtol=0)
    with torch.no_grad():
        default = run(tiny_net, case)
    assert torch.equal(default, out)  # [1, 1, 2] is the default


def test_unweighted_forward_matches_official_eval(tiny_net, case):
    with torch.no_grad():
        out = run(tiny_net, case, branch_weights=None)
        ones = run(tiny_net, case, branch_weights=(1, 1, 1))
    torch.testing.assert_close(out, case.io["out_eval_unweighted"], atol=ATOL, rtol=0)
    torch.testing.assert_close(ones, out, atol=1e-6, rtol=0)


def test_a_conditional_only_bank_equals_the_per_row_bank_and_uncond_rows_never_read_it(tiny_net, case):
    """A kept conditional bank row (broadcast) equals the official per-row bank; uncond rows never read it."""
    io = case.io
    with torch.no_grad():
        two_rows = tiny_net.reference_kv(io["ref_latent"].repeat(2, 1, 1, 1), case.context)
        official_style = run(tiny_net, case, reference=two_rows)
        ours = run(tiny_net, case)
        no_reference = run(tiny_net, case, reference=None)
    torch.testing.assert_close(ours, official_style, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours[:1], no_reference[:1], atol=1e-5, rtol=0)
    assert (ours[1:] - no_reference[1:]).abs().max() > 1e-2  # the reference does change the cond half
    assert next(iter(case.reference.keys.values())).shape[0] == 1


def test_train_mode_and_checkpointing_do_not_change_outputs(tiny_net, case):
    with torch.no_grad():
        expected = run(tiny_net, case)
    unet = tiny_net.denoising_unet
    unet.train()
    unet.enable_gradient_checkpointing()
    try:
        sample = case.sample.clone().requires_grad_()
        out = run(tiny_net, case, sample=sample)
        out.square().mean().backward()
        grad_checkpointed = sample.grad.clone()
        unet.enable_gradient_checkpointing(False)
        sample.grad = None
        run(tiny_net, case, sample=sample).square().mean().backward()
    finally:
        unet.enable_gradient_checkpointing(False)
        unet.eval()
        unet.zero_grad(set_to_none=True)
    torch.testing.assert_close(out.detach(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_checkpointed, sample.grad, atol=1e-6, rtol=1e-5)


def test_non_square_latents_take_spatial_or_flat_masks_and_refuse_mismatched_levels(tiny_net):
    torch.manual_seed(0)
    frames, height, width = 3, 16, 24
    levels = [(height >> k, width >> k) for k in range(4)]
    branches = ("full", "face", "lips")
    spatial = SimpleNamespace(**{name: [torch.rand(frames, h, w) for h, w in levels] for name in branches})
    flat = SimpleNamespace(**{name: [m.flatten(1) for m in getattr(spatial, name)] for name in branches})
    context = torch.randn(2, 1, 32)
    with torch.no_grad():
        reference = tiny_net.reference_kv(torch.randn(1, 4, height, width), context[1])
        pose = tiny_net.pose_guider(torch.rand(1, 3, frames, height * 8, width * 8))
        kwargs = dict(audio_tokens=torch.randn(2, frames, 32, 48), pose_features=pose, reference=reference,
                      reference_rows=CFG_ROWS)
        sample = torch.randn(2, 4, frames, height, width)
        out = tiny_net.denoising_unet(sample, 500, context, masks=spatial, **kwargs)
        out_flat = tiny_net.denoising_unet(sample, 500, context, masks=flat, **kwargs)
    assert out.shape == sample.shape and torch.isfinite(out).all()
    assert torch.equal(out, out_flat)
    square_masks = SimpleNamespace(full=spatial.full[:1], face=spatial.face, lips=spatial.lips)
    with pytest.raises(InputError):
        tiny_net.denoising_unet(sample, 500, context, masks=square_masks, **kwargs)


def test_bf16_runs_close_to_fp32(fixtures_dir, case):
    net = load_video_net(fixtures_dir / "stage2" / "net_tiny.safetensors", tiny_net_config(fixtures_dir),
                         dtype=torch.bfloat16)
    with torch.no_grad():
        out = run(net, case, reference=official_reference(net, case.io["ref_latent"], case.io["clip_image_embeds"]))
    expected = case.io["out_released_train_gc_scale112"]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    relative = (out.float() - expected).norm() / expected.norm()
    assert relative < 0.03, f"bf16 relative error {relative:.4f}"
