"""Typed configuration fields: check (and, for command-line strings, parse) a value against a
dataclass field's annotation, plus small value rules (``>= 1``, ``in [0, 1]``, ``one of ...``).

Frozen config dataclasses call :func:`check_fields` in ``__post_init__``, so every way a config
is built (presets, ``dataclasses.replace``, overrides, a stored ``config.json``, tyro) is checked
the moment it is built, before any work. Supported annotations: ``int``, ``float`` (finite),
``bool``, ``str``, ``X | None``, ``Literal[...]``, ``tuple[X, ...]``, fixed ``tuple[X, Y]``,
nested dataclasses; anything else passes unchecked.

Standard library only (imported by every layer).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

from londi_jax.utils.errors import LondiError

__all__ = ["ConfigFieldError", "Rule", "conform", "describe", "check_fields", "at_least", "above", "within",
           "one_of", "each", "NONEMPTY", "INCREASING"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class ConfigFieldError(LondiError, ValueError):
    """A config field given a value of the wrong type or out of range.

    The message names the field (dotted path), what it expects and the value it got, e.g.
    ``invalid value for eval.episodes: expected an int >= 1, got 'abc'``.
    """

    def __init__(self, field: str, expected: str, value: Any):
        self.field, self.expected, self.value = field, expected, value
        super().__init__(f"invalid value for {field}: expected {expected}, got {value!r}")

    def within(self, prefix: str) -> ConfigFieldError:
        """The same error with the field named from an enclosing config (``prefix`` + field)."""
        return ConfigFieldError(f"{prefix}{self.field}", self.expected, self.value) if prefix else self


# ----------------------------------------------------------------------------- types
def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def describe(tp: Any) -> str:
    """Human words for an annotation: ``an int``, ``a tuple of floats``, ``a string or None``."""
    if _is_union(tp):
        args = typing.get_args(tp)
        words = [describe(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or None" if type(None) in args else "")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_plural(args[0])}"
        return f"a tuple ({', '.join(describe(a) for a in args)})"
    if dataclasses.is_dataclass(tp):
        return f"a {tp.__name__}"
    return {int: "an int", float: "a finite float", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _plural(tp: Any) -> str:
    return {int: "ints", float: "finite floats", bool: "booleans", str: "strings"}.get(tp, describe(tp))


def _split_sequence(text: str, element: Any) -> list[Any]:
    """``"0.1,0.2"``, ``"(0.1, 0.2)"``, ``"[1, 2]"``, ``"goto,pickup"`` -> items (strings kept as text)."""
    s = text.strip()
    if element is not str:
        try:
            v = ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
        else:
            return list(v) if isinstance(v, (list, tuple)) else [v]
    if s[:1] in "([" and s[-1:] in ")]":
        s = s[1:-1]
    return [p.strip().strip("'\"") for p in s.split(",") if p.strip()]


def conform(value: Any, tp: Any, field: str, parse: bool = False) -> Any:
    """``value`` checked against annotation ``tp`` (and normalised: lists -> tuples, ints ->
    floats for float fields, numpy scalars -> Python). ``parse``: strings are parsed as the
    field's type (command-line overrides: ``"32"`` -> 32, ``"0.1,0.2"`` -> (0.1, 0.2),
    ``"none"`` -> None, ``"false"`` -> False). Raises :class:`ConfigFieldError`."""
    if tp is Any:
        return value
    fail = ConfigFieldError(field, describe(tp), value)
    if _is_union(tp):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (parse and isinstance(value, str)
                                                      and value.strip().lower() in ("none", "null"))):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return conform(value, a, field, parse)
            except ConfigFieldError:
                continue
        raise fail
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
            if parse and isinstance(value, str) and value.strip() == str(a):
                return a
        raise fail
    if origin is tuple:
        items = value
        if parse and isinstance(value, str):
            items = _split_sequence(value, args[0] if args else str)
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise fail
        variadic = len(args) == 2 and args[1] is Ellipsis
        if not variadic and args and len(items) != len(args):
            raise fail
        kinds = [args[0]] * len(items) if variadic else list(args or [Any] * len(items))
        try:
            return tuple(conform(v, t, field, parse) for v, t in zip(items, kinds))
        except ConfigFieldError:
            raise fail from None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return build(tp, value, prefix=f"{field}.", parse=parse)
        raise fail
    if tp is bool:
        if type(value).__name__ in ("bool", "bool_"):
            return bool(value)
        if parse and isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise fail
    if tp is int:
        if isinstance(value, numbers.Integral) and type(value).__name__ not in ("bool", "bool_"):
            return int(value)
        if parse and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise fail
    if tp is float:
        out = None
        if isinstance(value, numbers.Real) and type(value).__name__ not in ("bool", "bool_"):
            out = float(value)
        elif parse and isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                pass
        if out is None or not math.isfinite(out):
            raise fail
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail
    return value


# ----------------------------------------------------------------------------- rules
@dataclasses.dataclass(frozen=True)
class Rule:
    """A value rule: ``desc`` completes "expected <type> <desc>" (or replaces the type words
    when ``replaces_type``), ``ok(value)`` says whether the value passes."""

    desc: str
    ok: Callable[[Any], bool]
    replaces_type: bool = False

    def check(self, value: Any, field: str, tp: Any) -> None:
        if value is None:  # optional fields: None passed the type check already
            return
        if not self.ok(value):
            raise ConfigFieldError(field, self.desc if self.replaces_type else f"{describe(tp)} {self.desc}", value)


def at_least(lo: float) -> Rule:
    return Rule(f">= {lo:g}", lambda v: v >= lo)


def above(lo: float) -> Rule:
    return Rule(f"> {lo:g}", lambda v: v > lo)


def within(lo: float, hi: float) -> Rule:
    return Rule(f"in [{lo:g}, {hi:g}]", lambda v: lo <= v <= hi)


def one_of(choices: Sequence[Any], kind: str | None = None) -> Rule:
    """The value must be one of ``choices`` (named "a known <kind>" in the message when given)."""
    choices = tuple(choices)
    listed = ", ".join(repr(c) for c in choices)
    desc = f"a known {kind} ({listed})" if kind else f"one of {listed}"
    return Rule(desc, lambda v: v in choices, replaces_type=True)


def each(rule: Rule) -> Rule:
    words = rule.desc if not rule.replaces_type else f"being {rule.desc}"
    return Rule(f"with every item {words}", lambda v: all(rule.ok(x) for x in v))


NONEMPTY = Rule("with at least one item", lambda v: len(v) > 0)
INCREASING = Rule("in strictly increasing order", lambda v: all(a < b for a, b in zip(v, v[1:])))


# ----------------------------------------------------------------------------- dataclasses
@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_type(cls: type, name: str) -> Any:
    """The resolved annotation of field ``name`` of dataclass ``cls``."""
    return _hints(cls)[name]


def check_fields(obj: Any, rules: Mapping[str, Sequence[Rule]] | None = None) -> None:
    """Check every field of the (frozen) dataclass ``obj`` against its annotation, normalising
    in place (lists -> tuples, ints -> floats), then the value ``rules`` per field name.
    Call from ``__post_init__``. Raises :class:`ConfigFieldError` naming the field."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = conform(value, hints[f.name], f.name)
        if new is not value:
            object.__setattr__(obj, f.name, new)
    for name, checks in (rules or {}).items():
        for rule in checks:
            rule.check(getattr(obj, name), name, hints[name])


def build(cls: type, values: Mapping[str, Any], prefix: str = "", parse: bool = False) -> Any:
    """``cls(**values)`` with every value conformed first; errors name ``prefix + field``.
    Keys that are not fields of ``cls`` are ignored (stored configs of older versions)."""
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = conform(values[f.name], hints[f.name], f"{prefix}{f.name}", parse)
    try:
        return cls(**kwargs)
    except ConfigFieldError as err:
        raise err.within(prefix) from None
