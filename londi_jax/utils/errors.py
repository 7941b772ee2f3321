"""Errors that tell the user what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable


class LondiError(Exception):
    """Base class for every user-facing error; the CLI prints these without a traceback."""


class UnknownNameError(LondiError, KeyError):
    """A name (model, level, task, ...) that is not known; the message lists the known ones."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "", plural: str | None = None):
        known = sorted(known)
        plural = plural or (kind[:-2] + "es" if kind.endswith("is") else kind + "s")  # axis -> axes
        msg = f"unknown {kind} {name!r}; known {plural}: {', '.join(known)}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]
