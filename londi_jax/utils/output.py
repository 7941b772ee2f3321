"""One way for every command to print results: human text, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Give a command the project-wide ``--json`` flag."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy / jax arrays
        return np.asarray(obj).tolist()
    return obj


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], str]) -> None:
    """Print ``result`` as JSON (``as_json``) or as the text ``render(result)`` returns."""
    if as_json:
        sys.stdout.write(json.dumps(_to_jsonable(result), indent=2) + "\n")
    else:
        sys.stdout.write(render(result).rstrip("\n") + "\n")
