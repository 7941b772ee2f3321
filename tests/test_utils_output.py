"""One JSON converter for CLI output, checkpoint metadata and the experiment report."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from londi_jax.utils.output import to_jsonable


@dataclasses.dataclass(frozen=True)
class _Cfg:
    name: str
    hidden: tuple[int, ...]


class _HP(NamedTuple):
    lr: float
    steps: int


def test_structures_scalars_and_arrays():
    obj = {"cfg": _Cfg("x", (4, 8)), "hp": _HP(np.float32(0.5), np.int64(3)), 1: [jnp.arange(3), np.eye(2)],
           "flag": np.bool_(True), "key": jax.random.key(7), "fn": len}
    out = to_jsonable(obj)
    assert out == {"cfg": {"name": "x", "hidden": [4, 8]}, "hp": {"lr": 0.5, "steps": 3}, "1": [[0, 1, 2],
                   [[1.0, 0.0], [0.0, 1.0]]], "flag": True, "key": np.asarray(jax.random.key_data(jax.random.key(7))).tolist(),
                   "fn": repr(len)}
    json.dumps(out)  # plain JSON data all the way down


def test_finite_turns_nan_and_inf_into_none_only_when_asked():
    obj = {"a": math.nan, "b": [np.float64(np.inf), 1.5], "c": np.array([1.0, np.nan])}
    assert to_jsonable(obj, finite=True) == {"a": None, "b": [None, 1.5], "c": [1.0, None]}
    kept = to_jsonable(obj)
    assert math.isnan(kept["a"]) and kept["b"][0] == math.inf and math.isnan(kept["c"][1])
    json.dumps(to_jsonable(obj, finite=True), allow_nan=False)
