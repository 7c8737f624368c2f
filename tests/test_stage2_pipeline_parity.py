"""Full Stage-II sampling against the official ``Pose2VideoPipeline`` run (fixture section 4e).

Checked in the README's four stages: exact initial noise from the same CPU generator; step-0 guided prediction at
~1e-3; later steps from latents rebuilt by DDIM-stepping the *stored* predictions (so float noise amplified by
earlier steps does not leak in); final latents and video at 5e-3. The official run used the closed-loop context
schedule (two windows [0..11] and [8..13, 0..5] for 14 frames), 3 steps, CFG 3.5 and branch weights [1, 1, 2].
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmgt_core.errors import Cancelled
from mmgt_core.video.conditioning import BranchMasks, clip_image_embeds, load_clip_image_encoder, reference_latent
from mmgt_core.video.sampler import (
    SamplingSettings,
    VideoConditioning,
    VideoDenoiser,
    initial_latents,
    sample_latents,
)
from mmgt_core.video.scheduler import ddim_step, inference_timesteps, make_scheduler
from mmgt_core.video.vae_codec import decode_latents

SEED = 1049
STEP0_ATOL = 1e-3  # README 4e: step 0 at about 1e-3 (1 vs 2 threads alone moves the run by 2e-3 after 3 steps)
REBUILT_STEP_ATOL = 2e-3  # measured 9e-4 (1 thread); the thread count alone moves step 0 by 5e-4
FINAL_ATOL = 5e-3  # README 4e: final latents and video loosely, 5e-3


@pytest.fixture(scope="module")
def case(stage2: Path, tiny_net, tiny_vae) -> SimpleNamespace:
    """The tiny models and the official run's inputs, rebuilt with our conditioning code."""
    official = load_file(stage2 / "pipeline_run.safetensors")
    run_info = json.loads((stage2 / "stage2_info.json").read_text())["pipeline"]
    encoder = load_clip_image_encoder(stage2 / "tiny_image_encoder")
    image = Image.open(stage2 / "reference_image.png")
    width, height = run_info["width"], run_info["height"]
    with torch.no_grad():
        audio_tokens = tiny_net.audioproj(official["audio_window"])[0]
    masks = BranchMasks(*([official[f"{branch}_mask_level{level}"] for level in range(4)]
                          for branch in ("full", "face", "lip")))
    cond = VideoConditioning(
        image_embeds=clip_image_embeds(encoder, image),
        reference_latent=reference_latent(tiny_vae, image, width, height),
        pose_frames=torch.from_numpy(np.load(stage2 / "pipeline_pose_frames_512.npz")["pose_rgb"]),
        masks=masks,
        audio_tokens=audio_tokens,
    )
    settings = SamplingSettings(
        width=width, height=height, steps=run_info["steps"], guidance_scale=run_info["guidance_scale"],
        branch_weights=tuple(run_info["motion_scale"]), context_frames=run_info["context_frames"],
        context_overlap=run_info["context_overlap"], context_schedule="closed_loop",
    )
    return SimpleNamespace(official=official, net=tiny_net, vae=tiny_vae, cond=cond, settings=settings)


@pytest.fixture(scope="module")
def uninterrupted(case: SimpleNamespace) -> SimpleNamespace:
    """One full run with the official seed, recording each step's guided prediction."""
    predictions: list[torch.Tensor] = []
    latents = sample_latents(case.net, case.cond, case.settings, torch.Generator().manual_seed(SEED),
                             on_step=lambda _index, _t, guided: predictions.append(guided.clone()))
    return SimpleNamespace(latents=latents, predictions=predictions)


def test_inputs_match_official(case: SimpleNamespace) -> None:
    torch.testing.assert_close(case.cond.audio_tokens, case.official["audio_tensor"][0], atol=1e-4, rtol=0)
    torch.testing.assert_close(case.cond.image_embeds, case.official["clip_image_embeds"], atol=1e-4, rtol=0)
    noise = initial_latents(torch.Generator().manual_seed(SEED), 14, case.settings.width, case.settings.height)
    assert torch.equal(noise, case.official["init_latents"])  # bit-exact with the same CPU generator


def test_step0_guided_prediction_matches_official(case: SimpleNamespace, uninterrupted: SimpleNamespace) -> None:
    assert len(uninterrupted.predictions) == 3
    torch.testing.assert_close(uninterrupted.predictions[0], case.official["guided_noise_pred_per_step"][0],
                               atol=STEP0_ATOL, rtol=0)


def test_later_steps_from_rebuilt_latents_match_official(case: SimpleNamespace) -> None:
    stored = case.official["guided_noise_pred_per_step"]
    scheduler = make_scheduler()
    timesteps = inference_timesteps(scheduler, case.settings.steps)
    denoiser = VideoDenoiser(case.net, case.cond, case.settings)
    latents = case.official["init_latents"].clone()
    for step in range(1, len(timesteps)):
        latents = ddim_step(scheduler, stored[step - 1], timesteps[step - 1], latents)
        prediction = denoiser.predict(latents, timesteps[step])
        torch.testing.assert_close(prediction, stored[step], atol=REBUILT_STEP_ATOL, rtol=0,
                                   msg=lambda text, step=step: f"step {step}: {text}")


def test_final_latents_and_video_match_official(case: SimpleNamespace, uninterrupted: SimpleNamespace) -> None:
    torch.testing.assert_close(uninterrupted.latents, case.official["final_latents"], atol=FINAL_ATOL, rtol=0)
    video = decode_latents(case.vae, uninterrupted.latents)  # (T, H, W, 3)
    official_video = case.official["video"][0].permute(1, 2, 3, 0)
    assert video.shape == official_video.shape == (14, 64, 64, 3)
    torch.testing.assert_close(video, official_video, atol=FINAL_ATOL, rtol=0)


def test_cancel_mid_sampling_then_rerun_is_identical(case: SimpleNamespace, uninterrupted: SimpleNamespace) -> None:
    checks = {"count": 0}

    def cancel_in_second_step() -> None:
        checks["count"] += 1
        if checks["count"] == 4:  # one check before the run, then one per window: this is step 1, window 0
            raise Cancelled("user pressed cancel")

    with pytest.raises(Cancelled):
        sample_latents(case.net, case.cond, case.settings, torch.Generator().manual_seed(SEED),
                       check_cancel=cancel_in_second_step)
    assert checks["count"] == 4
    again = sample_latents(case.net, case.cond, case.settings, torch.Generator().manual_seed(SEED))
    assert torch.equal(again, uninterrupted.latents)
