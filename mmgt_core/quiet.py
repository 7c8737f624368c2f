"""Quiet loading: third-party load reports (transformers' key tables, "Loading weights" bars, diffusers'
progress bars) are silenced while our loaders run; our own checks say what matters in words."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

_LIBRARIES = ("transformers", "diffusers")


@contextmanager
def _library_quiet(name: str) -> Iterator[None]:
    try:
        library_logging = importlib.import_module(f"{name}.utils.logging")
    except ImportError:
        yield
        return
    verbosity = library_logging.get_verbosity()
    bars = library_logging.is_progress_bar_enabled()
    library_logging.set_verbosity_error()
    library_logging.disable_progress_bar()
    try:
        yield
    finally:
        library_logging.set_verbosity(verbosity)
        if bars:
            library_logging.enable_progress_bar()


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers/diffusers/huggingface_hub reports and bars inside the block, then restore them."""
    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    with ExitStack() as stack:
        for name in _LIBRARIES:
            stack.enter_context(_library_quiet(name))
        hub_logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            hub_logger.setLevel(hub_level)
