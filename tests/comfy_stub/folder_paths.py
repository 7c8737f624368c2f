"""Test stub of ComfyUI's folder_paths (only what the pack uses). Lives only under tests/."""

from __future__ import annotations

import os
import tempfile

base_path = os.environ.get("MMGT_STUB_COMFY_ROOT") or tempfile.mkdtemp(prefix="comfy_stub_")
models_dir = os.path.join(base_path, "models")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {
    "checkpoints": ([os.path.join(models_dir, "checkpoints")], {".safetensors"}),
}


def get_folder_paths(name: str) -> list[str]:
    return list(folder_names_and_paths[name][0])


def get_filename_list(name: str) -> list[str]:
    paths, extensions = folder_names_and_paths[name]
    found = []
    for root in paths:
        for directory, _, files in os.walk(root):
            for file in files:
                if not extensions or os.path.splitext(file)[1] in extensions:
                    found.append(os.path.relpath(os.path.join(directory, file), root))
    return sorted(found)


def get_input_directory() -> str:
    return os.path.join(base_path, "input")


def get_output_directory() -> str:
    return os.path.join(base_path, "output")


def get_annotated_filepath(name: str) -> str:
    return os.path.join(get_input_directory(), name)
