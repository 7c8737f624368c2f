"""Length benchmark of the audio -> video node chain: memory must not grow with the length of the speech.

Run: ``python -m mmgt_core bench length [--seconds 10 60 600] [--size 128] [--steps 1] [--dtype bf16]``.

It writes the tiny random-weight models (:mod:`mmgt_core.tiny_models`) into a temporary models folder and runs the
pack's own node classes wired as ``workflows/mmgt_audio_to_video.json`` wires them: Load WavLM -> Stage-I Audio
Features -> Load SMGA -> Audio to Pose -> Load wav2vec2 -> Stage-II Audio Features -> Load Video Net / VAE / Image
Encoder -> Sample Video (keypoints in, pose frames and masks drawn per window) -> MMGT Save Video (the streamed mp4,
deleted after each run). One stand-in, independent of length: the reference pose is the synthetic one (no DWPose
files are needed).

For every length it prints the peak RSS above the RSS with the models loaded (a thread polls it every 20 ms), the
same per node (the profile that shows which stage holds memory), and the wall time per output frame; at the end
the peak ratio of the longest to the shortest run and the spread of the time per frame (targets: <= 1.3x and
within 20 %). The speech is synthetic (a voiced tone with a syllable-rate envelope). This is a development
tool: it imports the pack's ``nodes`` package (which the library itself never imports).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from mmgt_core.bench_harness import PeakRSS, return_freed_memory
from mmgt_core.constants import ENCODER_SAMPLE_RATE, SIZE_MULTIPLE
from mmgt_core.tiny_models import synthetic_reference_pose, synthetic_speech, write_tiny_model_set

DEFAULT_SECONDS = (10.0, 60.0, 600.0)
MEMORY_TARGET = 1.3
TIME_SPREAD_TARGET = 0.2


def speech_audio(seconds: float, rate: int = ENCODER_SAMPLE_RATE) -> dict[str, Any]:
    """The synthetic speech as a ComfyUI AUDIO dict."""
    return {"waveform": torch.from_numpy(synthetic_speech(seconds, rate))[None, None], "sample_rate": rate}


def _node_classes() -> dict[str, type]:
    """The pack's node classes, imported as ComfyUI would (the pack root on sys.path)."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.append(root)
    import nodes  # the pack's adapters; only this development command imports them from the core folder

    return nodes.NODE_CLASS_MAPPINGS


def _call(classes: dict[str, type], name: str, **inputs: Any) -> tuple[Any, ...]:
    cls = classes[name]
    return getattr(cls(), cls.FUNCTION)(**inputs)


class AudioToVideoChain:
    """The shipped audio -> video workflow's nodes with the models loaded once."""

    def __init__(self, models: Path, size: int, steps: int, dtype: str) -> None:
        os.environ["MMGT_MODELS_DIR"] = str(models)
        os.environ["MMGT_OUTPUT_DIR"] = str(models / "output")  # the streamed mp4s stay in the bench's temp folder
        self.classes = _node_classes()
        self.size, self.steps = size, steps
        call = self._call
        self.wavlm = call("MMGT_LoadWavLM", model="wavlm-large", dtype=dtype)[0]
        self.smga = call("MMGT_LoadSMGA", checkpoint="smga.safetensors", dtype=dtype)[0]
        self.wav2vec2 = call("MMGT_LoadWav2Vec2", folder="wav2vec2-base-960h")[0]
        self.video_net = call("MMGT_LoadVideoNet", checkpoint="mmgt_video.safetensors", dtype=dtype)[0]
        self.vae = call("MMGT_LoadVAE", folder="sd-vae-ft-mse", dtype="fp32")[0]
        self.image_encoder = call("MMGT_LoadImageEncoder", folder="image_encoder", dtype="fp32")[0]
        generator = torch.Generator().manual_seed(0)
        self.reference_image = torch.rand(1, size, size, 3, generator=generator)
        self.reference_pose = synthetic_reference_pose(size, size)

    def _call(self, name: str, **inputs: Any) -> tuple[Any, ...]:
        return _call(self.classes, name, **inputs)

    def run(self, audio: dict[str, Any]) -> int:
        """The whole chain for one clip; returns the number of video frames written.

        ``self.stage_peaks`` gets each node's peak RSS (MiB) above the RSS when the run started, ``self.stage_own``
        above the RSS when the node started (what the node itself adds; freed memory often stays in the RSS).
        """
        self.stage_peaks: dict[str, float] = {}
        self.stage_own: dict[str, float] = {}
        self._start_rss = _current_rss()
        stage = self._stage
        stage1 = stage("Stage-I Audio Features", "MMGT_Stage1AudioFeatures", audio=audio, wavlm=self.wavlm)[0]
        keypoints = stage("Audio to Pose", "MMGT_AudioToPose", smga=self.smga, audio_features=stage1,
                          reference_pose=self.reference_pose, seed=42, steps=self.steps, guidance=2.0, overlap=8,
                          best_of=1, smoothing="none")[0]
        del stage1
        stage2 = stage("Stage-II Audio Features", "MMGT_Stage2AudioFeatures", audio=audio, wav2vec2=self.wav2vec2)[0]
        latents = stage("Sample Video", "MMGT_SampleVideo", video_net=self.video_net,
                        reference_image=self.reference_image, width=self.size, height=self.size, seed=42,
                        steps=self.steps, cfg=3.5, full_weight=1.0, face_weight=1.0, lips_weight=2.0,
                        mask_mode="released", context_frames=12, context_overlap=4, context_schedule="open",
                        keypoints=keypoints, audio_features=stage2, image_encoder=self.image_encoder,
                        mmgt_vae=self.vae)[0]
        del stage2, keypoints
        saved = stage("streamed decode", "MMGT_SaveVideo", latents=latents, filename_prefix="bench/length",
                      chunk_frames=16, mmgt_vae=self.vae)["result"][0]
        Path(saved.get_stream_source()).unlink()
        return latents.frame_count

    def _stage(self, label: str, name: str, **inputs: Any) -> tuple[Any, ...]:
        with PeakRSS() as memory:
            outputs = self._call(name, **inputs)
        self.stage_peaks[label] = (memory.peak - self._start_rss) / 2**20
        self.stage_own[label] = memory.increase_mib
        return outputs


