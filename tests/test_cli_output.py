"""The CLI's output: arguments checked before any work, clean stops on SIGINT/SIGTERM, leftovers of a killed run
removed by the next one, and the previous output never touched by a run that did not finish."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from mmgt_core import cli_generate
from mmgt_core.__main__ import main as cli_main
from mmgt_core.keypoints import PoseSequence
from mmgt_core.keypoints_io import save_keypoints_file
from mmgt_core.media import PARTIAL_PREFIX
from mmgt_core.tiny_models import synthetic_reference_pose

REPO = Path(__file__).resolve().parents[1]
FRAMES = 2000  # long enough that the write lasts while the test signals it

# The real CLI with Stage II replaced by random latents (the models are not what these tests are about), and a
# short pause per written chunk so the signal reliably lands during the mp4 write.
CHILD = """
import sys, time, torch
from mmgt_core import cli_generate, media
from mmgt_core.__main__ import main
from mmgt_core.pretrained import load_vae

def stage2(args, models, *rest):
    return torch.randn(1, 4, {frames}, 8, 8), load_vae(models / "sd-vae-ft-mse")

write = media.Mp4Writer.write
def slow_write(self, frames):
    write(self, frames)
    time.sleep(0.01)

cli_generate._stage2 = stage2
media.Mp4Writer.write = slow_write
torch.set_num_threads(1)
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fixtures_dir) -> Path:
    root = tmp_path_factory.mktemp("cli_output")
    shutil.copytree(fixtures_dir / "stage2" / "tiny_vae", root / "models" / "sd-vae-ft-mse")
    shutil.copyfile(fixtures_dir / "stage2" / "reference_image.png", root / "me.png")
    save_keypoints_file(synthetic_reference_pose(256, 256), root / "reference_pose.safetensors")
    pose = synthetic_reference_pose(256, 256).keypoints.repeat(10, 1, 1)  # Stage II is replaced: any length
    save_keypoints_file(PoseSequence(pose, 256, 256, 25.0), root / "pose.safetensors")
    return root


def _arguments(inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--image", str(inputs / "me.png"), "--pose", str(inputs / "pose.safetensors"),
            "--reference-pose", str(inputs / "reference_pose.safetensors"), "--models", str(inputs / "models"),
            "--out", str(out), "--width", "64", "--height", "64", "--no-align", *extra]


@pytest.mark.parametrize("extra, input_name, problem", [
    ((), "--out", "is a folder"),
    (("--fps", "0"), "--fps", "not a usable frame rate"),
    (("--fps", "nan"), "--fps", "not a usable frame rate"),
    (("--width", "500"), "--width", "not a positive multiple of 64"),
    (("--models", "/nonexistent/models"), "--models", "does not exist"),
])
def test_bad_arguments_are_one_line_before_any_work(inputs, tmp_path, monkeypatch, capsys, extra, input_name,
                                                    problem):
    def no_work(*_: object) -> None:
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(cli_generate, "read_image", no_work)
    out = tmp_path if input_name == "--out" else tmp_path / "x.mp4"
    assert cli_main(_arguments(inputs, out, *extra)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"error: input '{input_name}'") and problem in error


def test_an_out_in_a_read_only_folder_is_one_line(inputs, capsys):
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # reachable by an unprivileged user when the tests run as root
    folder.chmod(0o755)
    (folder / "ro").mkdir(mode=0o555)
    (folder / "ro").chmod(0o555)
    as_root = os.geteuid() == 0
    try:
        if as_root:
            os.seteuid(65534)  # root may write anywhere: check as an ordinary user
        code = cli_main(_arguments(inputs, folder / "ro" / "x.mp4"))
    finally:
        if as_root:
            os.seteuid(0)
        shutil.rmtree(folder)
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: input '--out': the folder '{folder / 'ro'}' is not "
                                                    "writable. Fix: Choose a folder you can write to."]


def _start(inputs: Path, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MMGT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD.format(frames=FRAMES), *_arguments(inputs, out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_the_write(child: subprocess.Popen[str], folder: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        partial = [p for p in folder.glob(f"{PARTIAL_PREFIX}*/*.mp4") if p.stat().st_size > 0]
        if partial:
            return
        if child.poll() is not None:
            pytest.fail(f"the run ended before its write: {child.communicate()}")
        time.sleep(0.05)
    child.kill()
    pytest.fail("the mp4 write never started")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_a_run_stopped_during_the_write_leaves_only_the_previous_output(inputs, tmp_path, signum, code):
    out = tmp_path / "result.mp4"
    out.write_bytes(b"the previous result")
    child = _start(inputs, out)
    _wait_for_the_write(child, tmp_path)
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == code
    assert out.read_bytes() == b"the previous result"
    left = sorted(p.name for p in tmp_path.iterdir())
    if signum == signal.SIGKILL:  # nothing can clean up after SIGKILL: the next run writing there does
        assert len(left) == 2 and left[0].startswith(PARTIAL_PREFIX)
        assert cli_main(_arguments(inputs, out, "--fps", "-1")) == 2, "even a run that stops at its checks"
        left = sorted(p.name for p in tmp_path.iterdir())
    else:
        assert stderr.strip().splitlines()[-1] == "cancelled; nothing written", stderr
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert left == ["result.mp4"]


def test_generate_streams_the_whole_video_in_sync(inputs, tmp_path, monkeypatch):
    from mmgt_core.media import probe_av_sync
    from mmgt_core.pretrained import load_vae

    def stage2(args, models, *rest):
        return torch.randn(1, 4, 60, 8, 8), load_vae(models / "sd-vae-ft-mse")

    monkeypatch.setattr(cli_generate, "_stage2", stage2)
    out = tmp_path / "clip.mp4"
    assert cli_main(_arguments(inputs, out, "--fps", "30")) == 0
    info = probe_av_sync(out)
    assert info["frames"] == 72 and info["video_duration"] == pytest.approx(2.4, abs=1e-3), "60 frames at 25 → 30"
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
