"""A small test-only executor for API-format ComfyUI workflows.

It loads the prompt JSON, checks every node type exists, every required input is given, every link joins an
output whose RETURN_TYPES entry equals the input's declared type (or ``*``), every widget value fits its
declaration (COMBO options, INT/FLOAT bounds, BOOLEAN, STRING), then runs the nodes in dependency order the way
ComfyUI calls classic nodes: ``getattr(cls(), cls.FUNCTION)(**inputs)``. Core nodes the workflows use are
replaced by minimal test versions in ``tests/comfy_stub/core_nodes.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class WorkflowError(AssertionError):
    """The workflow does not validate against the nodes' declarations."""


@dataclass
class RunResult:
    outputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui: dict[str, Any] = field(default_factory=dict)


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def load_prompt(path: str | Path) -> dict[str, Any]:
    prompt = json.loads(Path(path).read_text())
    if not isinstance(prompt, dict) or not all(isinstance(v, dict) and "class_type" in v for v in prompt.values()):
        raise WorkflowError(f"{path} is not an API-format prompt")
    return prompt


def _declared_inputs(cls: type) -> dict[str, tuple[Any, dict[str, Any], bool]]:
    spec = cls.INPUT_TYPES()
    declared: dict[str, tuple[Any, dict[str, Any], bool]] = {}
    for section, required in (("required", True), ("optional", False)):
        for name, entry in spec.get(section, {}).items():
            options = entry[1] if len(entry) > 1 else {}
            declared[name] = (entry[0], options, required)
    return declared


LITERAL_TYPES = {"INT": (int,), "FLOAT": (int, float), "BOOLEAN": (bool,), "STRING": (str,)}


def _check_widget(node_id: str, name: str, kind: Any, options: dict[str, Any], value: Any) -> None:
    where = f"node {node_id} input '{name}'"
    if isinstance(kind, list):
        if value not in kind:
            raise WorkflowError(f"{where}: {value!r} is not one of {kind[:10]}")
    elif kind in LITERAL_TYPES:
        if not isinstance(value, LITERAL_TYPES[kind]) or (isinstance(value, bool) and kind != "BOOLEAN"):
            raise WorkflowError(f"{where}: expected {kind}, got {value!r}")
    else:
        raise WorkflowError(f"{where}: type {kind} must come from a link, got a literal {value!r}")
    if kind in ("INT", "FLOAT"):
        if "min" in options and value < options["min"]:
            raise WorkflowError(f"{where}: {value} is smaller than min {options['min']}")
        if "max" in options and value > options["max"]:
            raise WorkflowError(f"{where}: {value} is bigger than max {options['max']}")


def drop_undeclared_values(prompt: dict[str, Any], node_classes: dict[str, type]) -> dict[str, Any]:
    """A copy of ``prompt`` without literal inputs a node no longer declares, which is what ComfyUI's executor
    does with them (e.g. an API prompt saved before a widget was removed). ``run`` itself stays strict."""
    cleaned = {}
    for node_id, node in prompt.items():
        declared = _declared_inputs(node_classes[node["class_type"]]) if node["class_type"] in node_classes else {}
        inputs = {name: value for name, value in node.get("inputs", {}).items()
                  if name in declared or is_link(value)}
        cleaned[node_id] = {**node, "inputs": inputs}
    return cleaned


def validate(prompt: dict[str, Any], node_classes: dict[str, type]) -> list[str]:
    """Check the prompt against the node declarations; return the execution order."""
    for node_id, node in prompt.items():
        cls = node_classes.get(node["class_type"])
        if cls is None:
            raise WorkflowError(f"node {node_id}: unknown type {node['class_type']}")
        declared = _declared_inputs(cls)
        given = node.get("inputs", {})
        for name in given:
            if name not in declared:
                raise WorkflowError(f"node {node_id} ({node['class_type']}): unknown input '{name}'")
        for name, (kind, options, required) in declared.items():
            if name not in given:
                if required:
                    raise WorkflowError(f"node {node_id} ({node['class_type']}): missing required input '{name}'")
                continue
            value = given[name]
            if is_link(value):
                source_id, index = value
                if source_id not in prompt:
                    raise WorkflowError(f"node {node_id} input '{name}': links to missing node {source_id}")
                source_cls = node_classes[prompt[source_id]["class_type"]]
                if index >= len(source_cls.RETURN_TYPES):
                    raise WorkflowError(f"node {node_id} input '{name}': node {source_id} has no output {index}")
                produced = source_cls.RETURN_TYPES[index]
                expected = kind if not isinstance(kind, list) else "COMBO"
                if expected != "*" and produced != "*" and produced != expected:
                    raise WorkflowError(f"node {node_id} input '{name}' expects {expected}, but node {source_id} "
                                        f"output {index} is {produced}")
            else:
                _check_widget(node_id, name, kind, options, value)
    return _topological_order(prompt)


def _topological_order(prompt: dict[str, Any]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(node_id: str) -> None:
        if state.get(node_id) == 2:
            return
        if state.get(node_id) == 1:
            raise WorkflowError(f"cycle through node {node_id}")
        state[node_id] = 1
        for value in prompt[node_id].get("inputs", {}).values():
            if is_link(value):
                visit(value[0])
        state[node_id] = 2
        order.append(node_id)

    for node_id in prompt:
        visit(node_id)
    return order


def run(prompt: dict[str, Any], node_classes: dict[str, type]) -> RunResult:
    """Validate, then execute every node; returns each node's outputs and UI results."""
    result = RunResult()
    for node_id in validate(prompt, node_classes):
        node = prompt[node_id]
        cls = node_classes[node["class_type"]]
        kwargs = {name: (result.outputs[v[0]][v[1]] if is_link(v) else v)
                  for name, v in node.get("inputs", {}).items()}
        returned = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(returned, dict):
            result.ui[node_id] = returned.get("ui", {})
            returned = returned.get("result", ())
        if not isinstance(returned, tuple) or len(returned) != len(cls.RETURN_TYPES):
            raise WorkflowError(f"node {node_id} ({node['class_type']}) returned {type(returned).__name__} of "
                                f"length {len(returned) if isinstance(returned, tuple) else '?'}, declared "
                                f"{len(cls.RETURN_TYPES)} outputs")
        result.outputs[node_id] = returned
    return result
