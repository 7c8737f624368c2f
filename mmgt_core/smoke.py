"""Smoke steps for ``doctor``: each runs a real code path on tiny random data and returns a one-line summary."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .keypoints import PoseSequence


def _synthetic_pose(frames: int = 25, width: int = 256, height: int = 256) -> PoseSequence:
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(134, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6]) + \
        torch.tensor([width * 0.2, height * 0.2])
    time_axis = torch.arange(frames).float()[:, None, None]
    xy = base[None] + 3 * torch.sin(time_axis / 4 + base[None] / 50)
    keypoints = torch.cat([xy, torch.ones(frames, 134, 1)], dim=-1)
    return PoseSequence(keypoints, width, height)


def pose_and_masks() -> str:
    from .masks import motion_mask_pyramids, motion_masks
    from .render import render_pose_video

    sequence = _synthetic_pose()
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


def steps() -> list[tuple[str, Callable[[], str]]]:
    """Every smoke step this build has, in pipeline order."""
    found: list[tuple[str, Callable[[], str]]] = [("weights: safe save/load", weights_round_trip),
                                                   ("pose: drawing, masks, pyramid", pose_and_masks)]
    found.extend(_optional_steps())
    return found


def _optional_steps() -> list[tuple[str, Callable[[], str]]]:
    """Stage smoke steps registered by stage modules (each module exposes ``smoke_steps()``)."""
    import importlib

    extra: list[tuple[str, Callable[[], str]]] = []
    for module_name in ("smga.smoke", "video.smoke"):
        try:
            module = importlib.import_module(f".{module_name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(__package__):
                continue
            raise
        extra.extend(module.smoke_steps())
    return extra

