"""pqn.shuffle_indices: a valid, uniformly distributed permutation (fixed keys: deterministic)."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from londi_jax.switcher.pqn import shuffle_indices


@pytest.mark.parametrize("n", [1, 2, 5, 64, 128, 1000, 70_000])
def test_is_a_permutation(n):
    for i in range(3):
        p = np.asarray(shuffle_indices(jax.random.key(i), n))
        assert p.dtype == np.int32 and p.shape == (n,)
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    if n >= 5:
        assert not np.array_equal(p, np.arange(n))


def _chi2(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_all_24_orders_of_4_equally_likely():
    draws = np.asarray(jax.jit(jax.vmap(lambda k: shuffle_indices(k, 4)))(
        jax.random.split(jax.random.key(0), 24_000)))
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(d)] for d in draws], minlength=24)
    assert _chi2(counts) < 49.7  # chi-square, 23 dof, 99.9% quantile


def test_positions_uniform_at_n_128():
    draws = np.asarray(jax.jit(jax.vmap(lambda k: shuffle_indices(k, 128)))(
        jax.random.split(jax.random.key(1), 12_800)))
    for item in (0, 77, 127):  # where a given item lands: uniform over the 128 slots
        counts = np.bincount(np.argmax(draws == item, axis=1), minlength=128)
        assert _chi2(counts) < 181.0  # chi-square, 127 dof, 99.9% quantile
