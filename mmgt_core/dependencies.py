"""The packages MMGT uses, in one place: import name, pip name, the declared version range and what each enables.

``requirements.txt``, ``requirements-dev.txt`` and ``pyproject.toml`` list the same ranges (a test keeps them equal).
:func:`check_dependencies` is what ``python -m mmgt_core doctor`` prints: a missing optional package is named with
what it enables; a package that fails to import because another one has the wrong version (e.g. numpy 1.x under a
build made for numpy 2) is named with the range that works, instead of a traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Dependency:
    """One package: how it is imported, how pip names it, the range we declare, and what needs it."""

    module: str
    pip: str
    spec: str
    enables: str

    @property
    def requirement(self) -> str:
        """The line in requirements.txt / pyproject, e.g. ``numpy>=1.24``."""
        return f"{self.pip}{self.spec}"


# Needed by the nodes and the CLI (requirements.txt; torch comes from the host and is declared only in pyproject).
REQUIRED: tuple[Dependency, ...] = (
    Dependency("torch", "torch", ">=2.1", "everything (comes with ComfyUI)"),
    Dependency("numpy", "numpy", ">=1.24", "everything"),
    Dependency("safetensors", "safetensors", ">=0.4", "loading and saving weights"),
    Dependency("diffusers", "diffusers", ">=0.30", "the Stage-II UNet blocks, VAE and scheduler"),
    Dependency("transformers", "transformers", ">=4.44", "WavLM, wav2vec2 and the CLIP image encoder"),
    Dependency("einops", "einops", ">=0.7", "the video model's frame/token rearrangements"),
    Dependency("cv2", "opencv-python-headless", ">=4.8", "motion-mask blur, pose drawing and detection crops"),
    Dependency("PIL", "Pillow", ">=9.5", "images and the mask pyramid resizes"),
    Dependency("librosa", "librosa", ">=0.10.2", "the Stage-I EDGE audio features"),
    Dependency("soxr", "soxr", ">=0.3.7", "audio resampling"),
    Dependency("scipy", "scipy", ">=1.10", "Stage-I spline smoothing and WAV files"),
    Dependency("av", "av", ">=12.0", "reading and writing audio/video (PyAV)"),
    Dependency("tqdm", "tqdm", ">=4.60", "progress bars"),
    Dependency("onnxruntime", "onnxruntime", ">=1.16", "DWPose reference-pose detection"),
    Dependency("huggingface_hub", "huggingface_hub", ">=0.34", "MMGT Download Models / the download command"),
)

# Extras (pyproject optional-dependencies) and packages only some features import.
OPTIONAL: tuple[Dependency, ...] = (
    Dependency("mediapipe", "mediapipe", "==0.10.21", "the MediaPipe reference-pose fallback (extra 'mediapipe')"),
    Dependency("accelerate", "accelerate", ">=0.30", "training the video model (extra 'training')"),
    Dependency("yaml", "pyyaml", ">=6.0", "training config files (extra 'training')"),
    Dependency("adan_pytorch", "adan-pytorch", "", "the Adan optimizer for SMGA training"),
    Dependency("bitsandbytes", "bitsandbytes", "", "the 8-bit AdamW optimizer for video training (CUDA)"),
    Dependency("psutil", "psutil", "", "the benchmarks' memory numbers where /proc is missing"),
    Dependency("packaging", "packaging", "", "the doctor naming the version conflict behind a failed import"),
)

# What the test suite needs on top of REQUIRED and the training extra (requirements-dev.txt, extra 'dev').
DEV: tuple[Dependency, ...] = (
    Dependency("pytest", "pytest", ">=8.0", "running the tests"),
    Dependency("ruff", "ruff", ">=0.6", "lint"),
    Dependency("onnx", "onnx", ">=1.16", "the tests' tiny DWPose stand-in models"),
    Dependency("soundfile", "soundfile", ">=0.12", "the audio tests' WAV round trips"),
)
TRAINING_EXTRA = ("accelerate", "pyyaml")  # pip names of OPTIONAL entries that form the 'training' extra


def pip_name(module: str) -> str:
    """The pip package that provides the top-level import ``module`` (its own name when not listed)."""
    top = module.split(".")[0]
    return next((d.pip for d in REQUIRED + OPTIONAL + DEV if d.module == top), top)


@dataclass(frozen=True)
class PackageStatus:
    """One line of the doctor's package report."""

    dependency: Dependency
    required: bool
    state: str  # "ok", "missing", "broken" or "outside range"
    version: str
    detail: str

    @property
    def line(self) -> str:
        labels = {"ok": "ok", "missing": "MISSING" if self.required else "absent", "broken": "BROKEN",
                  "outside range": "VERSION"}
        label = labels[self.state]
        text = f"  {label:<8} {self.dependency.pip} {self.version}".rstrip()
        return f"{text}: {self.detail}" if self.detail else text


