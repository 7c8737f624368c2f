"""Loader lists and pre-run validation for the nodes: only files that can be the loader's component, the
expected name first, and a validation message (before anything runs) for a missing or wrong file."""

from __future__ import annotations

from typing import Any, Union

from mmgt_core.errors import InputError
from mmgt_core.model_files import check_choice, loader_choices

from . import host

ValidationResult = Union[bool, str]


def choices(key: str) -> list[str]:
    """The combo entries of the loader for component ``key`` (a models_table key)."""
    return loader_choices(key, host.model_dirs()).entries


def validate_file(key: str, value: Any) -> ValidationResult:
    """True when ``value`` is a present file of component ``key``; else the message ComfyUI shows on the node."""
    if value is None:  # driven by a link: checked when it runs
        return True
    problem = check_choice(key, str(value), host.model_dirs())
    return True if problem is None else problem


def require_file(key: str, input_name: str, value: str) -> str:
    """The path of the file picked in ``input_name`` (a component ``key``); an InputError naming the input and the
    fix when it is missing or holds another component."""
    problem = validate_file(key, value)
    if problem is not True:
        raise InputError(input_name, problem)
    return host.resolve_model_path(value)


def dwpose_problems(detector: str | None, pose_model: str | None) -> ValidationResult:
    """Validation of the two DWPose inputs (every failing file named)."""
    return all_problems(validate_file("dwpose_det", detector), validate_file("dwpose_pose", pose_model))


def dwpose_paths(detector: str, pose_model: str) -> tuple[str, str]:
    """The two DWPose files picked on a node; a missing or wrong one stops with its input's name and the fix."""
    return require_file("dwpose_det", "detector", detector), require_file("dwpose_pose", "pose_model", pose_model)


def validate_number(node_class: type, name: str, value: Any, multiple_of: int = 1) -> ValidationResult:
    """Range check of a numeric widget against its declaration (ComfyUI skips its own check for inputs that
    VALIDATE_INPUTS names), plus an optional 'multiple of' rule."""
    if value is None:
        return True
    spec = node_class.INPUT_TYPES()
    options = {**spec.get("required", {}), **spec.get("optional", {})}[name][1]
    if "min" in options and value < options["min"]:
        return f"{name} {value} is below the minimum {options['min']}."
    if "max" in options and value > options["max"]:
        return f"{name} {value} is above the maximum {options['max']}."
    if multiple_of > 1 and value % multiple_of:
        lower = max(multiple_of, value - value % multiple_of)
        return (f"{name} {value} is not a multiple of {multiple_of}; use {lower} or {lower + multiple_of} "
                f"(the video net works on multiples of {multiple_of} pixels).")
    return True


def all_problems(*results: ValidationResult) -> ValidationResult:
    """Every failing check's message in one string (ComfyUI shows it once per input named), or True."""
    messages = [result for result in results if result is not True]
    return " | ".join(messages) if messages else True
