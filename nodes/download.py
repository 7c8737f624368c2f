"""MMGT Download Models: fetch the missing model files of a mode, only when this node runs."""

from __future__ import annotations

from typing import Any

from mmgt_core.download import MODE_CHOICES, download_missing

from . import host
from .common import TextReport, node_errors

LOGGER_PREFIX = "[MMGT Download Models]"


class DownloadModels(TextReport):
    DESCRIPTION = ("Downloads the model files the chosen mode needs that are missing from models/mmgt, from their "
                   "public Hugging Face sources (resumable, size and sha256 checked, each file put in place whole). "
                   "Runs only when you queue it; press R afterwards so the loaders list the new files. Files that "
                   "are not on the hub are listed with where to get them. The report also goes to the console; connect "
                   "Preview Any to its output to read it in the graph.")
    FUNCTION = "download"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "mode": (list(MODE_CHOICES), {"default": "audio2video", "tooltip": "Which workflow's files to fetch: "
                                          "audio2video, pose2video, audio2pose, or all."}),
        }}

    def download(self, mode: str) -> dict[str, Any]:
        with node_errors("MMGT Download Models"):
            report = download_missing(host.model_dirs()[0], mode, progress=host.progress_reporter(1),
                                      check_cancel=host.check_cancel, log=lambda line: print(LOGGER_PREFIX, line))
        return self.show(report.text())


NODE_CLASS_MAPPINGS = {"MMGT_DownloadModels": DownloadModels}
NODE_DISPLAY_NAME_MAPPINGS = {"MMGT_DownloadModels": "MMGT Download Models"}
