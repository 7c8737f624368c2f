"""Fetch the missing model files of ``models_table`` from the Hugging Face hub, only when the user asks.

``python -m mmgt_core download [--mode audio2video|pose2video|audio2pose|all] [--models DIR]`` and the MMGT
Download Models node both call :func:`download_missing`. For each missing file it asks the hub for the file's
metadata (size, ETag = sha256 for LFS files, git blob sha1 for small files, commit), downloads into
``<models>/.mmgt-download/<path>.part`` with huggingface_hub's ``http_get`` (a later run resumes a ``.part`` with
an HTTP Range request), checks size and hash, and moves the file into place with one rename; a folder model
(config.json + weights) is assembled in the staging area and renamed into place whole. ``HF_ENDPOINT`` (or
``endpoint``) points at a mirror. Nothing here runs at import.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Optional

from .errors import MMGTError
from .models_table import MODEL_FILES, ModelFile, RemoteFile
from .types import ProgressFn

MODE_NAMES = {"audio2video": "audio→video", "pose2video": "pose→video", "audio2pose": "audio→pose"}
MODE_CHOICES = (*MODE_NAMES, "all")
STAGING_DIR = ".mmgt-download"
HASH_CHUNK = 8 * 1024 * 1024


class DownloadError(MMGTError):
    """A download failed, was interrupted or did not match what the hub published."""


@dataclass
class DownloadReport:
    """What a download run did, model by model."""

    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"downloaded  {name}" for name in self.downloaded]
        lines += [f"present     {name}" for name in self.present]
        lines += [f"by hand     {name}" for name in self.manual]
        return "\n".join(lines) or "nothing to do"


def needed_models(mode: str) -> list[ModelFile]:
    """The models_table rows a mode needs ("all": every row)."""
    if mode not in MODE_CHOICES:
        raise DownloadError(f"mode '{mode}' is not one of {', '.join(MODE_CHOICES)}.")
    return [m for m in MODEL_FILES if mode == "all" or MODE_NAMES[mode] in m.modes]


@dataclass(frozen=True)
class _Published:
    """What the hub says about one file."""

    url: str
    size: Optional[int]
    etag: str
    commit: Optional[str]


def _published(remote: RemoteFile, endpoint: Optional[str], headers: dict[str, str]) -> _Published:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(remote.repo, remote.remote_path, revision=remote.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, headers=headers)
    except Exception as exc:  # huggingface_hub raises many types (HTTP, offline, not found); all say the same
        raise DownloadError(f"could not reach {url}: {type(exc).__name__}: {str(exc).splitlines()[0]}. Check the "
                            "network (or HF_ENDPOINT for a mirror) and run the download again.") from exc
    return _Published(meta.location or url, meta.size, (meta.etag or "").removeprefix("W/").strip('"'),
                      meta.commit_hash)


class _CountingFile:
    """A file object for ``http_get`` that reports progress and checks for cancel on every chunk; an exception
    from the callback (e.g. the host's cancel) is kept so it reaches the caller unchanged."""

    def __init__(self, handle: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        self._handle = handle
        self._on_bytes = on_bytes
        self.stopped_by: Optional[BaseException] = None

    def write(self, chunk: bytes) -> int:
        written = self._handle.write(chunk)
        try:
            self._on_bytes(len(chunk))
        except BaseException as exc:
            self.stopped_by = exc
            raise
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _digest(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    digest = hashlib.new(algorithm)
    digest.update(prefix)
    with open(path, "rb") as handle:
        while block := handle.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, size: Optional[int], etag: str) -> Optional[str]:
    """None when ``path`` has the published size and hash (sha256 ETag of an LFS file, or the git blob sha1 of a
    small file); else what is wrong. An ETag in neither form cannot be checked and only the size is compared."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size {actual} bytes, published {size}"
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        found = _digest(path, "sha256")
        return None if found == etag else f"sha256 {found}, published {etag}"
    if re.fullmatch(r"[0-9a-f]{40}", etag):
        found = _digest(path, "sha1", f"blob {actual}\0".encode())
        return None if found == etag else f"git sha1 {found}, published {etag}"
    return None


def _fetch(remote: RemoteFile, published: _Published, part: Path, headers: dict[str, str],
           on_bytes: Callable[[int], None]) -> None:
    """Download (or resume) ``part`` from the hub with huggingface_hub's http_get."""
    from huggingface_hub.file_download import http_get

    part.parent.mkdir(parents=True, exist_ok=True)
    resume = part.stat().st_size if part.exists() else 0
    if published.size is not None and resume > published.size:
        part.unlink()
        resume = 0
    if published.size is not None and resume == published.size:
        return
    with open(part, "ab") as handle:
        counting = _CountingFile(handle, on_bytes)
        try:
            http_get(published.url, counting, resume_size=resume, headers=dict(headers),
                     expected_size=published.size)
        except Exception as exc:
            if counting.stopped_by is not None:  # cancelled: the partial file stays for the next run
                raise counting.stopped_by from None
            handle.flush()
            have = part.stat().st_size
            raise DownloadError(
                f"download of {remote.repo}/{remote.remote_path} stopped after {have} of "
                f"{published.size or '?'} bytes ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                "). The partial file is kept; run the download again to resume.") from exc


def _download_model(model: ModelFile, models_dir: Path, endpoint: Optional[str], headers: dict[str, str],
                    progress: Callable[[int], None], published: dict[RemoteFile, _Published]) -> None:
    staging = models_dir / STAGING_DIR
    parts = []
    for remote in model.downloads:
        part = staging / f"{remote.local_path}.part"
        _fetch(remote, published[remote], part, headers, progress)
        problem = verify(part, published[remote].size, published[remote].etag)
        if problem is not None:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{remote.repo}/{remote.remote_path} arrived corrupted ({problem}); the file was "
                                "deleted. Run the download again; if it repeats, fetch it by hand from "
                                f"{model.source}.")
        parts.append((remote, part))
    folder = model.downloads[0].local_path.split("/")[0]
    base = staging / ".ready" if model.is_folder else models_dir  # a folder model is assembled, then moved whole
    if model.is_folder:
        shutil.rmtree(base / folder, ignore_errors=True)
    for remote, part in parts:
        target = base / remote.local_path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
    if model.is_folder:
        if (models_dir / folder).exists():
            raise DownloadError(f"'{models_dir / folder}' appeared during the download; remove it or keep it.")
        os.replace(base / folder, models_dir / folder)


def download_missing(models_dir: str | os.PathLike[str], mode: str = "all", endpoint: Optional[str] = None,
                     progress: Optional[ProgressFn] = None, check_cancel: Optional[Callable[[], None]] = None,
                     log: Callable[[str], None] = print) -> DownloadReport:
    """Download exactly the files ``mode`` needs that are missing from ``models_dir``; returns what was done.

    ``progress(bytes_done, bytes_total)`` is called as bytes arrive; ``check_cancel()`` may raise to stop (the
    partial file is kept and a later run resumes it).
    """
    models_dir = Path(models_dir)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    report = DownloadReport()
    todo: list[ModelFile] = []
    for model in needed_models(mode):
        if model.find([models_dir]) is not None:
            report.present.append(model.path)
        elif not model.downloads:
            report.manual.append(f"{model.path}: fetch it from {model.source}")
        else:
            todo.append(model)
    if not todo:
        return report
    models_dir.mkdir(parents=True, exist_ok=True)
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(library_name="comfyui-mmgt")
    published = {remote: _published(remote, endpoint, headers) for model in todo for remote in model.downloads}
    total = sum(p.size or 0 for p in published.values())
    done = [0]

    def on_bytes(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0], max(total, done[0]))
        if check_cancel is not None:
            check_cancel()

    for model in todo:
        log(f"downloading {model.path} from {model.downloads[0].repo} ({model.size})")
        for remote in model.downloads:  # count what earlier runs already fetched
            part = models_dir / STAGING_DIR / f"{remote.local_path}.part"
            done[0] += part.stat().st_size if part.exists() else 0
        _download_model(model, models_dir, endpoint, headers, on_bytes, published)
        report.downloaded.append(model.path)
    shutil.rmtree(models_dir / STAGING_DIR / ".ready", ignore_errors=True)
    if progress is not None:
        progress(total, total)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmgt_core download",
        description="Download the model files a mode needs that are missing from the MMGT model folder, from "
                    "their public Hugging Face sources (resumable; size and hash checked; HF_ENDPOINT for a "
                    "mirror). Files not on the hub are listed with where to get them.")
    parser.add_argument("--mode", choices=MODE_CHOICES, default="all",
                        help="audio2video, pose2video, audio2pose or all (default)")
    parser.add_argument("--models", default=os.environ.get("MMGT_MODELS_DIR", "models/mmgt"),
                        help="the MMGT model folder (ComfyUI/models/mmgt); default: $MMGT_MODELS_DIR or models/mmgt")
    parser.add_argument("--endpoint", default=None, help="hub address (default: $HF_ENDPOINT or huggingface.co)")
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    bar = tqdm(unit="B", unit_scale=True, desc="MMGT models", disable=os.environ.get("MMGT_NO_PROGRESS") == "1")

    def show(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = download_missing(args.models, args.mode, args.endpoint, progress=show, log=tqdm.write)
    finally:
        bar.close()
    print(f"MMGT model folder: {Path(args.models).resolve()}\n{report.text()}")
    return 0
