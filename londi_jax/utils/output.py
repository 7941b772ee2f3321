"""One way for every command to print results: human text, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Give a command the project-wide ``--json`` flag."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def to_jsonable(obj: Any, *, finite: bool = False) -> Any:
    """JSON data from configs and results: dataclasses, NamedTuples, mappings, sequences, numpy
    and jax scalars and arrays (PRNG keys as their key data); anything else by its ``repr``.
    ``finite``: NaN and infinities become ``None`` (strict JSON has neither)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name), finite=finite) for f in dataclasses.fields(obj)}
    if hasattr(obj, "_asdict"):  # NamedTuple
        return {k: to_jsonable(v, finite=finite) for k, v in obj._asdict().items()}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, finite=finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, finite=finite) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    elif hasattr(obj, "dtype") and hasattr(obj, "shape"):  # numpy / jax arrays
        import jax  # only when given a jax/numpy array: keeps this module light to import

        if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
            obj = jax.random.key_data(obj)
        data = np.asarray(obj).tolist()
        return to_jsonable(data, finite=True) if finite else data
    if isinstance(obj, float) and finite and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)  # enums, callables, ...: compared by their repr


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """Print ``result`` as JSON (``as_json``) or as the text ``render(result)`` returns; on a
    multi-process run only process 0 prints (``utils.distributed``)."""
    from londi_jax.utils.distributed import is_main_process

    if not is_main_process():
        return
    if as_json:
        sys.stdout.write(json.dumps(to_jsonable(result), indent=2) + "\n")
    else:
        sys.stdout.write(render(result).rstrip("\n") + "\n")
