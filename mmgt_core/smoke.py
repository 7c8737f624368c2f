"""Smoke steps for ``doctor``: each runs a real code path on tiny random data and returns a one-line summary."""

from __future__ import annotations

from collections.abc import Callable

import torch


def pose_and_masks() -> str:
    from .masks import motion_mask_pyramids, motion_masks
    from .render import render_pose_video
    from .tiny_models import moving_pose

    sequence = moving_pose(25, 256, 256)
    frames = render_pose_video(sequence)
    masks = motion_masks(sequence)
    pyramids = motion_mask_pyramids(masks)
    return (f"{frames.shape[0]} pose frames {frames.shape[2]}×{frames.shape[1]}, masks {tuple(masks.face.shape)}, "
            f"pyramid levels {[tuple(p.shape[1:]) for p in pyramids.face_hands]}")


def weights_round_trip() -> str:
    import tempfile
    from pathlib import Path

    from .weights import load_weights, save_weights

    with tempfile.TemporaryDirectory() as folder:
        path = save_weights({"w": torch.randn(4, 4)}, Path(folder) / "w.safetensors", "smoke", {}, "doctor")
        state, meta = load_weights(path)
    return f"safetensors write/read ok ({len(state)} tensor, component={meta['mmgt_component']})"


def end_to_end() -> str:
    """Write tiny random models in the real formats, then run `generate` on 2 s of synthetic speech."""
    import tempfile
    from pathlib import Path

    import av
    import numpy as np
    from PIL import Image
    from scipy.io import wavfile

    from .cli_generate import build_parser, run
    from .constants import ENCODER_SAMPLE_RATE
    from .tiny_models import synthetic_speech, write_tiny_model_set

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        models = write_tiny_model_set(root / "models")
        wavfile.write(root / "speech.wav", ENCODER_SAMPLE_RATE, synthetic_speech(2.0))
        Image.fromarray((np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)).save(root / "me.png")
        args = build_parser().parse_args([
            "--image", str(root / "me.png"), "--audio", str(root / "speech.wav"), "--models", str(models),
            "--reference-pose", str(models / "reference_pose.safetensors"), "--out", str(root / "out.mp4"),
            "--width", "128", "--height", "128", "--steps", "2", "--smga-steps", "2", "--dtype", "fp32"])
        out = run(args)
        with av.open(str(out)) as container:
            frames = sum(1 for _ in container.decode(video=0))
            has_audio = len(container.streams.audio) == 1
    if frames != 50 or not has_audio:
        raise RuntimeError(f"expected 50 frames with audio, got {frames} frames, audio={has_audio}")
    return "audio→pose→video on tiny random models: 50 frames 128×128 mp4 with audio"


def steps() -> list[tuple[str, Callable[[], str]]]:
    """Every smoke step, in pipeline order."""
    return [("weights: safe save/load", weights_round_trip),
            ("pose: drawing, masks, pyramid", pose_and_masks),
            ("pipeline: generate end to end", end_to_end)]
