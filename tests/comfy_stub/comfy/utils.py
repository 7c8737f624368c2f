"""Test stub of comfy.utils.ProgressBar: records updates and is an interruption point, like the real one."""

from __future__ import annotations

from . import model_management

PROGRESS_LOG: list[tuple[int, int]] = []


class ProgressBar:
    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0

    def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
        if total is not None:
            self.total = total
        self.current = value
        PROGRESS_LOG.append((value, self.total))
        model_management.throw_exception_if_processing_interrupted()

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)
