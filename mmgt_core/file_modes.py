"""Ordinary permissions for files written through a private temp file (``tempfile.mkstemp`` makes them 0600)."""

from __future__ import annotations

import os
import threading

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


def give_ordinary_mode(path: str | os.PathLike[str]) -> None:
    """Set a file written via ``mkstemp`` to the user's ordinary (umask-derived) mode."""
    os.chmod(path, ordinary_file_mode())
