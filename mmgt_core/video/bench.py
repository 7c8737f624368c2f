"""Speed and memory benchmark of Stage-II video generation with the real-size network (random weights).

Run: ``python -m mmgt_core bench video [--frames 24 96] [--steps 1] [--size 256 256] [--no-fp32]``.

What it measures, all in one process on the same machine and dtype (bf16 by default, never fp16 on CPU):

* ``unet_s_per_frame_step``: seconds of the denoising loop (all context windows, CFG batch [uncond; cond], pose
  guider per window, blending, DDIM) per output frame per step, at the default settings (12-frame windows,
  overlap 4, open schedule);
* ``ratio_to_sd15``: that divided by one plain diffusers SD1.5 ``UNet2DConditionModel`` forward (batch 1, same
  latent size, 77 context tokens, same dtype) - i.e. the cost of one frame-step in "SD1.5 image forwards";
* the split of a whole video across audio (wav2vec2-base-size features), conditioning (AudioProj, reference
  latent), reference pass, UNet loop (pose frames and masks drawn per window inside it) and VAE decode, all
  through the one Stage-II pipeline object (the loop at ``steps`` steps; ``projected_30_steps_s`` scales it to the
  released 30);
* peak memory: the process RSS peak above the loaded-model baseline while generating each length (a polling
  thread reads the RSS every 20 ms), and the 96/24 ratio;
* bf16 vs fp32: one denoising-window forward (batch 2 x 12 frames) in both dtypes on the same weights.

Building the real-size nets takes ~2.3 G parameters (about 9 GB while in fp32, 4.6 GB in bf16); ``--tiny``
runs the same code on a toy configuration to check the plumbing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
from torch import nn

from mmgt_core.bench_harness import PeakRSS, bench_parser, median_time, timed, write_results
from mmgt_core.constants import ENCODER_SAMPLE_RATE, LATENT_STRIDE, VIDEO_FPS
from mmgt_core.pipeline import VideoInputs, VideoPipeline
from mmgt_core.tiny_models import (
    moving_pose,
    random_diffusers_model,
    random_vae,
    random_video_net,
    random_wav2vec,
    synthetic_speech,
    tiny_video_net_config,
)
from mmgt_core.video.conditioning import branch_masks_from_regions
from mmgt_core.video.config import UNetConfig, VideoNetConfig
from mmgt_core.video.context import window_count
from mmgt_core.video.net import VideoNet
from mmgt_core.video.sampler import VideoConditioning, reference_for_video
from mmgt_core.video.scheduler import DEFAULT_STEPS
from mmgt_core.video.settings import VideoSettings

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SD15_TEXT_TOKENS = 77
WEIGHT_SEED = 2024


# ---------------------------------------------------------------------------------------------------------------
# Random real-size models (the recipe and the toy sizes are mmgt_core.tiny_models')


def random_sd15_unet(unet: UNetConfig, dtype: torch.dtype) -> nn.Module:
    """A plain diffusers ``UNet2DConditionModel`` of the same size (the baseline)."""
    from diffusers import UNet2DConditionModel

    return random_diffusers_model(UNet2DConditionModel, dtype, WEIGHT_SEED, **unet.diffusers_config())


def _generate(net: VideoNet, vae: nn.Module, wav2vec: nn.Module, frames: int, settings: VideoSettings,
              dtype: torch.dtype) -> dict[str, float]:
    """One whole video through :class:`~mmgt_core.pipeline.VideoPipeline`, timed stage by stage, from a moving
    synthetic pose (keypoints), a random reference image and speech-like audio of the same length.

    ``unet_loop_s`` is the pipeline's sampling time less one separately timed ReferenceNet pass (``reference_s``);
    pose frames and masks are drawn inside the loop, window by window, so they count in the loop.
    """
    from mmgt_core.audio.wav2vec import wav2vec2_features

    image = (torch.rand(settings.height, settings.width, 3, generator=torch.Generator().manual_seed(0)) * 255)
    wave = torch.from_numpy(synthetic_speech(frames / VIDEO_FPS))
    pipeline = VideoPipeline(net, vae)
    split: dict[str, float] = {}
    split["audio_s"], features = timed(lambda: wav2vec2_features(wav2vec, wave, ENCODER_SAMPLE_RATE)[0])
    embeds = torch.randn(1, net.config.unet.cross_attention_dim)
    video_inputs = VideoInputs(image.to(torch.uint8), keypoints=moving_pose(frames, settings.width, settings.height),
                               audio_features=features, image_embeds=embeds)
    split["conditioning_s"], cond = timed(lambda: pipeline.conditioning(video_inputs, settings))
    split["reference_s"], _ = timed(lambda: reference_for_video(net, cond))
    sample_s, latents = timed(lambda: pipeline.sample(cond, settings, torch.Generator().manual_seed(0)))
    split["unet_loop_s"] = max(sample_s - split["reference_s"], 0.0)
    split["windows_per_step"] = window_count(frames, settings.context_frames, settings.context_overlap,
                                             settings.context_schedule)
    split["decode_s"], _ = timed(lambda: pipeline.decode(latents, settings))
    return split


def _window_forward(net: VideoNet, settings: VideoSettings, dtype: torch.dtype) -> Callable[[], Any]:
    """One CFG-batch forward of a full context window (the unit of the sampling loop)."""
    frames, (h, w) = settings.context_frames, (settings.height // LATENT_STRIDE, settings.width // LATENT_STRIDE)
    unet = net.denoising_unet
    audio = net.config.audio.audio_attention_dim
    embed_dim = net.config.unet.cross_attention_dim
    masks = branch_masks_from_regions(torch.zeros(frames, settings.height, settings.width),
                                      torch.zeros(frames, settings.height, settings.width), None,
                                      settings.width, settings.height)
    cond = VideoConditioning(torch.randn(1, embed_dim), torch.randn(1, 4, h, w), torch.zeros(frames, 8, 8, 3,
                             dtype=torch.uint8), masks)
    reference = reference_for_video(net, cond)
    sample = torch.randn(2, 4, frames, h, w, dtype=dtype)
    context = torch.randn(2, 1, embed_dim, dtype=dtype)
    tokens = torch.randn(2, frames, net.config.audio_proj.context_tokens, audio, dtype=dtype)
    pose = torch.randn(1, unet.conv_in.out_channels, frames, h, w, dtype=dtype)

    def run() -> None:
        with torch.no_grad():
            unet(sample, 500, context, audio_tokens=tokens, pose_features=pose, masks=masks,
                 reference=reference, reference_rows=(False, True))

    return run


def _sd15_forward_seconds(unet_config: UNetConfig, settings: VideoSettings, dtype: torch.dtype,
                          repeats: int) -> float:
    baseline = random_sd15_unet(unet_config, dtype)
    sample = torch.randn(1, 4, settings.height // LATENT_STRIDE, settings.width // LATENT_STRIDE, dtype=dtype)
    context = torch.randn(1, SD15_TEXT_TOKENS, unet_config.cross_attention_dim, dtype=dtype)

    def run() -> None:
        with torch.no_grad():
            baseline(sample, 500, encoder_hidden_states=context, return_dict=False)

    return median_time(run, repeats)  # the baseline model is freed when this returns


def run_video_bench(
    frames: Sequence[int] = (24, 96),
    steps: int = 1,
    width: int = 256,
    height: int = 256,
    dtype: str = "bf16",
    compare_fp32: bool = True,
    repeats: int = 3,
    threads: Optional[int] = None,
    tiny: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and return a JSON-able dict; prints a summary if verbose."""
    if threads is not None:
        torch.set_num_threads(threads)
    log = print if verbose else (lambda *_args, **_kw: None)
    config = tiny_video_net_config() if tiny else VideoNetConfig.sd15()
    settings = VideoSettings(width=width, height=height, steps=steps)
    target = DTYPES[dtype]
    results: dict[str, Any] = {"size": [width, height], "steps": steps, "dtype": dtype, "tiny": tiny,
                               "threads": torch.get_num_threads(), "settings": vars(settings).copy()}
    log(f"[video bench] building the {'toy' if tiny else 'real-size'} network ...")
    build_dtype = torch.float32 if compare_fp32 and target != torch.float32 else target
    build_s, net = timed(lambda: random_video_net(config, build_dtype, WEIGHT_SEED))
    results["build_s"] = build_s
    results["parameters"] = sum(p.numel() for p in net.parameters())
    if build_dtype != target:
        results["window_forward_fp32_s"] = median_time(_window_forward(net, settings, torch.float32),
                                                       max(1, repeats - 1))
        net = net.to(target)
    results[f"window_forward_{dtype}_s"] = median_time(_window_forward(net, settings, target), repeats)
    if "window_forward_fp32_s" in results:
        results["bf16_speedup"] = results["window_forward_fp32_s"] / results[f"window_forward_{dtype}_s"]
        log(f"[video bench] one window forward: fp32 {results['window_forward_fp32_s']:.2f}s, {dtype} "
            f"{results[f'window_forward_{dtype}_s']:.2f}s -> {dtype} is {results['bf16_speedup']:.2f}x faster")
    results["sd15_forward_s"] = _sd15_forward_seconds(config.unet, settings, target, repeats)
    log(f"[video bench] plain SD1.5 UNet forward (batch 1, {height // LATENT_STRIDE}x{width // LATENT_STRIDE} latents, "
        f"{dtype}): {results['sd15_forward_s']:.3f}s")
    vae, wav2vec = random_vae(tiny, target, WEIGHT_SEED), random_wav2vec(tiny, WEIGHT_SEED)
    results["runs"] = [_length_run(net, vae, wav2vec, count, settings, target, results["sd15_forward_s"], log)
                       for count in frames]
    if len(results["runs"]) >= 2:
        first, last = results["runs"][0], results["runs"][-1]
        results["peak_memory_ratio"] = last["peak_rss_increase_mib"] / max(first["peak_rss_increase_mib"], 1e-6)
        log(f"[video bench] peak memory {last['frames']} vs {first['frames']} frames: "
            f"{results['peak_memory_ratio']:.2f}x")
    return results