def _version_key(version: str) -> tuple[int, ...]:
    """Leading numeric release parts: '2.4.6' -> (2, 4, 6), '1.26.4.post1' -> (1, 26, 4), '2.13.0+cpu' -> (2, 13, 0)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def version_in_range(version: str, spec: str) -> bool:
    """Whether ``version`` satisfies a simple comma-separated spec (``>=``, ``<``, ``==``, …); '' = any."""
    compare: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
        ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
    installed = _version_key(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        operator = next(op for op in (">=", "<=", "==", "!=", ">", "<") if clause.startswith(op))
        wanted = _version_key(clause[len(operator):].strip())
        width = max(len(installed), len(wanted))
        if not compare[operator](installed + (0,) * (width - len(installed)), wanted + (0,) * (width - len(wanted))):
            return False
    return True


def _installed_version(pip_name: str) -> str | None:
    try:
        return metadata.version(pip_name)
    except metadata.PackageNotFoundError:
        return None


def _distribution_of(module: str, fallback: str) -> str:
    """The installed distribution providing ``module`` (e.g. cv2 from opencv-python instead of -headless)."""
    try:
        names = metadata.packages_distributions().get(module, [])
    except Exception:  # a broken metadata entry must not break the doctor
        names = []
    return names[0] if names else fallback


def _unmet_requirements(distribution: str) -> list[str]:
    """Requirements of an installed distribution that the installed versions do not meet, as readable phrases."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging comes with transformers/diffusers; without it we only report the error
        return []
    unmet = []
    for text in metadata.requires(distribution) or []:
        try:
            requirement = Requirement(text)
        except Exception:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        installed = _installed_version(requirement.name)
        if installed is not None and not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{distribution} {_installed_version(distribution)} needs {requirement.name}"
                         f"{requirement.specifier}, but {requirement.name} {installed} is installed")
    return unmet


def _mentioned_known_packages(message: str, known: tuple[Dependency, ...]) -> list[str]:
    """Our packages named in an import error (numpy for '_ARRAY_API not found' / 'compiled using NumPy 1.x')."""
    lowered = message.lower()
    named = [d.pip for d in known if re.search(rf"\b{re.escape(d.module.lower())}\b", lowered)]
    if ("_array_api" in lowered or "multiarray" in lowered) and "numpy" not in named:
        named.append("numpy")  # the messages of a binary built against another numpy major version
    return named


def _broken_detail(dependency: Dependency, error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    reasons = _unmet_requirements(_distribution_of(dependency.module, dependency.pip))
    ranges = {d.pip: d for d in REQUIRED + OPTIONAL + DEV}
    for name in _mentioned_known_packages(f"{error} {error.__cause__ or ''}", REQUIRED):
        if name != dependency.pip:
            reasons.append(f"the error names {name} {_installed_version(name) or '(not installed)'}; MMGT works "
                           f"with {ranges[name].requirement} and an {dependency.pip} built for that version")
    why = "; ".join(reasons) if reasons else "another installed package probably has an incompatible version"
    return (f"import {dependency.module} fails ({type(error).__name__}: {first_line}). {why}. Works: "
            f"{dependency.requirement} with the other packages in requirements.txt (constraints-ci.txt lists a "
            f"tested set). Fix: pip install --upgrade --force-reinstall {dependency.pip} "
            f"-r requirements.txt")


def check_dependency(dependency: Dependency, required: bool,
                     importer: Callable[[str], ModuleType] | None = None) -> PackageStatus:
    """Import one package (with ``importer``, default importlib.import_module) and classify it; never raises."""
    version = _installed_version(_distribution_of(dependency.module, dependency.pip)) or ""
    try:
        module = (importer or importlib.import_module)(dependency.module)
    except Exception as error:  # also AttributeError/RuntimeError from a binary built for another numpy, etc.
        if isinstance(error, ModuleNotFoundError) and error.name == dependency.module:
            fix = f"pip install \"{dependency.requirement}\""
            detail = (f"not installed; needed for {dependency.enables}. Fix: {fix}" if required else
                      f"optional, not installed; it enables {dependency.enables}. To use that: {fix}")
            return PackageStatus(dependency, required, "missing", "", detail)
        return PackageStatus(dependency, required, "broken", version, _broken_detail(dependency, error))
    version = version or str(getattr(module, "__version__", ""))
    if version and not version_in_range(version, dependency.spec):
        return PackageStatus(dependency, required, "outside range", version,
                             f"MMGT needs {dependency.requirement}. Fix: pip install \"{dependency.requirement}\"")
    return PackageStatus(dependency, required, "ok", version, "")


def check_dependencies(importer: Callable[[str], ModuleType] | None = None
                       ) -> tuple[list[PackageStatus], list[PackageStatus]]:
    """(required, optional) package statuses, in declaration order."""
    return ([check_dependency(d, True, importer) for d in REQUIRED],
            [check_dependency(d, False, importer) for d in OPTIONAL])
