"""Small shared types: the callables the host injects, and the keypoint sequence value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

ProgressFn = Callable[[int, int], None]
"""progress(step, total): called after each unit of work; step counts from 1."""

CancelFn = Callable[[], None]
"""check_cancel(): raises (e.g. Cancelled or the host's interrupt exception) when the user cancelled."""


OptionalProgress = Optional[ProgressFn]
"""None: no progress reports."""
OptionalCancel = Optional[CancelFn]
"""None: never cancelled."""
