"""Any-length SMGA generation on the tiny random model: shapes, determinism, seams, progress, bad input."""

from __future__ import annotations

import pytest
import torch

from mmgt_core.errors import Cancelled, InputError
from mmgt_core.smga.bench import run_smga_bench
from mmgt_core.smga.generate import generate_pose_sequence, plan_windows, total_diffusion_steps
from mmgt_core.smga.model import TINY_TEST_CONFIG, GestureDecoder
from mmgt_core.tiny_models import random_smga

STEPS = 10  # fewer than the official 50: these tests check plumbing, the parity tests check numbers


@pytest.fixture(scope="module")
def model() -> GestureDecoder:
    return random_smga(TINY_TEST_CONFIG, seed=1001)


FEATURE_DIM = TINY_TEST_CONFIG.cond_feature_dim


def features(frames: int, seed: int = 0) -> torch.Tensor:
    return 0.5 * torch.randn(frames, FEATURE_DIM, generator=torch.Generator().manual_seed(seed))


REFERENCE = -0.3 + 0.1 * torch.randn(402, generator=torch.Generator().manual_seed(7))


def generate(model: GestureDecoder, frames: int, seed: int, **kwargs) -> torch.Tensor:
    kwargs.setdefault("steps", STEPS)
    return generate_pose_sequence(model, features(frames), REFERENCE, torch.Generator().manual_seed(seed), **kwargs)


@pytest.fixture(scope="module")
def twenty_seconds(model: GestureDecoder) -> torch.Tensor:
    return generate(model, 500, seed=3)


def test_500_frames_start_at_the_reference_and_depend_only_on_the_seed(model: GestureDecoder,
                                                                        twenty_seconds: torch.Tensor) -> None:
    assert twenty_seconds.shape == (500, 402)
    assert torch.isfinite(twenty_seconds).all()
    assert torch.equal(twenty_seconds[0], REFERENCE)  # official assembly: frame 0 is the reference pose
    assert torch.equal(generate(model, 500, seed=3), twenty_seconds)
    assert not torch.allclose(generate(model, 500, seed=4), twenty_seconds)


def test_no_seam_at_window_boundaries(twenty_seconds: torch.Tensor) -> None:
    jumps = (twenty_seconds[1:] - twenty_seconds[:-1]).norm(dim=1)  # jumps[i]: frame i -> i+1
    seams = [plan.first_output + plan.overlap - 1 for plan in plan_windows(500, 80, 8)[1:]]
    inside = torch.ones_like(jumps, dtype=torch.bool)
    inside[seams] = False
    inside[0] = False  # reference pose -> first generated frame (official assembly, untrained model)
    assert len(seams) == 6
    assert jumps[seams].mean() <= jumps[inside].mean() + 2 * jumps[inside].std()
    assert jumps[seams].max() <= jumps[inside].max()


def test_windows_cover_every_frame() -> None:
    for total in (1, 2, 80, 81, 150, 500, 15000):
        plans = plan_windows(total, 80, 8)
        assert plans[0].audio_start == 0 and plans[-1].audio_start + 80 >= total - 1
        for before, after in zip(plans, plans[1:]):
            assert after.first_output + after.overlap - 1 == before.audio_start + 80  # overlaps exactly 8


@pytest.mark.parametrize("frames", [1, 37, 81])
def test_short_and_odd_lengths_keep_their_length_and_start_at_the_reference(model: GestureDecoder, frames: int) -> None:
    poses = generate(model, frames, seed=1, steps=2)
    assert poses.shape == (frames, 402) and torch.equal(poses[0], REFERENCE)


def test_best_of_with_official_smoothing_is_deterministic(model: GestureDecoder) -> None:
    poses = generate(model, 200, seed=2, steps=3, best_of=3, smooth="official")
    assert poses.shape == (200, 402) and torch.isfinite(poses).all()
    assert torch.equal(poses, generate(model, 200, seed=2, steps=3, best_of=3, smooth="official"))


def test_progress_counts_every_diffusion_step_and_cancel_stops_the_run(model: GestureDecoder) -> None:
    calls: list[tuple[int, int]] = []
    generate(model, 150, seed=0, steps=3, progress=lambda step, total: calls.append((step, total)))
    total = total_diffusion_steps(150, 3)
    assert total == 3 * len(plan_windows(150, 80, 8)) == 6
    assert calls == [(step, total) for step in range(1, total + 1)]
    checks: list[int] = []

    def cancel_on_fourth() -> None:
        checks.append(1)
        if len(checks) == 4:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        generate(model, 150, seed=0, steps=3, check_cancel=cancel_on_fourth)
    assert len(checks) == 4


def test_bf16_weights_and_autocast_stay_close_to_fp32_and_fp16_is_refused(model: GestureDecoder) -> None:
    full = generate(model, 90, seed=5, steps=3)
    autocast = generate(model, 90, seed=5, steps=3, dtype=torch.bfloat16)
    bf16_model = GestureDecoder(TINY_TEST_CONFIG).eval()
    bf16_model.load_state_dict(model.state_dict())
    bf16 = generate(bf16_model.to(torch.bfloat16), 90, seed=5, steps=3)
    for poses in (autocast, bf16):
        assert poses.dtype == torch.float32 and torch.isfinite(poses).all()
        assert (poses - full).abs().mean() < 0.1 * full.abs().mean()
    with pytest.raises(InputError):
        generate(model, 90, seed=5, steps=1, dtype=torch.float16)  # never fp16 on CPU


def test_ten_minutes_of_audio_runs_window_by_window(model: GestureDecoder) -> None:
    poses = generate(model, 15000, seed=0, steps=1)
    assert poses.shape == (15000, 402) and torch.isfinite(poses).all()


@pytest.mark.parametrize(
    "bad_features, reference, name",
    [
        (torch.zeros(80, 1024), REFERENCE, "audio_features"),
        (torch.full((80, FEATURE_DIM), float("nan")), REFERENCE, "audio_features"),
        (torch.zeros(0, FEATURE_DIM), REFERENCE, "audio_features"),
        (torch.zeros(80, FEATURE_DIM), torch.full((402,), float("nan")), "reference_pose"),
        (torch.zeros(80, FEATURE_DIM), torch.zeros(134, 2), "reference_pose"),
    ],
)
def test_bad_input_raises_input_error(model: GestureDecoder, bad_features, reference, name: str) -> None:
    with pytest.raises(InputError) as error:
        generate_pose_sequence(model, bad_features, reference, torch.Generator().manual_seed(0), steps=1)
    assert error.value.input_name == name


def test_bad_settings_raise_input_error(model: GestureDecoder) -> None:
    for settings in ({"window": 60}, {"overlap": 0}, {"overlap": 41}, {"smooth": "gaussian"}, {"best_of": 0}):
        with pytest.raises(InputError):
            generate(model, 100, seed=0, steps=1, **settings)


def test_bench_reports_speed_and_memory() -> None:
    results = run_smga_bench((1.0,), ("fp32",), steps=2, repeats=1, config=TINY_TEST_CONFIG, verbose=False)
    (run,) = results["runs"]
    assert run["compute_s_per_audio_s"] > 0 and run["peak_rss_mib"] > 0 and run["seconds_of_audio"] == 1.0
