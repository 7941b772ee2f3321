"""Training-loop structure: chunked == whole run bit-exactly, budget cap during training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from londi_jax.switcher import toy
from londi_jax.switcher.config import HParams, SwitcherConfig
from londi_jax.switcher.train import TrainState, make_train
from londi_jax.utils.errors import LondiError

TINY = {
    "dqn": dict(learner="dqn", num_envs=4, hidden=(8,), num_updates=24, buffer_size=64,
                batch_size=8, learning_starts=8, updates_per_step=2),
    "pqn": dict(learner="pqn", num_envs=4, hidden=(8,), layer_norm=True, num_updates=6,
                rollout_len=4, num_epochs=2, num_minibatches=2),
}


_CACHE = {}


def _trainer(learner):
    """One trainer and one jitted ``train`` per learner, shared by the tests (one compile)."""
    if learner not in _CACHE:
        env = toy.ToyEnv()
        cfg = SwitcherConfig(obs_dim=env.obs_dim, use_budget=True, **TINY[learner])
        tr = make_train(cfg, env, env.default_params(max_steps=8))
        _CACHE[learner] = (tr, jax.jit(tr.train))
    return _CACHE[learner]


@pytest.mark.parametrize("learner", ["dqn", "pqn"])
def test_chunked_training_is_bit_exact(learner):
    tr, train = _trainer(learner)
    hp = HParams.create(c=0.1, budget=2, target_period=5)
    rng = jax.random.key(0)
    full = train(rng, hp)
    chunk = jax.jit(tr.train_chunk, static_argnums=2)
    ts = jax.jit(tr.init_train_state)(rng, hp)
    n = tr.config.num_updates
    ts, m1 = chunk(ts, hp, n // 2)
    ts, m2 = chunk(ts, hp, n // 2)
    assert isinstance(ts, TrainState)
    for a, b in zip(jax.tree.leaves(full["train_state"]), jax.tree.leaves(ts)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(full["metrics"]["loss"],
                                  np.concatenate([m1["loss"], m2["loss"]]))
    assert int(ts.update) == n
    assert float(jnp.abs(full["metrics"]["loss"]).sum()) > 0  # it did learn something


@pytest.mark.parametrize("learner", ["dqn", "pqn"])
def test_budget_holds_during_training_even_with_random_switching(learner):
    """eps = 1 throughout: exploration picks g uniformly among admissible switches only."""
    _, train = _trainer(learner)
    hp = HParams.create(budget=1, eps_start=1.0, eps_end=1.0)
    out = train(jax.random.key(1), hp)
    m = out["metrics"]
    assert int(m["episodes"].sum()) > 10
    assert int(m["calls_sum"].sum()) > 0          # DEEPTHINK was called ...
    assert int(m["violations"].sum()) == 0        # ... never more than once per episode
    assert int(out["train_state"].budget.min()) >= 0


def test_mismatched_obs_dim_is_a_clear_error():
    env = toy.ToyEnv()
    with pytest.raises(LondiError, match="obs_dim=8"):
        make_train(SwitcherConfig(obs_dim=3), env, env.default_params())