def _length_run(net: VideoNet, vae: nn.Module, wav2vec: nn.Module, frames: int, settings: VideoSettings,
                dtype: torch.dtype, sd15_s: float, log: Callable[..., None]) -> dict[str, Any]:
    with PeakRSS() as memory:
        split = _generate(net, vae, wav2vec, frames, settings, dtype)
    per_frame_step = split["unet_loop_s"] / (frames * settings.steps)
    loop_30 = split["unet_loop_s"] / settings.steps * DEFAULT_STEPS
    once = split["audio_s"] + split["conditioning_s"] + split["reference_s"] + split["decode_s"]
    run = {"frames": frames, **split, "unet_s_per_frame_step": per_frame_step,
           "ratio_to_sd15": per_frame_step / sd15_s, "projected_30_steps_s": loop_30 + once,
           "peak_rss_increase_mib": memory.increase_mib, "peak_rss_mib": memory.peak / 2**20}
    log(f"[video bench] {frames} frames, {settings.steps} step(s), {split['windows_per_step']} windows/step: "
        f"{per_frame_step:.3f} s per frame-step = {run['ratio_to_sd15']:.2f} SD1.5 forwards; split: audio "
        f"{split['audio_s']:.1f}s, conditioning {split['conditioning_s']:.1f}s, reference {split['reference_s']:.1f}s, "
        f"UNet loop (with per-window pose and masks) {split['unet_loop_s']:.1f}s, VAE decode "
        f"{split['decode_s']:.1f}s; 30 steps would take "
        f"{run['projected_30_steps_s'] / 60:.1f} min; peak RSS +{memory.increase_mib:.0f} MiB")
    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = bench_parser("python -m mmgt_core bench video", __doc__)
    parser.add_argument("--frames", type=int, nargs="+", default=[24, 96], help="video lengths to generate")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps per video (30 = released)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("W", "H"))
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--no-fp32", action="store_true", help="skip the fp32 window comparison (saves ~5 GB)")
    parser.add_argument("--tiny", action="store_true", help="toy network: checks the benchmark code quickly")
    args = parser.parse_args(argv)
    results = run_video_bench(args.frames, args.steps, args.size[0], args.size[1], args.dtype, not args.no_fp32,
                              args.repeats, args.threads, args.tiny)
    return write_results(results, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