def _current_rss() -> int:
    with PeakRSS() as memory:
        pass
    return memory.baseline


def run_length_bench(seconds: Sequence[float] = DEFAULT_SECONDS, size: int = 128, steps: int = 1,
                     dtype: str = "bf16", verbose: bool = True) -> dict[str, Any]:
    """Run the chain on each length; returns {"runs": [...], "peak_ratio", "time_per_frame_spread"} (and, with three
    or more lengths, "peak_ratio_past_windows": the longest over the second longest)."""
    log = print if verbose else (lambda *_args, **_kw: None)
    results: dict[str, Any] = {"size": size, "steps": steps, "dtype": dtype, "threads": torch.get_num_threads(),
                               "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        models = write_tiny_model_set(Path(folder) / "mmgt")
        chain = AudioToVideoChain(models, size, steps, dtype)
        chain.run(speech_audio(1.0))  # warm-up: first-call allocations are not the length's cost
        for length in seconds:
            audio = speech_audio(length)
            return_freed_memory()  # each length starts from the same clean heap, not from what a run before freed
            started = time.perf_counter()
            with PeakRSS() as memory:
                frames = chain.run(audio)
            elapsed = time.perf_counter() - started
            run = {"seconds": length, "frames": frames, "peak_rss_above_models_mib": memory.increase_mib,
                   "rss_mib": memory.peak / 2**20, "s_per_frame": elapsed / frames, "total_s": elapsed,
                   "stage_peaks_mib": dict(chain.stage_peaks), "stage_own_mib": dict(chain.stage_own)}
            results["runs"].append(run)
            log(f"[length bench] {length:g} s of speech -> {frames} frames at {size}x{size}, {steps} step(s), "
                f"{dtype}: peak RSS +{memory.increase_mib:.0f} MiB above the loaded models, "
                f"{run['s_per_frame'] * 1000:.1f} ms per frame ({elapsed:.0f} s); per node, peak above the run's "
                "start / above the node's start: " + ", ".join(
                    f"{name} +{mib:.0f}/+{chain.stage_own[name]:.0f}" for name, mib in chain.stage_peaks.items())
                + " MiB")
            del audio
    runs = results["runs"]
    if len(runs) >= 2:
        results["peak_ratio"] = runs[-1]["peak_rss_above_models_mib"] / max(runs[0]["peak_rss_above_models_mib"], 1.0)
        per_frame = [run["s_per_frame"] for run in runs]
        results["time_per_frame_spread"] = max(per_frame) / min(per_frame) - 1
        log(f"[length bench] peak {runs[-1]['seconds']:g} s / {runs[0]['seconds']:g} s = {results['peak_ratio']:.2f}x "
            f"(target <= {MEMORY_TARGET}x); time per frame spread {results['time_per_frame_spread'] * 100:.0f} % "
            f"(target <= {TIME_SPREAD_TARGET * 100:.0f} %)")
    if len(runs) >= 3:  # both past WavLM's 30 s attention window, a working set a 10 s clip does not fill
        results["peak_ratio_past_windows"] = (runs[-1]["peak_rss_above_models_mib"]
                                              / max(runs[-2]["peak_rss_above_models_mib"], 1.0))
        log(f"[length bench] peak {runs[-1]['seconds']:g} s / {runs[-2]['seconds']:g} s = "
            f"{results['peak_ratio_past_windows']:.2f}x (growth once the speech fills the encoders' windows)")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmgt_core bench length", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=list(DEFAULT_SECONDS),
                        help="speech lengths to render (default 10 60 600)")
    parser.add_argument("--size", type=int, default=128, help=f"output width and height (multiple of {SIZE_MULTIPLE})")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps (Stage I and Stage II)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = run_length_bench(args.seconds, args.size, args.steps, args.dtype)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
