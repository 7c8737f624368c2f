"""Declared dependencies = used ones, in one set of ranges; the doctor's package report on bad installs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mmgt_core import dependencies as deps
from mmgt_core.dependencies import DEV, OPTIONAL, REQUIRED, TRAINING_EXTRA, check_dependency, version_in_range

REPO = Path(__file__).resolve().parents[1]


def _requirement_lines(name: str) -> list[str]:
    lines = (REPO / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_requirement_files_list_the_declared_ranges():
    assert _requirement_lines("requirements.txt") == [d.requirement for d in REQUIRED if d.pip != "torch"]
    training = [d.requirement for d in OPTIONAL if d.pip in TRAINING_EXTRA]
    assert _requirement_lines("requirements-dev.txt") == [d.requirement for d in DEV] + training


def test_pyproject_declares_the_same_ranges_and_extras():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == [d.requirement for d in REQUIRED]
    extras = project["optional-dependencies"]
    training = [d.requirement for d in OPTIONAL if d.pip in TRAINING_EXTRA]
    assert extras["training"] == training
    assert extras["dev"] == [d.requirement for d in DEV] + training, "pip install -e .[dev] = requirements-dev.txt"
    assert extras["mediapipe"] == [next(d.requirement for d in OPTIONAL if d.pip == "mediapipe")]


def _imported_top_level_modules(folders: list[str]) -> set[str]:
    names: set[str] = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
                elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and \
                        node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    names.add(node.args[0].value.split(".")[0])  # importlib.import_module("mediapipe.python...")
    return names


def test_every_declared_package_is_imported_and_every_third_party_import_is_declared():
    used = _imported_top_level_modules(["mmgt_core", "nodes", "training", "tests"])
    declared = {d.module for d in REQUIRED + OPTIONAL + DEV}
    assert declared - used == {"ruff"}, "declared but never imported (ruff is only run as a command)"
    local = {"mmgt_core", "nodes", "training", "server", "comfy_api", "comfy_execution"}  # the pack and ComfyUI's own
    local |= {path.stem for path in (REPO / "tests").glob("*.py")}  # test helper modules
    local |= {path.stem for path in (REPO / "tests" / "comfy_stub").iterdir()}  # the stubbed ComfyUI modules
    third_party = {name for name in used - local - set(sys.stdlib_module_names) if not name.startswith("_")}
    assert third_party - declared == set(), "imported but not declared"


@pytest.mark.parametrize(("version", "spec", "expected"), [
    ("2.4.6", ">=1.24", True), ("1.23.5", ">=1.24", False), ("2.13.0+cpu", ">=2.1", True),
    ("0.10.2.post1", ">=0.10.2", True), ("1.26.4", ">=1.24,<2", True), ("2.0.0", ">=1.24,<2", False),
    ("0.10.21", "==0.10.21", True), ("9.9", "", True)])
def test_version_in_range_handles_bounds_local_tags_and_an_empty_spec(version, spec, expected):
    assert version_in_range(version, spec) is expected


def _importer_failing(name: str, error: BaseException):
    def importer(module: str) -> ModuleType:
        if module == name:
            raise error
        return __import__(module)
    return importer


def test_missing_optional_package_is_named_with_what_it_enables():
    mediapipe = next(d for d in OPTIONAL if d.module == "mediapipe")
    error = ModuleNotFoundError("No module named 'mediapipe'", name="mediapipe")
    status = check_dependency(mediapipe, False, _importer_failing("mediapipe", error))
    assert status.state == "missing" and status.line.lstrip().startswith("absent")
    assert "reference-pose fallback" in status.line and "mediapipe==0.10.21" in status.line


def test_missing_required_package_says_what_needs_it():
    einops = next(d for d in REQUIRED if d.module == "einops")
    status = check_dependency(einops, True, _importer_failing("einops", ModuleNotFoundError("x", name="einops")))
    assert status.line.lstrip().startswith("MISSING") and "einops>=0.7" in status.line and "video model" in status.line


@pytest.mark.parametrize("error", [ImportError("numpy.core.multiarray failed to import"),
                                   AttributeError("_ARRAY_API not found")])
def test_package_built_for_another_numpy_names_numpy_and_the_working_range(monkeypatch, error):
    """Like opencv built for numpy 2 on numpy 1.26: no traceback, the package, numpy and the ranges that work."""
    real_version = deps._installed_version
    monkeypatch.setattr(deps, "_installed_version", lambda name: "1.26.4" if name == "numpy" else real_version(name))
    opencv = next(d for d in REQUIRED if d.module == "cv2")
    status = check_dependency(opencv, True, _importer_failing("cv2", error))
    assert status.state == "broken" and status.line.lstrip().startswith("BROKEN")
    assert "import cv2 fails" in status.detail and "numpy 1.26.4" in status.detail
    assert "numpy>=1.24" in status.detail and "opencv-python-headless>=4.8" in status.detail
    assert "Fix: pip install" in status.detail


def test_installed_version_below_the_declared_range_is_reported(monkeypatch):
    monkeypatch.setattr(deps, "_installed_version", lambda name: "1.23.0" if name == "numpy" else None)
    numpy_dep = next(d for d in REQUIRED if d.module == "numpy")
    status = check_dependency(numpy_dep, True)
    assert status.state == "outside range" and "numpy>=1.24" in status.detail


def test_doctor_prints_every_package_without_a_traceback(monkeypatch, capsys):
    from mmgt_core import cli_doctor

    monkeypatch.setattr(deps.importlib, "import_module",
                        _importer_failing("av", AttributeError("_ARRAY_API not found")))
    assert cli_doctor.main(["--no-smoke", "--models", "nowhere"]) == 0
    out = capsys.readouterr().out
    assert "BROKEN   av" in out and "numpy" in out.split("BROKEN   av", 1)[1].splitlines()[0]
    assert all(d.pip in out for d in REQUIRED + OPTIONAL) and "kornia" not in out
