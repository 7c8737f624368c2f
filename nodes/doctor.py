"""MMGT Doctor: the install table of ``python -m mmgt_core doctor`` (packages, model files, ready modes) in the UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmgt_core.cli_doctor import install_report

from . import host
from .common import TextReport


class Doctor(TextReport):
    DESCRIPTION = ("Shows what `python -m mmgt_core doctor` prints: installed packages, every model file each mode "
                   "needs (found, or missing with where it goes, its size and source) and which modes are ready. "
                   "Queue it alone; it loads no model. Connect Preview Any to its output to read the table in the "
                   "graph (it is printed to the console too).")
    FUNCTION = "check"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}

    def check(self) -> dict[str, Any]:
        folders = host.model_dirs()
        text = "\n\n".join(install_report(Path(folder)) for folder in folders[:1])
        if len(folders) > 1:
            text += "\n\nOther MMGT model folders searched: " + ", ".join(str(f) for f in folders[1:])
        print(f"[MMGT Doctor]\n{text}")
        return self.show(text)


NODE_CLASS_MAPPINGS = {"MMGT_Doctor": Doctor}
NODE_DISPLAY_NAME_MAPPINGS = {"MMGT_Doctor": "MMGT Doctor"}
