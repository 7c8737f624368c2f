"""Files written whole or not at all: a temp file beside the target, renamed onto it only when complete, with
the ordinary permissions ``open()`` would give (``tempfile.mkstemp`` makes files 0600)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else set-and-restore."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def ordinary_file_mode() -> int:
    """The mode a new file gets from ``open()``: 0666 minus the umask (0644 with the usual 022)."""
    return 0o666 & ~current_umask()


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write; a normal exit gives it the ordinary mode and renames it onto
    ``path``, an exception removes it and leaves ``path`` as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        os.chmod(temp, ordinary_file_mode())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_json_atomically(data: Any, path: str | os.PathLike[str], indent: Optional[int] = 1) -> Path:
    """``data`` as UTF-8 JSON at ``path``, written atomically."""
    with atomic_write(path) as temp:
        temp.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    return Path(path)


def replace_folder(built: Path, target: Path) -> None:
    """Rename the finished folder ``built`` onto ``target``; an old ``target`` is moved aside first, then removed."""
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(built, target)
