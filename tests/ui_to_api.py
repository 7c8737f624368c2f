"""Convert a UI-format ComfyUI workflow (what the editor saves) into the API format (what ``POST /prompt`` takes).

Mirrors what the ComfyUI frontend (1.27, ComfyUI 0.3.64) does in ``graphToPrompt`` for the nodes our workflows
use: widget values are matched to the node's widget inputs in ``INPUT_TYPES`` order (required, then optional),
links become ``[origin node id, origin slot]``, and editor-only nodes (Note, MarkdownNote) are left out.

The frontend adds widgets that are not node inputs and still stores their values in ``widgets_values``:
* a "control after generate" value after an INT input named ``seed``/``noise_seed`` (or one declaring
  ``control_after_generate``);
* an upload button after a combo with ``image_upload``/``video_upload``/``animated_image_upload`` (value "image");
* for LoadAudio (``audio_upload``) an audio player and an upload button, stored after the file name.
Their values are skipped. A widget whose input is linked keeps a stored value, which the link replaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
EDITOR_ONLY_NODES = ("Note", "MarkdownNote")
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
ACTIVE_MODE = 0


class ConversionError(ValueError):
    """The UI workflow cannot be converted (unknown node type, unsupported node mode, value count mismatch)."""


def is_widget(kind: Any, options: Mapping[str, Any]) -> bool:
    """Whether the frontend shows this input as a widget (a literal value) rather than only as a socket."""
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput", False)


def extra_widget_values(name: str, kind: Any, options: Mapping[str, Any]) -> int:
    """How many frontend-only widget values follow this input's value in ``widgets_values``."""
    seed = kind == "INT" and (name in SEED_NAMES or options.get("control_after_generate"))
    if seed or any(options.get(flag) for flag in UPLOAD_FLAGS):
        return 1
    return 2 if options.get("audio_upload") else 0


def widget_inputs(input_types: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(name, number of extra frontend values after it) for every widget input, in the frontend's order."""
    found = []
    for section in ("required", "optional"):
        for name, entry in input_types.get(section, {}).items():
            kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
            if is_widget(kind, options):
                found.append((name, extra_widget_values(name, kind, options)))
    return found


def convert(workflow: Mapping[str, Any], node_input_types: Mapping[str, Mapping[str, Any]],
            ignore_trailing_values: bool = False) -> dict[str, Any]:
    """The API-format prompt of a UI workflow. ``node_input_types``: class type → its ``INPUT_TYPES()`` dict.

    ``ignore_trailing_values``: drop stored values past a node's last widget, as the frontend does when it loads a
    workflow saved before trailing widgets were removed (the default is strict, to catch stale shipped files).
    """
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt: dict[str, Any] = {}
    for node in workflow["nodes"]:
        if node["type"] in EDITOR_ONLY_NODES:
            continue
        if node.get("mode", ACTIVE_MODE) != ACTIVE_MODE:
            raise ConversionError(f"node {node['id']} ({node['type']}) is muted or bypassed; not supported here")
        if node["type"] not in node_input_types:
            raise ConversionError(f"node {node['id']}: unknown type {node['type']}")
        prompt[str(node["id"])] = {"class_type": node["type"],
                                   "inputs": _node_inputs(node, node_input_types[node["type"]], links,
                                                          ignore_trailing_values)}
    return prompt


def _node_inputs(node: Mapping[str, Any], input_types: Mapping[str, Any], links: Mapping[int, list],
                 ignore_trailing_values: bool = False) -> dict:
    inputs: dict[str, Any] = {}
    values = list(node.get("widgets_values") or [])
    position = 0
    for name, extra in widget_inputs(input_types):
        if position >= len(values):
            raise ConversionError(f"node {node['id']} ({node['type']}): no stored value for widget '{name}'")
        inputs[name] = values[position]
        position += 1 + extra
    if position != len(values) and not (ignore_trailing_values and position < len(values)):
        raise ConversionError(f"node {node['id']} ({node['type']}): {len(values)} widget values, expected "
                              f"{position}")
    for socket in node.get("inputs", []):
        link_id = socket.get("link")
        if link_id is None:
            continue
        if link_id not in links:
            raise ConversionError(f"node {node['id']} input '{socket['name']}': link {link_id} is missing")
        _, origin_id, origin_slot, target_id, _, _ = links[link_id]
        if target_id != node["id"]:
            raise ConversionError(f"link {link_id} does not end at node {node['id']}")
        inputs[socket["name"]] = [str(origin_id), origin_slot]
    return inputs
