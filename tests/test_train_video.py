"""Stage-II training end to end on a synthetic dataset, at tiny scale on the CPU.

The videos show a drawn figure whose right hand rises and falls with the loudness of an audio tone; their
keypoints are known when they are drawn, so the pose back end reads them from a sidecar file. Bad videos (no audio
track, no person, variable frame rate, corrupt, too short) must be skipped with a reason. Then: prepare -> step 1
-> step 2 -> export -> load in the Stage-II node -> render 12 frames; plus resume, overfitting and atomic saves.
Models are the tiny official fixtures (tiny SD1.5-layout UNet, tiny VAE, CLIP, WavLM and wav2vec2).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.io import wavfile

from mmgt_core.errors import InputError, WeightsError
from mmgt_core.keypoints import PoseSequence, normalize
from mmgt_core.masks import motion_masks
from mmgt_core.media import write_mp4
from mmgt_core.render import draw_pose_frame, render_pose_video
from mmgt_core.tiny_models import synthetic_reference_pose
from mmgt_core.video.net import load_video_net
from tiny_fixture import tiny_net_config
from training.config import ModelSources, PrepareConfig, TrainVideoConfig, load_train_config, save_config
from training.prepare_dataset import prepare_dataset
from training.smga_data import clip_windows, load_clip
from training.train_video import (
    VideoTrainer,
    build_net,
    checkpoint_dirs,
    export_net,
    read_checkpoint,
    save_checkpoint,
    train_video,
)
from training.video_data import FrameReader, load_manifest

pytestmark = pytest.mark.slow

RATE = 16000
SOURCE_FPS = 30
SIZE = 64  # prepared and trained frame size


# ---------------------------------------------------------------------------------------------------------------
# Synthetic talking videos


def loudness(times: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * np.asarray(times))


def figure_keypoints(times: np.ndarray, width: int, height: int) -> np.ndarray:
    """(frames, 134, 3) source-pixel keypoints of the drawn figure; the right hand and wrist follow the loudness."""
    base = synthetic_reference_pose(512, 512).keypoints[0].numpy()
    scale = 1.6 * min(width, height) / 512
    points = np.repeat(base[None], len(times), axis=0)
    points[..., 0] = (points[..., 0] - 256) * scale + width / 2
    points[..., 1] = (points[..., 1] - 256) * scale + height / 2
    lift = loudness(times) * 0.35 * height
    for index in [4, *range(113, 134)]:
        points[:, index, 1] -= lift
    return points.astype(np.float32)


def draw_frames(points: np.ndarray, width: int, height: int, person: bool = True) -> np.ndarray:
    frames = np.full((len(points), height, width, 3), 60, np.uint8)
    if person:
        for frame, pose in zip(frames, points):
            np.maximum(frame, draw_pose_frame(pose, width, height), out=frame)
    return frames


def tone(seconds: float) -> np.ndarray:
    times = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * 330 * times) * loudness(times)).astype(np.float32)


def write_talking_video(path: Path, seconds: float, fps: int = SOURCE_FPS, width: int = 96, height: int = 80,
                        audio: bool = True, person: bool = True) -> np.ndarray:
    """A constant-frame-rate mp4 (+ AAC tone) and its sidecar keypoints; returns the keypoints."""
    times = np.arange(int(round(seconds * fps))) / fps
    points = figure_keypoints(times, width, height)
    if not person:
        points[..., 2] = 0.0
    frames = torch.from_numpy(draw_frames(points, width, height, person)).float() / 255
    sound = torch.from_numpy(tone(seconds))[None] if audio else None
    write_mp4(path, frames, fps, sound, RATE)
    np.save(path.with_name(path.stem + ".keypoints.npy"), points)
    return points


def write_vfr_video(path: Path, width: int = 96, height: int = 80) -> np.ndarray:
    """Frames at irregular times (33 ms, then 100 ms and 200 ms gaps), with audio; returns the frame times."""
    times = np.cumsum([0] + [33, 33, 100, 33, 33, 200, 33] * 6) / 1000.0
    points = figure_keypoints(times, width, height)
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=SOURCE_FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = Fraction(1, 1000)
        sound = container.add_stream("aac", rate=RATE)
        for time, image in zip(times, draw_frames(points, width, height)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(round(time * 1000)), Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        chunk = av.AudioFrame.from_ndarray(tone(times[-1] + 0.1)[None], format="fltp", layout="mono")
        chunk.sample_rate = RATE
        container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    np.save(path.with_name(path.stem + ".keypoints.npy"), points)
    return times


def prepare_config(fixtures: Path, videos: Path, out: Path, **changes) -> PrepareConfig:
    audio = fixtures / "audio"
    return PrepareConfig(input_dir=str(videos), out_dir=str(out), width=SIZE, height=SIZE, pose_backend="sidecar",
                         wavlm=str(audio / "wavlm_tiny" / "WavLM-tiny.pt"), wav2vec=str(audio / "wav2vec2_tiny"),
                         **changes)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, fixtures_dir):
    """Two good videos (3.4 s at 30 fps, 96x80; 1.2 s at 50 fps, 64x96) and five bad ones, prepared."""
    videos = tmp_path_factory.mktemp("videos")
    sidecars = {"talk_a": write_talking_video(videos / "talk_a.mp4", 3.4),
                "talk_b": write_talking_video(videos / "talk_b.mp4", 1.2, fps=50, width=64, height=96)}
    write_talking_video(videos / "no_audio.mp4", 1.0, audio=False)
    write_talking_video(videos / "nobody.mp4", 1.0, person=False)
    write_talking_video(videos / "short.mp4", 0.3)
    write_vfr_video(videos / "vfr.mp4")
    (videos / "corrupt.mp4").write_bytes(bytes(range(256)) * 20)
    out = tmp_path_factory.mktemp("prepared")
    config = prepare_config(fixtures_dir, videos, out)
    summary = prepare_dataset(config, show_progress=False)
    return {"videos": videos, "out": out, "config": config, "summary": summary, "sidecars": sidecars,
            "manifest": out / "manifest.json"}


# ---------------------------------------------------------------------------------------------------------------
# Data preparation


def test_bad_videos_are_skipped_with_reasons(dataset):
    summary = dataset["summary"]
    assert sorted(summary.prepared) == ["talk_a", "talk_b"]
    reasons = {Path(item["source"]).stem: item["reason"] for item in summary.skipped}
    assert set(reasons) == {"no_audio", "nobody", "short", "vfr", "corrupt"}
    assert "no audio track" in reasons["no_audio"]
    assert "no person" in reasons["nobody"]
    assert "too short" in reasons["short"]
    assert "variable frame rate" in reasons["vfr"]
    assert "corrupt" in reasons["corrupt"]
    written = json.loads((dataset["out"] / "prepare_summary.json").read_text())
    assert len(written["skipped"]) == 5


def test_frames_and_keypoints_are_resampled_to_25fps_and_cropped(dataset):
    manifest = load_manifest(dataset["manifest"], require=("frames", "keypoints", "wav2vec", "audio"))
    clips = {clip.id: clip for clip in manifest.clips}
    assert clips["talk_a"].frames == 85 and clips["talk_b"].frames == 30  # floor(duration x 25)
    for name, (source_w, source_h, fps) in {"talk_a": (96, 80, 30), "talk_b": (64, 96, 50)}.items():
        clip = clips[name]
        keypoints = np.load(manifest.path(clip, "keypoints"))
        nearest = np.floor(np.arange(clip.frames) * fps / 25 + 0.5).astype(int)  # nearest source frame in time
        crop = min(source_w, source_h)
        expected = dataset["sidecars"][name][nearest].copy()
        expected[..., 0] = (expected[..., 0] - (source_w - crop) / 2) * SIZE / crop
        expected[..., 1] = (expected[..., 1] - (source_h - crop) / 2) * SIZE / crop
        np.testing.assert_allclose(keypoints, expected, atol=1e-4)
        frames = FrameReader(manifest.path(clip, "frames").parent).read([0, clip.frames - 1])
        assert frames.shape == (2, SIZE, SIZE, 3) and np.abs(frames[0].astype(int) - frames[1]).max() > 20
    wav2vec = load_file(manifest.path(clips["talk_a"], "wav2vec"))["features"]
    assert wav2vec.shape == (85, manifest.wav2vec_layers, manifest.wav2vec_hidden) and wav2vec.dtype == torch.float16


def test_stage1_windows_use_the_official_alignment(dataset):
    """The condition frame is the frame before the 80-frame audio window (and the files suit train_smga)."""
    manifest = load_manifest(dataset["manifest"])
    clip = next(c for c in manifest.clips if c.id == "talk_a")
    assert clip.stage1_windows == [1] and clip.stage2_starts == [2, 85 - 12 - 2 - 1]
    assert next(c for c in manifest.clips if c.id == "talk_b").stage1_windows == []
    stage1 = manifest.root / "stage1"
    loaded = load_clip(stage1 / "talk_a.npy", stage1 / "talk_a.wav", feature_fn=None, cache_dir=stage1)
    x, cond_frame, cond = clip_windows(loaded, manifest.stage1_window, manifest.stage1_stride)
    keypoints = torch.from_numpy(np.load(manifest.path(clip, "keypoints")))
    features = load_file(manifest.path(clip, "stage1_features"))["features"]
    assert features.shape == (85, manifest.stage1_feature_dim)
    pixels_512 = keypoints[0] * 512 / SIZE
    pixels_512[:, 2] = keypoints[0, :, 2]
    torch.testing.assert_close(cond_frame[0], normalize(pixels_512).reshape(402))  # frame s - 1 = 0
    torch.testing.assert_close(cond[0], features[1:81])  # audio frames s .. s + 79
    assert x.shape == (1, 80, 402)


def test_second_run_skips_finished_videos_and_vfr_can_be_resampled(dataset, fixtures_dir, tmp_path):
    record = dataset["out"] / "clips" / "talk_a" / "clip.json"
    stamp = record.stat().st_mtime_ns
    again = prepare_dataset(dataset["config"], show_progress=False)
    assert sorted(again.already_done) == ["talk_a", "talk_b"] and again.prepared == []
    assert record.stat().st_mtime_ns == stamp

    only_vfr = tmp_path / "vfr_only"
    only_vfr.mkdir()
    for name in ("vfr.mp4", "vfr.keypoints.npy"):
        shutil.copy(dataset["videos"] / name, only_vfr / name)
    summary = prepare_dataset(prepare_config(fixtures_dir, only_vfr, tmp_path / "out", vfr="resample",
                                             stage1_features="none"), show_progress=False)
    assert summary.prepared == ["vfr"]
    manifest = load_manifest(tmp_path / "out")
    with av.open(str(only_vfr / "vfr.mp4")) as container:  # the muxer may nudge the written times slightly
        stream = container.streams.video[0]
        times = np.array([float(frame.pts * stream.time_base) for frame in container.decode(stream)])
    assert manifest.clips[0].frames == int((times[-1] + np.median(np.diff(times))) * 25)
    keypoints = np.load(manifest.path(manifest.clips[0], "keypoints"))
    nearest = [int(np.argmin(np.abs(times - i / 25))) for i in range(manifest.clips[0].frames)]
    sidecar = np.load(only_vfr / "vfr.keypoints.npy")
    np.testing.assert_allclose(keypoints[:, 4, 1], sidecar[nearest, 4, 1] * SIZE / 80, atol=1e-3)  # the wrist


# ---------------------------------------------------------------------------------------------------------------
# Training


def train_config(step: int, manifest: Path, out: Path, fixtures: Path, init_net: Path | None = None,
                 max_steps: int = 3) -> TrainVideoConfig:
    config = TrainVideoConfig.for_step(step, str(manifest), str(out))
    config.models = ModelSources(vae=str(fixtures / "stage2" / "tiny_vae"),
                                 image_encoder=str(fixtures / "stage2" / "tiny_image_encoder"),
                                 net_config=tiny_net_config(fixtures).to_dict() if step == 1 else None,
                                 init_net=str(init_net) if init_net else None)
    config.optim.optimizer = "adamw"
    config.optim.batch_size = 2  # the tiny UNet's deepest level is 1x1: GroupNorm needs two rows there
    config.optim.max_steps = max_steps
    config.optim.mixed_precision = "no"
    config.optim.gradient_checkpointing = step == 1
    config.data.width = config.data.height = SIZE
    config.validation.every, config.validation.steps = max_steps, 2
    config.checkpoint.every = 2
    config.device = "cpu"
    return config


@pytest.fixture(scope="module")
def step1_run(dataset, fixtures_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("step1")
    config = train_config(1, dataset["manifest"], out, fixtures_dir)
    return {"config": config, "result": train_video(config), "out": out}


def test_step1_trains_the_official_parameter_set(step1_run, fixtures_dir):
    result, config = step1_run["result"], step1_run["config"]
    assert result.step == 3 and len(result.losses) == 3 and all(np.isfinite(result.losses))
    exported = load_file(result.export_path)
    assert not any(".motion_modules." in k or ".audio_modules." in k for k in exported)
    initial = build_net(config, tiny_net_config(fixtures_dir)).state_dict()
    changed = {k for k in exported if not torch.equal(exported[k], initial[k].to(exported[k].dtype))}
    assert any(k.startswith("reference_unet.down_blocks.") for k in changed)  # gradients reach the ReferenceNet
    assert any(k.startswith("pose_guider.conv_out") for k in changed)
    assert not any(k.startswith(("reference_unet.up_blocks.3", "audioproj.")) for k in changed)
    with av.open(str(result.validation_videos[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12 and len(container.streams.audio) == 1


def test_resume_continues_with_the_same_optimizer_state(step1_run, dataset, fixtures_dir, tmp_path):
    config = train_config(1, dataset["manifest"], tmp_path / "run", fixtures_dir, max_steps=2)
    config.validation.every = 0
    first = train_video(config)
    saved_state, _, saved_optimizer = read_checkpoint(checkpoint_dirs(tmp_path / "run")[-1][1])
    assert saved_state["step"] == 2

    config.optim.max_steps = 3
    trainer = VideoTrainer(config)
    try:
        assert trainer.resume() == 2
        restored = trainer.optimizer.state_dict()["state"]
        for index, values in saved_optimizer["optimizer"]["state"].items():
            for name in ("exp_avg", "exp_avg_sq", "step"):
                torch.testing.assert_close(restored[index][name], values[name], rtol=0, atol=0)
    finally:
        trainer.close()
    second = train_video(config)
    assert first.losses + second.losses == step1_run["result"].losses  # bit-identical to the uninterrupted run
    straight = load_file(checkpoint_dirs(step1_run["out"])[-1][1] / "trainable.safetensors")
    resumed = load_file(checkpoint_dirs(tmp_path / "run")[-1][1] / "trainable.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_interrupted_saves_never_leave_a_truncated_file(tmp_path, monkeypatch, step1_run):
    import mmgt_core.weights as weights_module
    import training.train_video as train_module

    tensors = {"w": torch.ones(3)}
    good = save_checkpoint(tmp_path, 4, tensors, {"optimizer": {}}, {"step": 4}, keep_last=2)

    def disk_full(folder, payload):
        (folder / "optimizer.pt").write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(train_module, "_write_optimizer_state", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 6, tensors, {"optimizer": {}}, {"step": 6}, keep_last=2)
    assert [path for _, path in checkpoint_dirs(tmp_path)] == [good]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]
    assert read_checkpoint(good)[0]["step"] == 4

    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 10)
        raise OSError("interrupted")

    monkeypatch.setattr(weights_module, "save_file", half_written)
    net = load_video_net(step1_run["result"].export_path)
    with pytest.raises(OSError):
        export_net(net, tmp_path / "export.safetensors", net.config, step1_run["config"], 3)
    assert list(tmp_path.glob("*export*")) == []


def test_step2_overfits_a_fixed_batch(step1_run, dataset, fixtures_dir, tmp_path):
    config = train_config(2, dataset["manifest"], tmp_path, fixtures_dir, step1_run["result"].export_path)
    config.optim.lr = 1e-3
    trainer = VideoTrainer(config)
    try:
        batch = trainer.batch(0)
        assert batch["target"].shape == (2, 3, 12, SIZE, SIZE) and batch["audio"].shape == (2, 12, 5, 4, 32)

        def fixed_loss(grad: bool = False) -> torch.Tensor:
            with torch.set_grad_enabled(grad):
                return trainer.loss(batch, torch.Generator().manual_seed(0), drop_conditions=False)

        before = float(fixed_loss())
        for _ in range(5):
            trainer.accelerator.backward(fixed_loss(grad=True))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
        after = float(fixed_loss())
    finally:
        trainer.close()
    assert after < 0.9 * before, (before, after)


def test_step2_export_loads_in_the_stage2_node_and_renders(step1_run, dataset, fixtures_dir, comfy_host):
    out = Path(step1_run["out"]).parent / "step2_e2e"
    result = train_video(train_config(2, dataset["manifest"], out, fixtures_dir, step1_run["result"].export_path,
                                      max_steps=2))
    assert result.step == 2 and all(np.isfinite(result.losses)) and len(result.validation_videos) == 1
    exported = load_file(result.export_path)
    assert any(".audio_modules." in k for k in exported) and any(".motion_modules." in k for k in exported)

    models = Path(comfy_host["folder_paths"].get_folder_paths("mmgt")[0])
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy(result.export_path, models / "mine.safetensors")
    for folder, source in (("tiny_vae", "stage2"), ("tiny_image_encoder", "stage2"), ("wav2vec2_tiny", "audio")):
        shutil.copytree(fixtures_dir / source / folder, models / folder)
    classes = comfy_host["classes"]
    net, = classes["MMGT_LoadVideoNet"]().load("mine.safetensors", "fp32")
    vae = classes["MMGT_LoadVAE"]().load("tiny_vae", "fp32")[0]
    encoder = classes["MMGT_LoadImageEncoder"]().load("tiny_image_encoder", "fp32")[0]
    wav2vec = classes["MMGT_LoadWav2Vec2"]().load("wav2vec2_tiny")[0]

    manifest = load_manifest(dataset["manifest"])
    clip = next(c for c in manifest.clips if c.id == "talk_a")
    keypoints = torch.from_numpy(np.load(manifest.path(clip, "keypoints"))[:12].copy())
    sequence = PoseSequence(keypoints, SIZE, SIZE)
    pose = render_pose_video(sequence).float() / 255
    masks = motion_masks(sequence)
    reference = torch.from_numpy(FrameReader(manifest.path(clip, "frames").parent).read([0])).float() / 255
    rate, pcm = wavfile.read(manifest.path(clip, "audio"))
    audio = {"waveform": torch.from_numpy(pcm.astype(np.float32) / 32768)[None, None, : 12 * 640], "sample_rate": rate}
    features, frames, _notes = classes["MMGT_Stage2AudioFeatures"]().encode(audio, wav2vec)
    latents, _ = classes["MMGT_SampleVideo"]().sample(
        net, reference, pose_frames=pose, face_hands_mask=masks.face_hands, lips_mask=masks.lips, width=SIZE,
        height=SIZE, seed=1, steps=2, cfg=3.5, full_weight=1.0,
        face_weight=1.0, lips_weight=2.0, mask_mode="released", context_frames=12, context_overlap=4,
        context_schedule="open", audio_features=features, image_encoder=encoder, mmgt_vae=vae)
    video, fps, _ = classes["MMGT_DecodeVideo"]().decode(latents, 4, mmgt_vae=vae)
    assert frames == 12 and video.shape == (12, SIZE, SIZE, 3) and fps == 25.0
    assert torch.isfinite(video).all() and video.std(dim=0).mean() > 0


# ---------------------------------------------------------------------------------------------------------------
# Clear errors before training


def test_missing_files_in_the_manifest_fail_before_any_model_loads(dataset, fixtures_dir, tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(dataset["out"], broken)
    (broken / "clips" / "talk_b" / "wav2vec.safetensors").unlink()
    config = train_config(2, broken / "manifest.json", tmp_path / "run", fixtures_dir, tmp_path / "missing.safetensors")
    config.models.vae = str(tmp_path / "no_vae_here")
    with pytest.raises(InputError, match=r"missing: .*talk_b.*wav2vec\.safetensors"):
        VideoTrainer(config)
    repaired = prepare_dataset(prepare_config(fixtures_dir, dataset["videos"], broken), show_progress=False)
    assert repaired.prepared == ["talk_b"] and repaired.already_done == ["talk_a"]
    load_manifest(broken, require=("frames", "keypoints", "wav2vec"))


def test_eight_bit_optimizer_without_bitsandbytes_is_a_clear_error(dataset, fixtures_dir, tmp_path):
    pytest.importorskip("accelerate")
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    config = train_config(1, dataset["manifest"], tmp_path, fixtures_dir)
    config.optim.optimizer = "adamw8bit"
    with pytest.raises(InputError, match="bitsandbytes"):
        VideoTrainer(config)


def test_step2_needs_an_init_net_and_takes_motion_modules_from_an_animatediff_checkpoint(dataset, fixtures_dir,
                                                                                         tmp_path):
    config = train_config(2, dataset["manifest"], tmp_path, fixtures_dir)
    tiny = tiny_net_config(fixtures_dir)
    with pytest.raises(InputError, match="init_net"):
        build_net(config, tiny)
    config.models.init_net = str(fixtures_dir / "stage2" / "net_tiny.safetensors")
    net_tiny = load_file(config.models.init_net)
    prefix = "denoising_unet."
    motion = {k[len(prefix):]: v + 1 for k, v in net_tiny.items() if ".motion_modules." in k}
    torch.save({"state_dict": motion}, tmp_path / "mm_tiny_v2.ckpt")  # AnimateDiff's own layout and container
    config.models.motion_module = str(tmp_path / "mm_tiny_v2.ckpt")
    state = build_net(config, tiny).state_dict()
    assert all(torch.equal(state[prefix + k], v) for k, v in motion.items())
    assert torch.equal(state["audioproj.proj1.weight"], net_tiny["audioproj.proj1.weight"])

    from safetensors.torch import save_file

    save_file({"not_motion.weight": torch.zeros(1)}, str(tmp_path / "mm.safetensors"))
    config.models.motion_module = str(tmp_path / "mm.safetensors")
    with pytest.raises(WeightsError, match="motion"):
        build_net(config, tiny)


def test_config_yaml_round_trip_with_overrides(tmp_path):
    config = TrainVideoConfig.for_step(2, "data/manifest.json", "runs/s2")
    path = save_config(config, tmp_path / "config.yaml")
    loaded = load_train_config(path, ["optim.lr=2e-5", "data.crop_scale=[0.8, 1.0]"])
    assert loaded.optim.lr == 2e-5 and loaded.data.crop_scale == (0.8, 1.0)
    loaded.optim.lr, loaded.data.crop_scale = config.optim.lr, config.data.crop_scale
    assert loaded == config
    with pytest.raises(InputError, match="does not name"):
        load_train_config(path, ["optim.nope=1"])
    examples = Path(__file__).resolve().parents[1] / "training" / "configs"
    assert [load_train_config(examples / f"step{s}.yaml").step for s in (1, 2)] == [1, 2]
