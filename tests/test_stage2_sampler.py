"""Stage-II sampling pieces: scheduler parity, context windows, conditioning, masks, decode, sampler checks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmgt_core.errors import Cancelled, InputError
from mmgt_core.video.conditioning import (
    BranchMasks,
    branch_masks_from_regions,
    check_output_size,
    clip_image_embeds,
    clip_pixel_values,
    compose_branch_masks,
    cover_resize,
    load_clip_image_encoder,
    pose_window,
    reference_latent,
    reference_pixels,
    zero_branch_masks,
)
from mmgt_core.video.context import blend_ramp, closed_loop_indices, context_windows
from mmgt_core.video.net import VideoNet
from mmgt_core.video.sampler import SamplingSettings, project_audio, sample_latents
from mmgt_core.video.scheduler import RELEASED_SCHEDULER_CONFIG, ddim_step, inference_timesteps, make_scheduler
from mmgt_core.video.vae_codec import decode_latents, encode_images
from tiny_fixture import random_conditioning

MODULE_ATOL = 1e-4  # fixture README: module-level parity


@pytest.fixture(scope="module")
def pipeline_run(stage2: Path) -> dict[str, torch.Tensor]:
    return load_file(stage2 / "pipeline_run.safetensors")


# ---------------------------------------------------------------------------------------------------------------
# Scheduler (fixture section 4d)


def test_scheduler_matches_official(stage2: Path) -> None:
    official = load_file(stage2 / "ddim_scheduler.safetensors")
    stored_config = json.loads((stage2 / "ddim_scheduler_config.json").read_text())
    for key, value in RELEASED_SCHEDULER_CONFIG.items():
        assert stored_config[key] == value, key
    scheduler = make_scheduler()
    torch.testing.assert_close(scheduler.alphas_cumprod, official["alphas_cumprod"], atol=1e-6, rtol=0)
    torch.testing.assert_close(scheduler.betas, official["betas"], atol=1e-5, rtol=0)
    assert float(scheduler.alphas_cumprod[-1]) == 0.0  # zero terminal SNR
    assert torch.equal(inference_timesteps(scheduler, 30), official["timesteps_30"])
    stepped = ddim_step(scheduler, official["step_model_output"], int(official["step_timestep"]),
                        official["step_latents"])
    torch.testing.assert_close(stepped, official["step_prev_sample"], atol=MODULE_ATOL, rtol=0)


def test_three_step_timesteps_match_the_official_pipeline(stage2: Path) -> None:
    info = json.loads((stage2 / "stage2_info.json").read_text())
    assert inference_timesteps(make_scheduler(), 3).tolist() == info["scheduler"]["timesteps_pipeline"]


# ---------------------------------------------------------------------------------------------------------------
# Context windows


def test_closed_loop_matches_official_schedule() -> None:
    assert closed_loop_indices(10) == [list(range(10))]
    assert closed_loop_indices(12) == [list(range(12))]
    assert closed_loop_indices(14) == [list(range(12)), [8, 9, 10, 11, 12, 13, 0, 1, 2, 3, 4, 5]]
    windows = closed_loop_indices(80)
    assert len(windows) == 10
    assert [window[0] for window in windows] == list(range(0, 80, 8))
    assert windows[-1] == [72, 73, 74, 75, 76, 77, 78, 79, 0, 1, 2, 3]
    flat = context_windows(14, schedule="closed_loop")
    assert all(torch.equal(window.weights, torch.ones(12)) for window in flat)


@pytest.mark.parametrize("frames", [1, 5, 12, 13, 14, 22, 47, 80, 96, 301])
@pytest.mark.parametrize("blend", ["linear", "cosine", "flat"])
def test_open_windows_cover_every_frame_without_wrapping(frames: int, blend: str) -> None:
    windows = context_windows(frames, 12, 4, "open", blend)
    covered = torch.zeros(frames)
    for window in windows:
        indices = window.frames
        assert len(indices) == min(12, frames)
        assert torch.equal(indices, torch.arange(int(indices[0]), int(indices[0]) + len(indices)))  # contiguous
        assert (window.weights > 0).all()
        covered[indices] += window.weights
    assert (covered > 0).all()
    assert int(windows[0].frames[0]) == 0 and int(windows[-1].frames[-1]) == frames - 1
    starts = [int(window.frames[0]) for window in windows]
    assert all(later - earlier <= 8 for earlier, later in zip(starts, starts[1:]))  # overlap >= 4


def test_open_window_ramps_are_partitions_of_unity() -> None:
    for blend in ("linear", "cosine"):
        ramp = blend_ramp(7, blend)
        torch.testing.assert_close(ramp + ramp.flip(0), torch.ones(7))
    windows = context_windows(20, 12, 4, "open", "linear")  # two windows overlapping on frames 8..11
    total = torch.zeros(20)
    for window in windows:
        total[window.frames] += window.weights
    torch.testing.assert_close(total, torch.ones(20))


def test_context_arguments_are_checked() -> None:
    with pytest.raises(InputError, match="context_overlap"):
        context_windows(20, 12, 12)
    with pytest.raises(InputError, match="context_schedule"):
        context_windows(20, schedule="loop")


# ---------------------------------------------------------------------------------------------------------------
# Conditioning (fixture section 4e "captured inside the pipeline", 4b)


def test_reference_image_and_clip_match_official(stage2: Path, pipeline_run, tiny_vae) -> None:
    image = Image.open(stage2 / "reference_image.png")
    pixels = reference_pixels(image, 64, 64)
    torch.testing.assert_close(pixels, pipeline_run["ref_image_tensor"], atol=1e-6, rtol=0)
    latent = reference_latent(tiny_vae, image, 64, 64)
    torch.testing.assert_close(latent, pipeline_run["ref_latent_mean"] * 0.18215, atol=MODULE_ATOL, rtol=0)
    encoder = load_clip_image_encoder(stage2 / "tiny_image_encoder")
    embeds = clip_image_embeds(encoder, image)
    torch.testing.assert_close(embeds, pipeline_run["clip_image_embeds"], atol=MODULE_ATOL, rtol=0)
    as_float = torch.from_numpy(np.array(image)).float() / 255.0  # a ComfyUI IMAGE frame
    torch.testing.assert_close(clip_image_embeds(encoder, as_float), embeds, atol=0, rtol=0)
    wrapped = clip_image_embeds(lambda pixel_values: encoder(pixel_values).image_embeds, image)
    torch.testing.assert_close(wrapped, embeds, atol=0, rtol=0)
    assert clip_pixel_values(image).shape == (1, 3, 224, 224)


def test_cover_resize_center_crops_other_aspect_ratios() -> None:
    stripes = np.zeros((100, 300, 3), dtype=np.uint8)
    stripes[:, :100] = (255, 0, 0)
    stripes[:, 100:200] = (0, 255, 0)
    stripes[:, 200:] = (0, 0, 255)
    square = np.asarray(cover_resize(Image.fromarray(stripes), 64, 64))
    assert square.shape == (64, 64, 3)
    # only the green middle third is left (LANCZOS rings by a few levels at the crop edges)
    assert square[:, :, 1].min() > 230 and square[:, :, 0].max() < 30 and square[:, :, 2].max() < 30
    tall = reference_pixels(Image.fromarray(stripes), 64, 128)
    assert tall.shape == (1, 3, 128, 64)
    same = np.asarray(cover_resize(Image.fromarray(stripes), 192, 64))
    expected = np.asarray(Image.fromarray(stripes).resize((192, 64), Image.Resampling.LANCZOS))
    assert np.array_equal(same, expected)  # same aspect: exactly the official plain resize


def test_pose_window_matches_official_lanczos(stage2: Path) -> None:
    frames = torch.from_numpy(np.load(stage2 / "unit_pose_frames_512.npz")["pose_rgb"])
    official = load_file(stage2 / "pose_guider_io.safetensors")["input_uint8_LHWC"]
    window = pose_window(frames, [0, 2, 5], 128, 128)
    expected = official[[0, 2, 5]].permute(3, 0, 1, 2)[None].float() / 255.0
    torch.testing.assert_close(window, expected, atol=0, rtol=0)
    as_float = pose_window(official.float() / 255.0, [1], 128, 128)  # float frames at the output size pass through
    torch.testing.assert_close(as_float, official[[1]].permute(3, 0, 1, 2)[None].float() / 255.0)


def test_output_size_must_be_positive_multiples_of_64() -> None:
    check_output_size(512, 768)
    check_output_size(64, 128)
    for width, height in ((500, 512), (512, 0), (96, 64)):
        with pytest.raises(InputError, match="multiples of 64"):
            check_output_size(width, height)


# ---------------------------------------------------------------------------------------------------------------
# Masks


@pytest.fixture(scope="module")
def region_masks(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    stored = np.load(fixtures_dir / "pose" / "pose_frames_and_masks_512.npz")
    return {name: torch.from_numpy(stored[f"{name}_mask_rgb"][..., 0]) for name in ("face_hands", "lips", "hands")}


def test_released_mask_mode_matches_official(fixtures_dir: Path, region_masks) -> None:
    official = load_file(fixtures_dir / "pose" / "inference_masks_512.safetensors")
    masks = branch_masks_from_regions(region_masks["face_hands"], region_masks["lips"], region_masks["hands"], 512, 512)
    for level in range(4):
        torch.testing.assert_close(masks.face[level], official[f"face_mask_level{level}"], atol=0, rtol=0)
        torch.testing.assert_close(masks.lips[level], official[f"lips_mask_level{level}"], atol=0, rtol=0)
        torch.testing.assert_close(masks.full[level], official[f"full_mask_level{level}"], atol=0, rtol=0)


def test_mask_modes_change_only_the_full_branch_and_unknown_modes_are_refused() -> None:
    face, lips, hands = ([torch.rand(3, 4, 4) for _ in range(4)] for _ in range(3))
    paper = compose_branch_masks(face, lips, hands, "paper")
    training = compose_branch_masks(face, lips, hands, "training")
    released = compose_branch_masks(face, lips, hands)
    torch.testing.assert_close(paper.full[1], 1.0 - face[1].reshape(3, 16))
    torch.testing.assert_close(training.full[2], hands[2].reshape(3, 16))
    torch.testing.assert_close(released.full[0], 1.0 + lips[0].reshape(3, 16))
    for masks in (paper, training, released):
        torch.testing.assert_close(masks.face[3], face[3].reshape(3, 16))
        torch.testing.assert_close(masks.lips[3], lips[3].reshape(3, 16))
    with pytest.raises(InputError, match="hands"):
        compose_branch_masks(face, lips, None, "training")
    with pytest.raises(InputError, match="mask_mode"):
        compose_branch_masks(face, lips, hands, "background")


def test_masks_of_another_aspect_are_cropped_to_the_output(region_masks) -> None:
    masks = branch_masks_from_regions(region_masks["face_hands"], region_masks["lips"], None, 256, 128)
    assert [level.shape for level in masks.full] == [(6, 16 * 32), (6, 8 * 16), (6, 4 * 8), (6, 2 * 4)]
    selected = masks.select(torch.tensor([1, 4]))
    torch.testing.assert_close(selected.face[0], masks.face[0][[1, 4]])
    with pytest.raises(InputError, match="lips_mask"):
        branch_masks_from_regions(region_masks["face_hands"], region_masks["lips"][:5], None, 512, 512)


# ---------------------------------------------------------------------------------------------------------------
# VAE decode / encode


def test_chunked_decode_matches_official_video(pipeline_run, tiny_vae) -> None:
    frames = decode_latents(tiny_vae, pipeline_run["final_latents"])  # one frame at a time, like the official
    assert frames.shape == (14, 64, 64, 3)
    torch.testing.assert_close(frames.permute(3, 0, 1, 2)[None], pipeline_run["video"], atol=MODULE_ATOL, rtol=0)
    reported = []
    chunked = decode_latents(tiny_vae, pipeline_run["final_latents"], chunk_frames=5,
                             progress=lambda done, total: reported.append((done, total)))
    torch.testing.assert_close(chunked, frames, atol=1e-5, rtol=0)
    assert reported == [(5, 14), (10, 14), (14, 14)]


def test_chunked_encode_matches_single_batch(pipeline_run, tiny_vae) -> None:
    pixels = pipeline_run["ref_image_tensor"].repeat(3, 1, 1, 1) * torch.tensor([1.0, 0.5, -0.3]).view(3, 1, 1, 1)
    whole = encode_images(tiny_vae, pixels, chunk_frames=3)
    torch.testing.assert_close(encode_images(tiny_vae, pixels, chunk_frames=1), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole[:1], pipeline_run["ref_latent_mean"] * 0.18215, atol=MODULE_ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Sampler behaviour on the tiny network


def test_project_audio_uses_clamped_windows(tiny_net: VideoNet, fixtures_dir: Path) -> None:
    features = load_file(fixtures_dir / "audio" / "wav2vec2_features.safetensors")["audio_emb_noclip"]
    official = load_file(fixtures_dir / "stage2" / "audioproj_io.safetensors")
    tokens = project_audio(tiny_net.audioproj, features, chunk_frames=7)
    assert tokens.shape == (80, 32, 48)
    torch.testing.assert_close(tokens[:6], official["output"][0], atol=MODULE_ATOL, rtol=0)


def test_non_square_sampling_runs_the_pose_guider_per_window_and_reports_each_window(tiny_net: VideoNet) -> None:
    cond = random_conditioning(tiny_net, frames=20, width=128, height=64)
    pose_calls: list[int] = []
    handle = tiny_net.pose_guider.register_forward_hook(lambda _m, inputs, _o: pose_calls.append(inputs[0].shape[2]))
    reported: list[tuple[int, int]] = []
    cancel_checks = []
    try:
        latents = sample_latents(tiny_net, cond, SamplingSettings(width=128, height=64, steps=2),
                                 torch.Generator().manual_seed(3), progress=lambda d, t: reported.append((d, t)),
                                 check_cancel=lambda: cancel_checks.append(1))
    finally:
        handle.remove()
    assert latents.shape == (1, 4, 20, 8, 16)
    assert torch.isfinite(latents).all()
    assert pose_calls and max(pose_calls) <= 12  # pose features are computed per window, never for all frames
    assert reported == [(index, 4) for index in range(1, 5)]  # 2 steps x 2 windows
    assert len(cancel_checks) >= 4


def test_pose_driven_sampling_runs_without_audio_tokens(tiny_net: VideoNet) -> None:
    cond = random_conditioning(tiny_net, frames=6, width=64, height=64, audio=False)
    latents = sample_latents(tiny_net, cond, SamplingSettings(width=64, height=64, steps=1, guidance_scale=1.0),
                             torch.Generator().manual_seed(0))
    assert latents.shape == (1, 4, 6, 8, 8) and torch.isfinite(latents).all()


def test_length_and_size_disagreements_raise_input_errors(tiny_net: VideoNet) -> None:
    cond = random_conditioning(tiny_net, frames=6, width=64, height=64)
    settings = SamplingSettings(width=64, height=64, steps=1)
    with pytest.raises(InputError, match="masks.*5 frames.*6"):
        sample_latents(tiny_net, replace(cond, masks=zero_branch_masks(5, 64, 64)), settings)
    long_audio = replace(cond, audio_tokens=torch.cat([cond.audio_tokens, cond.audio_tokens]))
    with pytest.raises(InputError, match="audio.*12 frames.*6"):
        sample_latents(tiny_net, long_audio, settings)
    with pytest.raises(InputError, match="multiples of 64"):
        sample_latents(tiny_net, cond, SamplingSettings(width=96, height=64, steps=1))
    with pytest.raises(InputError, match="reference_latent"):
        sample_latents(tiny_net, cond, SamplingSettings(width=128, height=64, steps=1))


def test_a_cancel_at_the_first_check_stops_sampling(tiny_net: VideoNet) -> None:
    cond = random_conditioning(tiny_net, frames=4, width=64, height=64)

    def cancel() -> None:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        sample_latents(tiny_net, cond, SamplingSettings(width=64, height=64, steps=1), check_cancel=cancel)


def test_zero_branch_masks_make_the_background_everything(tiny_net: VideoNet) -> None:
    masks = zero_branch_masks(3, 64, 64, mode="paper")
    assert isinstance(masks, BranchMasks)
    torch.testing.assert_close(masks.full[0], torch.ones(3, 64))  # no regions: the background is everything


def test_video_bench_reports_the_unet_time_relative_to_an_sd15_forward() -> None:
    from mmgt_core.video.bench import run_video_bench

    results = run_video_bench(frames=(6,), steps=1, width=128, height=128, compare_fp32=False, repeats=1,
                              tiny=True, verbose=False)
    run = results["runs"][0]
    assert run["frames"] == 6 and run["windows_per_step"] == 1
    assert run["unet_s_per_frame_step"] > 0 and results["sd15_forward_s"] > 0
    assert run["ratio_to_sd15"] == pytest.approx(run["unet_s_per_frame_step"] / results["sd15_forward_s"])
    assert run["peak_rss_increase_mib"] >= 0


def test_prepare_conditioning_builds_masks_and_audio_tokens_only_from_given_inputs(
        tiny_net: VideoNet, tiny_vae, stage2: Path, region_masks, fixtures_dir: Path) -> None:
    from mmgt_core.video.sampler import prepare_conditioning

    encoder = load_clip_image_encoder(stage2 / "tiny_image_encoder")
    image = Image.open(stage2 / "reference_image.png")
    pose = torch.from_numpy(np.load(stage2 / "unit_pose_frames_512.npz")["pose_rgb"])
    features = load_file(fixtures_dir / "audio" / "wav2vec2_features.safetensors")["audio_emb_noclip"][:6]
    cond = prepare_conditioning(tiny_net, tiny_vae, encoder, image, pose, 128, 64,
                                region_masks["face_hands"], region_masks["lips"], region_masks["hands"],
                                audio_features=features)
    assert cond.frames == 6 and cond.masks.frames == 6
    assert cond.reference_latent.shape == (1, 4, 8, 16)
    assert cond.audio_tokens.shape == (6, 32, 48)
    expected = branch_masks_from_regions(region_masks["face_hands"], region_masks["lips"], None, 128, 64)
    torch.testing.assert_close(cond.masks.full[1], expected.full[1])
    without = prepare_conditioning(tiny_net, tiny_vae, encoder, image, pose, 64, 64)
    assert without.audio_tokens is None
    torch.testing.assert_close(without.masks.face[0], torch.zeros(6, 64))
    with pytest.raises(InputError, match="neither"):
        prepare_conditioning(tiny_net, tiny_vae, encoder, image, pose, 64, 64, region_masks["face_hands"])
