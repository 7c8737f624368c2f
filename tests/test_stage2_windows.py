"""Stage II in bounded memory: pose frames and masks drawn per context window from keypoints, one pipeline object,
one settings type, and the guards against inputs that would not fit."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmgt_core.errors import InputError
from mmgt_core.keypoints import PoseSequence
from mmgt_core.masks import motion_mask_pyramids, motion_masks
from mmgt_core.pipeline import VideoInputs, VideoPipeline
from mmgt_core.render import render_pose_video
from mmgt_core.video.bench import moving_pose
from mmgt_core.video.conditioning import (
    KeypointBranchMasks,
    KeypointPoseFrames,
    compose_branch_masks,
    keypoints_at_output,
    load_clip_image_encoder,
    pose_window,
)
from mmgt_core.video.net import VideoNet
from mmgt_core.video.sampler import sample_latents
from mmgt_core.video.settings import RELEASED, VideoSettings
from tiny_fixture import random_conditioning


def _windows() -> list[torch.Tensor]:
    return [torch.arange(0, 12), torch.arange(8, 20), torch.tensor([18, 19, 0, 1, 2])]  # incl. a wrapped window


# ------------------------------------------------------------------------------------------- per window == whole


def test_pose_frames_drawn_per_window_equal_the_whole_drawing() -> None:
    pose = moving_pose(20, 128, 64)
    whole = render_pose_video(pose)  # the whole-video path: every frame drawn, then windows cut from it
    source = KeypointPoseFrames(pose)
    assert source.frames == 20
    for window in _windows():
        assert torch.equal(source.window(window, 128, 64), pose_window(whole, window, 128, 64))


def test_masks_per_window_equal_the_whole_pyramid() -> None:
    pose = moving_pose(20, 128, 64)
    for mode in ("released", "paper", "training"):
        whole_pyramids = motion_mask_pyramids(motion_masks(pose))  # full-resolution masks first, then pyramids
        whole = compose_branch_masks(whole_pyramids.face_hands, whole_pyramids.lips, whole_pyramids.hands, mode)
        lazy = KeypointBranchMasks(pose, mode)
        assert lazy.frames == 20
        for window in _windows():
            part, expected = lazy.select(window), whole.select(window)
            for branch in ("full", "face", "lips"):
                for got, want in zip(getattr(part, branch), getattr(expected, branch)):
                    assert torch.equal(got, want), (mode, branch)
    assert any(level.sum() > 0 for level in whole_pyramids.face_hands), "the synthetic pose must have face/hand boxes"


def test_sampling_with_per_window_sources_equals_the_whole_video_path(tiny_net: VideoNet) -> None:
    frames, width, height = 20, 128, 64
    pose = moving_pose(frames, width, height)
    base = random_conditioning(tiny_net, frames, width, height)
    lazy = replace(base, pose_frames=KeypointPoseFrames(pose), masks=KeypointBranchMasks(pose))
    whole = replace(base, pose_frames=render_pose_video(pose), masks=KeypointBranchMasks(pose).whole())
    for schedule in ("open", "closed_loop"):
        settings = VideoSettings(width=width, height=height, steps=2, context_schedule=schedule)
        got = sample_latents(tiny_net, lazy, settings, torch.Generator().manual_seed(1))
        want = sample_latents(tiny_net, whole, settings, torch.Generator().manual_seed(1))
        assert torch.equal(got, want), schedule


# ------------------------------------------------------------------------------------------------- the pipeline


def _pipeline_inputs(stage2: Path, frames: int, canvas: tuple[int, int]) -> VideoInputs:
    image = Image.open(stage2 / "reference_image.png").convert("RGB").resize(canvas)
    return VideoInputs(image, keypoints=moving_pose(frames, *canvas))


def test_pipeline_draws_at_the_output_size_not_the_reference_size(tiny_net, tiny_vae, stage2: Path) -> None:
    encoder = load_clip_image_encoder(stage2 / "tiny_image_encoder")
    pipeline = VideoPipeline(tiny_net, tiny_vae, encoder)
    settings = VideoSettings(width=64, height=64, steps=1, decode_chunk=3)
    inputs = _pipeline_inputs(stage2, 6, (256, 128))  # wider canvas: keypoints follow the reference's cover crop
    cond = pipeline.conditioning(inputs, settings)
    assert isinstance(cond.pose_frames, KeypointPoseFrames) and isinstance(cond.masks, KeypointBranchMasks)
    assert (cond.pose_frames.sequence.width, cond.pose_frames.sequence.height) == (64, 64)
    reported: list[tuple[int, int]] = []
    result = pipeline(inputs, settings, progress=lambda done, total: reported.append((done, total)))
    assert result.frames.shape == (6, 64, 64, 3) and result.latents.shape == (1, 4, 6, 8, 8)
    assert reported[-1] == (reported[-1][1], reported[-1][1]) and reported[-1][1] == 1 + 6  # 1 step x 1 window, 6
    latent_only = pipeline(inputs, settings, output="latent")
    assert latent_only.frames is None and torch.equal(latent_only.latents, result.latents)  # seed from settings


def test_keypoints_follow_the_reference_cover_crop() -> None:
    points = torch.zeros(1, 134, 3)
    points[0, 0] = torch.tensor([256.0, 64.0, 1.0])  # centre of a 512 x 128 canvas
    points[0, 1] = torch.tensor([192.0, 0.0, 1.0])  # left edge of the centred 128 x 128 crop, top
    moved = keypoints_at_output(PoseSequence(points, 512, 128), 64, 64).keypoints
    torch.testing.assert_close(moved[0, 0], torch.tensor([32.0, 32.0, 1.0]))
    torch.testing.assert_close(moved[0, 1], torch.tensor([0.0, 0.0, 1.0]))


def test_disagreeing_frame_counts_a_missing_pose_and_an_unknown_scheduler_are_refused(tiny_net, tiny_vae,
                                                                                      stage2: Path) -> None:
    pipeline = VideoPipeline(tiny_net, tiny_vae)
    settings = VideoSettings(width=64, height=64, steps=1)
    base = _pipeline_inputs(stage2, 6, (64, 64))
    base.image_embeds = torch.zeros(1, tiny_net.config.unet.cross_attention_dim)
    cases = {
        "keypoints.*6 frames.*5": dict(pose_frames=torch.zeros(5, 64, 64, 3)),
        "face_hands_mask.*4 frames.*6": dict(face_hands_mask=torch.zeros(4, 64, 64), lips_mask=torch.zeros(4, 64, 64)),
        "audio_features.*3 frames.*6": dict(audio_features=torch.zeros(3, tiny_net.config.audio_proj.blocks,
                                                                      tiny_net.config.audio_proj.channels)),
    }
    for message, change in cases.items():
        inputs = VideoInputs(**{**vars(base), **change})
        with pytest.raises(InputError, match=message):
            pipeline.conditioning(inputs, settings)
    with pytest.raises(InputError, match="neither keypoints nor pose frames"):
        pipeline.conditioning(VideoInputs(base.reference_image, image_embeds=base.image_embeds), settings)
    with pytest.raises(InputError, match="scheduler"):
        pipeline(base, VideoSettings(width=64, height=64, steps=1, scheduler="euler"))


def test_released_defaults_are_read_by_the_node_and_the_cli(comfy_host) -> None:
    from mmgt_core.cli_generate import build_parser

    sample = comfy_host["classes"]["MMGT_SampleVideo"].INPUT_TYPES()["required"]
    released = {"width": RELEASED.width, "height": RELEASED.height, "seed": RELEASED.seed, "steps": RELEASED.steps,
                "cfg": RELEASED.guidance_scale, "mask_mode": RELEASED.mask_mode,
                "context_frames": RELEASED.context_frames, "context_overlap": RELEASED.context_overlap,
                "context_schedule": RELEASED.context_schedule}  # widget and CLI option names alike
    assert {name: sample[name][1]["default"] for name in released} == released
    weights = tuple(sample[name][1]["default"] for name in ("full_weight", "face_weight", "lips_weight"))
    assert weights == RELEASED.branch_weights
    args = vars(build_parser().parse_args(["--image", "a.png", "--out", "b.mp4"]))
    assert {name: args[name] for name in released} == released
    optional = comfy_host["classes"]["MMGT_SampleVideo"].INPUT_TYPES()["optional"]
    assert optional["keypoints"][0] == "MMGT_KEYPOINTS"
    assert {"pose_frames", "face_hands_mask", "lips_mask"} <= set(optional)


# ----------------------------------------------------------------------------------------------------- bad input


def test_huge_reference_image_is_never_drawn_at_its_own_size(tiny_net, tiny_vae) -> None:
    from mmgt_core.bench_harness import PeakRSS

    side = 4096
    image = np.zeros((side, side, 3), dtype=np.uint8)
    image[side // 4: 3 * side // 4, side // 3: 2 * side // 3] = 200
    inputs = VideoInputs(image, keypoints=moving_pose(50, side, side),
                         image_embeds=torch.zeros(1, tiny_net.config.unet.cross_attention_dim))
    settings = VideoSettings(width=64, height=64, steps=1)
    with PeakRSS() as memory:
        latents = VideoPipeline(tiny_net, tiny_vae)(inputs, settings, output="latent").latents
    assert latents.shape == (1, 4, 50, 8, 8)
    # one 4096^2 RGB frame is 48 MiB; drawing 50 pose frames and masks at that size would take > 3 GiB
    assert memory.increase_mib < 600, f"peak RSS grew by {memory.increase_mib:.0f} MiB"


def test_large_image_decode_warns_with_the_estimate_and_refuses_what_cannot_fit(comfy_host, monkeypatch,
                                                                                caplog) -> None:
    import nodes.stage2 as stage2_nodes

    samples = torch.zeros(15000, 4, 64, 64)  # 10 minutes at 512 x 512: about 44 GiB as one IMAGE batch
    monkeypatch.setattr(stage2_nodes, "available_memory_bytes", lambda: 64 * 2**30)
    with caplog.at_level(logging.WARNING):
        stage2_nodes._check_decode_fits(samples)
    assert "43.9 GiB" in caplog.text and "MMGT Save Video" in caplog.text
    monkeypatch.setattr(stage2_nodes, "available_memory_bytes", lambda: 16 * 2**30)
    with pytest.raises(InputError, match="43.9 GiB.*16.0 GiB"):
        stage2_nodes._check_decode_fits(samples)
    caplog.clear()
    stage2_nodes._check_decode_fits(torch.zeros(250, 4, 64, 64))  # 10 s: no warning
    assert "MMGT Decode Video" not in caplog.text
