"""Audio → Pose holds no full-length temporaries: beyond its (T, 134, 3) keypoints the node makes one (T, 402)
tensor (the SMGA output it converts), whatever the length, smoothing or best_of.

Measured with :class:`~tensor_meter.ReturnedTensors` on 2 minutes of tiny-model generation (3000 frames, where a
full-length tensor outweighs every window-sized one). Before the conversion worked in place the node made seven
full-length storages (denormalize's four steps, the cover-map copy, isfinite's abs copy) plus full-length masks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensor_meter import ReturnedTensors

from mmgt_core.keypoints import (
    _NORM_HIGH,
    _NORM_LOW,
    FEATURE_DIM,
    NUM_KEYPOINTS,
    OFFICIAL_CANVAS,
    PoseSequence,
    from_official_feature,
    mask_leg_normalized,
    to_official_feature,
)
from mmgt_core.smga.generate import generate_pose_sequence
from mmgt_core.tiny_models import random_smga, synthetic_reference_pose, tiny_smga_config, write_tiny_smga

FRAMES = 3000  # 2 minutes at 25 fps: several blocks of keypoints.FINITE_CHECK_ELEMENTS values
FULL_LENGTH_BYTES = FRAMES * FEATURE_DIM * 4 // 2  # half a (T, 402) float32 tensor: only full-length ones reach it
SEED = 42


class HeldFullLengthTensors(ReturnedTensors):
    """ReturnedTensors that keeps every full-length result alive, so that no freed storage's address is reused
    and each distinct storage counted is one allocation."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().nbytes() >= FULL_LENGTH_BYTES:
                self.held.append(tensor)
        return out

    def full_length_storages(self) -> int:
        """How many distinct storages of at least half a (T, 402) float32 tensor the operations returned."""
        return len({tensor.storage for tensor in self.tensors if tensor.nbytes >= FULL_LENGTH_BYTES})


def straightforward_keypoints(feature: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The conversion as it was written before it worked in place: denormalise, then the cover rule's inverse."""
    pixels = ((feature.float() + 1) / 2 * (_NORM_HIGH - _NORM_LOW) + _NORM_LOW).reshape(-1, NUM_KEYPOINTS, 3)
    out = pixels.clone()
    if (width, height) != (OFFICIAL_CANVAS, OFFICIAL_CANVAS):
        scale = OFFICIAL_CANVAS / min(width, height)
        for axis, size in ((0, width), (1, height)):
            out[..., axis] = (pixels[..., axis] - (OFFICIAL_CANVAS - size * scale) / 2) / scale
    return out


def audio_features() -> torch.Tensor:
    return torch.randn(FRAMES, tiny_smga_config().cond_feature_dim, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("smoothing", "best_of", "width", "height"),
                         [("none", 1, 320, 200), ("official", 2, OFFICIAL_CANVAS, OFFICIAL_CANVAS)])
def test_audio_to_pose_node_makes_one_full_length_tensor_besides_its_keypoints(comfy_host, smoothing, best_of,
                                                                                width, height):
    from nodes.stage1 import Stage1Audio

    classes = comfy_host["classes"]
    write_tiny_smga(Path(comfy_host["folder_paths"].get_folder_paths("mmgt")[0]) / "smga_tiny.safetensors")
    smga = classes["MMGT_LoadSMGA"]().load("smga_tiny.safetensors", "bf16")[0]
    features = audio_features()
    reference = synthetic_reference_pose(width, height)
    with HeldFullLengthTensors() as meter:
        keypoints = classes["MMGT_AudioToPose"]().generate(smga, Stage1Audio(features), reference, seed=SEED, steps=1,
                                                           guidance=2.0, overlap=8, best_of=best_of,
                                                           smoothing=smoothing)[0]
    assert keypoints.keypoints.shape == (FRAMES, NUM_KEYPOINTS, 3)
    assert meter.full_length_storages() <= 2, "the keypoints and the SMGA output, nothing more"

    reference_feature = mask_leg_normalized(to_official_feature(reference)[:1])[0]
    poses = generate_pose_sequence(smga.module, features, reference_feature, torch.Generator().manual_seed(SEED),
                                   steps=1, best_of=best_of, smooth=smoothing, dtype=smga.dtype)
    assert torch.equal(keypoints.keypoints, straightforward_keypoints(poses, width, height))


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (OFFICIAL_CANVAS, OFFICIAL_CANVAS)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_from_official_feature_makes_only_its_keypoints(width, height, dtype):
    feature = (torch.rand(FRAMES, FEATURE_DIM, generator=torch.Generator().manual_seed(2)) * 2.4 - 1.2).to(dtype)
    before = feature.clone()
    with HeldFullLengthTensors() as meter:
        sequence = from_official_feature(feature, width, height)
    assert isinstance(sequence, PoseSequence) and meter.full_length_storages() == 1
    assert torch.equal(feature, before), "the input is left as it was"
    assert torch.equal(sequence.keypoints, straightforward_keypoints(feature, width, height))


def test_generate_pose_sequence_makes_only_its_output():
    model = random_smga(tiny_smga_config(), seed=5)
    reference = to_official_feature(synthetic_reference_pose(256, 256))[0]
    with HeldFullLengthTensors() as meter:
        poses = generate_pose_sequence(model, audio_features().bfloat16(), reference, torch.Generator().manual_seed(0),
                                       steps=1, smooth="official", dtype=torch.bfloat16)
    assert poses.shape == (FRAMES, FEATURE_DIM) and meter.full_length_storages() == 1
