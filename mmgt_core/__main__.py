"""Command line: ``python -m mmgt_core {convert,bench,generate,doctor} ...``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

EXIT_SIGINT = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_SIGTERM = 143  # 128 + SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that every ``finally`` cleans up."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _convert(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .convert import convert_checkpoint

    video_config = json.loads(Path(args.video_config).read_text()) if args.video_config else None
    component, config = convert_checkpoint(args.input, args.output, video_config)
    print(f"wrote {args.output}: component={component} config={config}")
    return 0


BENCH_MODULES = {"smga": ".smga.bench", "video": ".video.bench", "length": ".video.length_bench"}


def _run_module(module_name: str, args: argparse.Namespace) -> int:
    return int(importlib.import_module(module_name, __package__).main(args.rest) or 0)


def _delegate(module_name: str):
    return lambda args: _run_module(f".{module_name}", args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mmgt_core", description="ComfyUI-MMGT command line tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="rewrite an official checkpoint (.pt/.pth) as safetensors with "
                                             "metadata (component, config, source)")
    convert.add_argument("input", help="official checkpoint: audio2pose_best_model.pt, net-*.pth or WavLM-Large.pt")
    convert.add_argument("output", help="the .safetensors file to write")
    convert.add_argument("--video-config", help="JSON of a VideoNetConfig for a non-SD1.5-size video net "
                                                "(default: the released SD1.5 sizes)")
    convert.set_defaults(func=_convert)
    bench = sub.add_parser("bench", add_help=False,
                           help="benchmarks: 'smga' (Stage I), 'video' (Stage II) or 'length' (the audio→video node "
                                "chain on 10 s to 10 min of speech); --help after the target lists their options")
    bench.add_argument("target", choices=sorted(BENCH_MODULES))
    bench.set_defaults(func=lambda args: _run_module(BENCH_MODULES[args.target], args))
    for name, help_text in (("generate", "image + audio (or pose) → mp4 with sound, headless"),
                            ("doctor", "list the model files each mode needs and smoke-test the install")):
        command = sub.add_parser(name, help=help_text, add_help=False)
        command.set_defaults(func=_delegate(f"cli_{name}"))
    sub.add_parser("download", add_help=False, help="fetch the missing model files of a mode from their public "
                   "sources (--mode audio2video|pose2video|audio2pose|all, --models DIR)"
                   ).set_defaults(func=_delegate("download"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command == "convert":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    cancelled = "cancelled; nothing written" if args.command == "generate" else "cancelled"
    try:
        with _sigterm_raises():
            return args.func(args)
    except (KeyboardInterrupt, Terminated) as stop:
        print(cancelled, file=sys.stderr)
        return EXIT_SIGINT if isinstance(stop, KeyboardInterrupt) else EXIT_SIGTERM
    except Exception as exc:  # print errors for people, not tracebacks
        from .errors import MMGTError

        if isinstance(exc, MMGTError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
