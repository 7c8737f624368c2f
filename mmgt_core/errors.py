"""Exceptions that carry messages written for people, not tracebacks."""

from __future__ import annotations


class MMGTError(Exception):
    """Base class of every error this pack raises on purpose."""


class InputError(MMGTError, ValueError):
    """Bad user input: says which input, what is wrong with it, and how to fix it."""

    def __init__(self, input_name: str, problem: str, fix: str = "") -> None:
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        message = f"input '{input_name}': {problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class WeightsError(MMGTError):
    """A weight file is missing, unsafe, of the wrong component, or does not match the model."""


class Cancelled(MMGTError):
    """The user cancelled a long operation (raised by a host's cancel check)."""
