"""``python -m mmgt_core doctor``: what is installed, which model files are found or missing, and a smoke run."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .dependencies import check_dependencies
from .models_table import MODEL_FILES, MODES


def _model_report(roots: list[Path]) -> tuple[list[str], dict[str, bool]]:
    lines = []
    ready = {mode: True for mode in MODES}
    for model in MODEL_FILES:
        found = model.find(roots)
        if found is None:
            for mode in model.modes:
                ready[mode] = False
        status = f"found    {found}" if found else f"MISSING  put it at models/mmgt/{model.path}"
        lines.append(f"  {status}\n           {model.what}; {model.size}; from {model.source}; "
                     f"licence {model.licence}; needed for {', '.join(model.modes)}")
    return lines, ready


def install_report(models: Path) -> str:
    """Packages, every model file each mode needs (found or missing, where it goes), and which modes are ready:
    the table both ``doctor`` and the MMGT Doctor node show."""
    required, optional = check_dependencies()  # one line per package; the optional ones say what each enables
    lines = ["ComfyUI-MMGT doctor", "", "Packages:", *(status.line for status in required), "  optional:",
             *(status.line for status in optional)]
    if models.is_dir():
        model_lines, ready = _model_report([models])
        lines += ["", f"Model files (folder: {models.resolve()}):", *model_lines]
    else:
        ready = {mode: False for mode in MODES}
        lines += ["", f"Model folder {models.resolve()} does not exist. Create it (ComfyUI/models/mmgt), pass "
                      "--models with the right folder, or run `python -m mmgt_core download --models <folder>`."]
    lines += ["", "Modes:", *(f"  {'ready   ' if ok else 'not yet '} {mode}" for mode, ok in ready.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmgt_core doctor",
        description="Checks the install: packages, every model file each mode needs (found or missing, where it "
                    "goes, size and source), then runs the whole pipeline once on tiny random weights.")
    parser.add_argument("--models", default=os.environ.get("MMGT_MODELS_DIR", "models/mmgt"),
                        help="the MMGT model folder (ComfyUI/models/mmgt); default: $MMGT_MODELS_DIR or models/mmgt")
    parser.add_argument("--no-smoke", action="store_true", help="skip the smoke run on tiny random weights")
    args = parser.parse_args(argv)
    print(install_report(Path(args.models)))
    if args.no_smoke:
        return 0
    from . import smoke

    print("\nSmoke run on tiny random weights (proves the code paths work; the output is noise):")
    failures = 0
    for name, step in smoke.steps():
        started = time.perf_counter()
        try:
            summary = step()
            print(f"  ok    {name:<34} {time.perf_counter() - started:6.2f} s  {summary}")
        except Exception as exc:  # report every failing step, keep going
            failures += 1
            print(f"  FAIL  {name:<34} {type(exc).__name__}: {exc}")
    print("\nAll smoke steps passed." if not failures else f"\n{failures} smoke step(s) failed.")
    return 1 if failures else 0
