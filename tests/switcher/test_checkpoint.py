"""Checkpoint store on arbitrary pytrees: round trip, keep-last-k, atomicity, mismatch errors,
and the generic resumable loop interrupted and resumed bit-for-bit."""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from londi_jax.switcher.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointStore,
    run_resumable,
    tree_signature,
)
from londi_jax.utils.errors import LondiError


class Inner(NamedTuple):
    w: jax.Array
    count: jax.Array


def _tree(seed: int = 0, width: int = 5):
    key = jax.random.key(seed)
    k1, k2 = jax.random.split(key)
    return {
        "params": Inner(w=jax.random.normal(k1, (3, width)), count=jnp.int32(7)),
        "half": jax.random.normal(k2, (4,)).astype(jnp.bfloat16),
        "flags": jnp.array([True, False, True]),
        "rng": jax.random.key(seed + 11),  # typed PRNG key
        "raw_rng": jax.random.PRNGKey(3),  # legacy uint32 key
    }


def _assert_bitwise_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jnp.issubdtype(y.dtype, jax.dtypes.prng_key)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.atleast_1d(np.asarray(x)).view(np.uint8), np.atleast_1d(np.asarray(y)).view(np.uint8))


def test_round_trip_preserves_every_leaf_bitwise(tmp_path):
    tree = _tree()
    with CheckpointStore(tmp_path / "ck") as store:
        store.save(5, tree, kind="unit", config={"width": 5}, hparams={"lr": 0.1}, extra={"note": "x"})
        assert store.all_steps() == [5]
        like = jax.eval_shape(lambda: _tree())
        restored, meta = store.restore(like, kind="unit", config={"width": 5}, hparams={"lr": 0.1})
    _assert_bitwise_equal(tree, restored)
    assert meta["step"] == 5 and meta["extra"] == {"note": "x"}
    assert meta["config"] == {"width": 5}
    # the typed key still works as a key after the round trip
    np.testing.assert_array_equal(
        jax.random.uniform(tree["rng"], (3,)), jax.random.uniform(restored["rng"], (3,))
    )


def test_keeps_only_last_k_and_ignores_partial_saves(tmp_path):
    d = tmp_path / "ck"
    with CheckpointStore(d, keep=2) as store:
        for step in (1, 2, 3, 4):
            store.save(step, _tree(step), kind="unit")
        assert store.all_steps() == [3, 4]
    # a save killed mid-way leaves orbax's tmp dir; it must not count as a checkpoint
    os.makedirs(d / "9.orbax-checkpoint-tmp-1234" / "state")
    with CheckpointStore(d, keep=2) as store:
        assert store.latest_step() == 4
        restored, _ = store.restore(_tree(), kind="unit")
    _assert_bitwise_equal(restored, _tree(4))


def test_mismatched_config_names_the_fields(tmp_path):
    with CheckpointStore(tmp_path / "ck") as store:
        store.save(1, _tree(), kind="switcher/dqn", config={"hidden": [64, 64], "obs_dim": 4},
                   hparams={"lr": [0.1, 0.2]})
        with pytest.raises(CheckpointMismatchError, match=r"config\.hidden: checkpoint has \[64, 64\], requested \[32, 32\]"):
            store.restore(_tree(), config={"hidden": [32, 32], "obs_dim": 4})
        with pytest.raises(CheckpointMismatchError, match=r"kind \(learner\).*'switcher/dqn'.*'switcher/pqn'"):
            store.restore(_tree(), kind="switcher/pqn")
        with pytest.raises(CheckpointMismatchError, match=r"hparams\.lr: checkpoint has shape \[2\] \(sweep of 2\), requested shape \[3\] \(sweep of 3\)"):
            store.restore(_tree(), hparams={"lr": [0.1, 0.2, 0.3]})
        # config given as equal but the state layout differs: the leaf is named
        with pytest.raises(CheckpointMismatchError, match=r"\['params'\]\.w: checkpoint has float32\[3, 5\], requested float32\[3, 6\]"):
            store.restore(_tree(width=6))
        # hparams check can be switched off (e.g. deliberately continuing with a new lr)
        restored, _ = store.restore(_tree(), hparams={"lr": [0.5, 0.5]}, check_hparams=False)
        _assert_bitwise_equal(restored, _tree())


def test_errors_are_londi_errors(tmp_path):
    with CheckpointStore(tmp_path / "empty") as store:
        assert store.latest_step() is None
        with pytest.raises(CheckpointError, match="no complete checkpoint"):
            store.restore(_tree())
        store.save(2, _tree(), kind="unit")
        with pytest.raises(CheckpointError, match=r"available steps: \[2\]"):
            store.restore(_tree(), step=3)
    with pytest.raises(LondiError, match="keep must be >= 1"):
        CheckpointStore(tmp_path / "x", keep=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(LondiError, match="not a directory"):
        CheckpointStore(tmp_path / "file")


def test_signature_lists_paths_shapes_dtypes():
    sig = tree_signature({"a": jnp.zeros((2, 3), jnp.float32), "b": [jnp.int32(1)]})
    assert sig == {"['a']": "float32[2, 3]", "['b'][0]": "int32[]"}


# ----------------------------------------------------------------------------- resumable loop


@jax.jit
def _noisy_chunk_step(state):
    key, sub = jax.random.split(state["rng"])
    w = state["w"] * 0.99 + 0.1 * jax.random.normal(sub, state["w"].shape)
    return {"rng": key, "w": w, "t": state["t"] + 1}


def _chunk(state, n):
    for _ in range(n):
        state = _noisy_chunk_step(state)
    return state


def _init():
    return {"rng": jax.random.key(42), "w": jnp.zeros((4, 3)), "t": jnp.int32(0)}


class _Stop(Exception):
    pass


def test_run_resumable_interrupted_then_resumed_is_bitwise_identical(tmp_path):
    kw = dict(every_updates=3, total_updates=10, kind="unit", config={"a": 1}, progress=False)
    with CheckpointStore(tmp_path / "full") as store:
        full, resumed_from = run_resumable(store, _init, _chunk, **kw)
        assert resumed_from == 0 and store.all_steps() == [6, 9, 10]

    def stop_at_6(step, _state):
        if step == 6:
            raise _Stop

    with CheckpointStore(tmp_path / "cut") as store:
        with pytest.raises(_Stop):
            run_resumable(store, _init, _chunk, on_checkpoint=stop_at_6, **kw)
        assert store.latest_step() == 6
    with CheckpointStore(tmp_path / "cut") as store:
        resumed, resumed_from = run_resumable(store, _init, _chunk, **kw)
    assert resumed_from == 6
    assert int(resumed["t"]) == 10
    _assert_bitwise_equal(full, resumed)
    # a resumed run with another config is refused with the difference named
    with CheckpointStore(tmp_path / "cut") as store:
        with pytest.raises(CheckpointMismatchError, match=r"config\.a"):
            run_resumable(store, _init, _chunk, **{**kw, "config": {"a": 2}, "total_updates": 12})


def test_async_save_round_trip(tmp_path):
    tree = _tree(5)
    with CheckpointStore(tmp_path / "ck", async_save=True) as store:
        store.save(1, tree, kind="unit")
        store.wait()
        assert store.all_steps() == [1]
        restored, _ = store.restore(_tree(), kind="unit")
    _assert_bitwise_equal(tree, restored)
