"""Checked argument types for the ``londi-jax`` commands: every numeric option is parsed and
range-checked by argparse when the command line is read, before any work starts.

Each factory returns an argparse ``type=`` callable built on :mod:`londi_jax.utils.fields`
(the same parsing and rules as the typed configs): ``float`` values must be finite (``nan`` and
``inf`` are refused), ``int`` values must be whole numbers. A bad value ends the command with
argparse's one-line ``error: argument --x: expected an int >= 1, got '0'`` and exit status 2.

Standard library only (imported when the parser is built, so ``--help`` stays fast).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from londi_jax.utils.errors import LondiError
from londi_jax.utils.fields import ConfigFieldError, Rule, above, at_least, conform, describe, within

__all__ = ["checked", "count", "nonneg_int", "seed", "nonneg_float", "pos_float", "unit_interval",
           "open_unit_interval", "mesh_shape", "add_mesh_flag", "check_writable_file", "check_new_dir_parent", "HelpFormatter", "LondiParser"]


def checked(tp: type, *rules: Rule) -> Callable[[str], Any]:
    """An argparse ``type=``: parse the text as ``tp`` (``int`` or finite ``float``) and check
    ``rules``; a failure raises ``argparse.ArgumentTypeError`` naming what was expected."""

    expected = " and ".join([describe(tp) + (f" {rules[0].desc}" if rules else ""), *(r.desc for r in rules[1:])])

    def parse(text: str) -> Any:
        try:
            value = conform(text, tp, "", parse=True)
            for rule in rules:
                rule.check(value, "", tp)
        except ConfigFieldError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        return value

    parse.__name__ = tp.__name__  # argparse names the type in some messages
    return parse


def count(lo: int = 1) -> Callable[[str], int]:
    """A whole number ``>= lo`` (counts: episodes, seeds, updates, tokens)."""
    return checked(int, at_least(lo))


nonneg_int = checked(int, at_least(0))  # budgets, indices
seed = checked(int, at_least(0), Rule("below 2**63", lambda v: v < 2**63))  # random seeds (numpy and minigrid
# refuse negative ones; JAX keys take 64-bit ones)
nonneg_float = checked(float, at_least(0))  # costs, temperatures
pos_float = checked(float, above(0))  # learning rates
unit_interval = checked(float, within(0.0, 1.0))  # probabilities, rates
open_unit_interval = checked(float, Rule("in (0, 1]", lambda v: 0.0 < v <= 1.0))  # top-p


def mesh_shape(text: str) -> dict[str, int]:
    """``--mesh data=4,model=2``: axis names and sizes checked when the command line is read (the
    device count is checked when the mesh is built, ``utils.mesh.make_mesh``)."""
    from londi_jax.utils.mesh import parse_mesh  # imports JAX: only when the flag is given

    try:
        return parse_mesh(text)
    except LondiError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_mesh_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--mesh`` option shared by every command that shards work over devices."""
    parser.add_argument("--mesh", type=mesh_shape, default=None, metavar="AXIS=N[,AXIS=N]",
                        help="device mesh: data shards sweep members and batches, fsdp / model shard "
                             "LM parameters; one size may be -1 (the rest); e.g. data=8 or data=4,model=2 "
                             "(default: every visible device on data)")


def check_writable_file(path: str | os.PathLike, flag: str) -> Path:
    """Fail early (``LondiError``) when ``path`` cannot be written: its folder is missing or not
    writable, or it is a directory. Call before long work whose result goes to ``path``."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise LondiError(f"{flag} {p} is a directory; give a file path")
    if not parent.is_dir():
        raise LondiError(f"{flag} {p}: folder {parent} does not exist; create it or pick another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise LondiError(f"{flag} {p} is not writable; pick another path")
    try:  # permissions can say yes where a file cannot be made (root in /proc, a read-only mount)
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as err:
        raise LondiError(f"{flag} {p}: no file can be written in {parent} ({err.strerror}); pick another path") from None
    return p


def check_new_dir_parent(path: str | os.PathLike, flag: str) -> Path:
    """Fail early (``LondiError``) when directory ``path`` can neither be used nor created: it is
    a file, or its nearest existing ancestor is not a writable folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise LondiError(f"{flag} {p} is a file; give a directory")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise LondiError(f"{flag} {p}: {probe} is a file, so the folder cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LondiError(f"{flag} {p}: {probe} is not writable; pick another directory")
    return p


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default value.

    The default is added unless the help already mentions one, the option is a flag
    (``store_true``) or its default is ``None`` (whose meaning the help text says)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or not action.option_strings or default is None
                or default is argparse.SUPPRESS or isinstance(default, bool)):
            return text
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(v) for v in default) if default else "none"
            return f"{text} (default: {shown.replace('%', '%%')})"
        return text + " (default: %(default)s)"


class LondiParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose help shows defaults (``HelpFormatter``); sub-command parsers
    created from it inherit the class, so every ``londi-jax`` command formats help alike."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
