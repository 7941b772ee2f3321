"""Update rules vs rlax's reference TD functions, and LONDI-B masking invariants.

chex checks what numpy cannot: whole pytrees against the reference, shapes, finiteness, and that
sweeping traced hyperparameters (c, gamma, lambda, lr) never retraces an update rule.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from londi_jax.switcher import budget as bl
from londi_jax.switcher import dqn, pqn, replay
from londi_jax.switcher.config import HParams, SwitcherConfig
from londi_jax.switcher.core import Transition, act
from londi_jax.switcher.network import graphdef, init_params, q_values
from londi_jax.utils.errors import LondiError, UnknownNameError

ATOL = 1e-5


def _dup_col0(q, can):
    """Independent encoding of 'g=1 inadmissible': make column 1 a copy of column 0."""
    return jnp.where(can[..., None], q, q[..., :1].repeat(2, axis=-1))


def _random_batch(key, b, d, p_can=1.0):
    ks = jax.random.split(key, 7)
    return Transition(
        obs=jax.random.normal(ks[0], (b, d)), g=jax.random.bernoulli(ks[1], 0.5, (b,)).astype(jnp.int32),
        reward=jax.random.normal(ks[2], (b,)), next_obs=jax.random.normal(ks[3], (b, d)),
        terminated=jax.random.bernoulli(ks[4], 0.2, (b,)),
        truncated=jax.random.bernoulli(ks[5], 0.2, (b,)),
        next_can_call=jax.random.bernoulli(ks[6], p_can, (b,)))


def test_double_q_target_matches_rlax():
    k = jax.random.split(jax.random.key(0), 6)
    B = 256
    q_tm1, q_val, q_sel = (jax.random.normal(k[i], (B, 2)) for i in range(3))
    a = jax.random.bernoulli(k[3], 0.5, (B,)).astype(jnp.int32)
    r = jax.random.normal(k[4], (B,))
    disc = jax.random.uniform(k[5], (B,))
    can = jnp.ones((B,), bool)
    ours = dqn.double_q_target(q_sel, q_val, r, disc, can) - q_tm1[jnp.arange(B), a]
    ref = jax.vmap(rlax.double_q_learning)(q_tm1, a, r, disc, q_val, q_sel)
    chex.assert_trees_all_close(ours, ref, atol=ATOL)
    # masked: where g=1 is inadmissible the target must use Q_target(z', 0) whatever Q1 says
    can = jax.random.bernoulli(k[0], 0.5, (B,))
    ours = dqn.double_q_target(q_sel + 5.0 * jnp.array([0.0, 1.0]), q_val, r, disc, can)
    ref = jax.vmap(rlax.double_q_learning)(q_tm1, a, r, disc, _dup_col0(q_val, can),
                                           _dup_col0(q_sel + 5.0 * jnp.array([0.0, 1.0]), can))
    np.testing.assert_allclose(ours - q_tm1[jnp.arange(B), a], ref, atol=ATOL)
    np.testing.assert_allclose(ours[~can], (r + disc * q_val[:, 0])[~can], atol=ATOL)


@pytest.mark.parametrize("p_can", [1.0, 0.5])
def test_dqn_td_errors_with_network_match_rlax(p_can):
    cfg = SwitcherConfig(obs_dim=5, hidden=(16,), use_budget=True)
    gdef = graphdef(cfg)
    params = init_params(cfg, jax.random.key(1))
    target = init_params(cfg, jax.random.key(2))
    hp = HParams.create(c=0.3, gamma=0.9)
    batch = _random_batch(jax.random.key(3), 128, cfg.input_dim, p_can)

    @jax.jit
    def both(params, target, batch):
        ours = dqn.td_errors(gdef, params, target, batch, hp)
        can = batch.next_can_call
        ref = jax.vmap(rlax.double_q_learning)(
            q_values(gdef, params, batch.obs), batch.g, batch.reward - 0.3 * batch.g,
            0.9 * (1.0 - batch.terminated), _dup_col0(q_values(gdef, target, batch.next_obs), can),
            _dup_col0(q_values(gdef, params, batch.next_obs), can))
        return ours, ref

    ours, ref = both(params, target, batch)
    np.testing.assert_allclose(ours, ref, atol=ATOL)


@pytest.mark.parametrize("p_can", [1.0, 0.5])
def test_pqn_lambda_targets_match_rlax_q_lambda(p_can):
    """Rollout [T, N] with terminations and truncations == rlax.q_lambda per env column,
    with lambda_t = lam * (1 - done_t) (trace cut at episode ends, truncation bootstraps)."""
    cfg = SwitcherConfig(obs_dim=4, hidden=(16,), layer_norm=True, learner="pqn")
    gdef, params = graphdef(cfg), init_params(cfg, jax.random.key(4))
    T, N = 9, 5
    ks = jax.random.split(jax.random.key(5), 7)
    roll = Transition(
        obs=jax.random.normal(ks[0], (T, N, 4)), g=jax.random.bernoulli(ks[1], 0.5, (T, N)).astype(jnp.int32),
        reward=jax.random.normal(ks[2], (T, N)), next_obs=jax.random.normal(ks[3], (T, N, 4)),
        terminated=jax.random.bernoulli(ks[4], 0.15, (T, N)),
        truncated=jax.random.bernoulli(ks[5], 0.15, (T, N)),
        next_can_call=jax.random.bernoulli(ks[6], p_can, (T, N)))
    hp = HParams.create(c=0.2, gamma=0.97, lam=0.8)

    @jax.jit
    def both(params, roll):
        g_ours = pqn.rollout_targets(gdef, params, roll, hp)
        q_tm1 = q_values(gdef, params, roll.obs)
        ours = g_ours - jnp.take_along_axis(q_tm1, roll.g[..., None], -1)[..., 0]
        done = roll.terminated | roll.truncated
        ref = jax.vmap(rlax.q_lambda, in_axes=1, out_axes=1)(  # one rlax call per env column
            q_tm1, roll.g, roll.reward - 0.2 * roll.g, 0.97 * (1.0 - roll.terminated),
            _dup_col0(q_values(gdef, params, roll.next_obs), roll.next_can_call),
            0.8 * (1.0 - done))
        return ours, ref

    ours, ref = both(params, roll)
    np.testing.assert_allclose(ours, ref, atol=ATOL)


def test_pqn_lambda_zero_is_one_step_q_learning():
    cfg = SwitcherConfig(obs_dim=3, hidden=(8,), learner="pqn")
    gdef, params = graphdef(cfg), init_params(cfg, jax.random.key(6))
    b = _random_batch(jax.random.key(7), 6 * 4, 3)
    roll = jax.tree.map(lambda x: x.reshape((6, 4, *x.shape[1:])), b)
    hp = HParams.create(c=0.1, gamma=0.9, lam=0.0)

    @jax.jit
    def both(params, roll, b):
        ours = pqn.rollout_targets(gdef, params, roll, hp).reshape(-1)
        q_tm1 = q_values(gdef, params, b.obs)
        ref = jax.vmap(rlax.q_learning)(q_tm1, b.g, b.reward - 0.1 * b.g, 0.9 * (1.0 - b.terminated),
                                        q_values(gdef, params, b.next_obs))
        return ours - q_tm1[jnp.arange(b.g.shape[0]), b.g], ref

    ours, ref = both(params, roll, b)
    chex.assert_shape(ours, (24,))
    chex.assert_trees_all_close(ours, ref, atol=ATOL)


def test_terminal_vs_truncated_by_hand():
    """T=2 single env: step 0 truncated (bootstrap, no trace), step 1 terminated (no bootstrap)."""
    r = jnp.array([[1.0], [2.0]])
    v = jnp.array([[10.0], [20.0]])
    g = pqn.lambda_returns(r, jnp.array([[0.5], [0.0]]), v, 0.9 * jnp.array([[0.0], [0.0]]))
    np.testing.assert_allclose(g[:, 0], [1.0 + 0.5 * 10.0, 2.0])
    # no episode end: G0 = r0 + gamma * ((1-lam) v0 + lam * G1)
    g = pqn.lambda_returns(r, jnp.full((2, 1), 0.5), v, 0.9)
    g1 = 2.0 + 0.5 * 20.0
    np.testing.assert_allclose(g[:, 0], [1.0 + 0.5 * (0.1 * 10.0 + 0.9 * g1), g1], rtol=1e-6)


def test_act_never_calls_at_zero_budget_even_with_eps_one():
    cfg = SwitcherConfig(obs_dim=3, hidden=(8,), use_budget=True)
    gdef = graphdef(cfg)
    params = init_params(cfg, jax.random.key(0))
    # make DEEPTHINK look hugely better so the greedy part would pick it
    params = jax.tree.map(lambda x: x, params)
    params["head"]["bias"].set_value(jnp.array([0.0, 1e6]))
    obs = jax.random.normal(jax.random.key(1), (100_000, cfg.input_dim))
    act_j = jax.jit(lambda can, eps, key: act(gdef, params, obs, can, eps, key))
    for eps in (0.0, 0.5, 1.0):
        g0 = act_j(jnp.zeros((100_000,), bool), jnp.asarray(eps), jax.random.key(2))
        assert int(g0.sum()) == 0
    g1 = act_j(jnp.ones((100_000,), bool), jnp.asarray(1.0), jax.random.key(3))
    assert 0.45 < float(g1.mean()) < 0.55  # exploration does reach both switches when allowed
    g_greedy = act_j(jnp.ones((100_000,), bool), jnp.asarray(0.0), jax.random.key(3))
    assert bool(jnp.all(g_greedy == 1))


def test_target_max_ignores_deepthink_at_zero_budget():
    q = jnp.array([[1.0, 100.0], [1.0, 100.0], [3.0, -2.0]])
    can = jnp.array([False, True, False])
    np.testing.assert_array_equal(bl.masked_max(q, can), [1.0, 100.0, 3.0])
    np.testing.assert_array_equal(bl.masked_argmax(q, can), [0, 1, 0])
    # the DQN target uses Q_target(z', 0) where b' = 0 even if both nets prefer g' = 1
    y = dqn.double_q_target(q, q + 1.0, jnp.zeros(3), jnp.ones(3), can)
    np.testing.assert_array_equal(y, [2.0, 101.0, 4.0])


def test_budget_bookkeeping():
    b = bl.reset(jnp.asarray(2), (3,))
    b = bl.spend(b, jnp.array([1, 0, 1]))
    np.testing.assert_array_equal(b, [1, 2, 1])
    np.testing.assert_array_equal(bl.can_call(jnp.array([0, 1]), True), [False, True])
    np.testing.assert_array_equal(bl.can_call(jnp.array([0, 1]), False), [True, True])
    np.testing.assert_array_equal(bl.reset_where(b, jnp.array([True, False, False]), 2), [2, 2, 1])
    f = bl.features(jnp.zeros((3, 2)), jnp.array([0, 1, 2]), jnp.asarray(2), True)
    np.testing.assert_allclose(f[:, -1], [0.0, 0.5, 1.0])
    assert bl.features(jnp.zeros((3, 2)), b, jnp.asarray(2), False).shape == (3, 2)


def test_replay_ring_buffer_wraps_and_samples_only_stored():
    item = {"x": jnp.zeros((2,)), "i": jnp.zeros((), jnp.int32)}
    buf = replay.init(item, capacity=5)
    add = jax.jit(replay.add, donate_argnums=0)
    buf = add(buf, {"x": jnp.ones((3, 2)), "i": jnp.arange(3)})
    assert int(buf.size) == 3 and int(buf.ptr) == 3
    s = replay.sample(buf, jax.random.key(0), 1000)
    assert set(np.asarray(s["i"]).tolist()) == {0, 1, 2}
    old = buf
    buf = add(buf, {"x": jnp.ones((4, 2)), "i": jnp.arange(3, 7)})
    assert old.data["i"].is_deleted()  # donated: updated in place
    np.testing.assert_array_equal(buf.data["i"], [5, 6, 2, 3, 4])  # 5, 6 overwrote 0, 1
    assert int(buf.size) == 5 and int(buf.ptr) == 2
    assert bool(replay.can_sample(buf, 5)) and not bool(replay.can_sample(buf, 6))
    with pytest.raises(LondiError, match="capacity"):
        replay.add(buf, {"x": jnp.ones((6, 2)), "i": jnp.arange(6)})


def test_hard_and_polyak_target_updates_and_clipping():
    cfg = SwitcherConfig(obs_dim=3, hidden=(8,), optimizer="sgd")
    hp = HParams.create(target_period=3, lr=0.1, max_grad_norm=1e-3)
    st = jax.jit(lambda k: dqn.init(cfg, hp, k))(jax.random.key(0))
    batch = _random_batch(jax.random.key(1), 32, 3)
    leaves = lambda t: jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(t)])  # noqa: E731
    init_target = leaves(st.target_params)
    upd = jax.jit(lambda s, b: dqn.update(cfg, hp, s, b))
    for i in range(3):
        prev = leaves(st.params)
        st, m = upd(st, batch)
        # SGD on a clipped gradient: the step has norm lr * min(|grad|, max_norm)
        step_norm = float(jnp.linalg.norm(leaves(st.params) - prev))
        assert step_norm == pytest.approx(0.1 * min(float(m["grad_norm"]), 1e-3), rel=1e-3)
        if i < 2:
            np.testing.assert_array_equal(leaves(st.target_params), init_target)
    np.testing.assert_array_equal(leaves(st.target_params), leaves(st.params))
    cfg_p = SwitcherConfig(obs_dim=3, hidden=(8,), target_update="polyak")
    hp_p = HParams.create(tau=0.25)
    st = jax.jit(lambda k: dqn.init(cfg_p, hp_p, k))(jax.random.key(0))
    st2, _ = jax.jit(lambda s, b: dqn.update(cfg_p, hp_p, s, b))(st, batch)
    np.testing.assert_allclose(leaves(st2.target_params),
                               0.25 * leaves(st2.params) + 0.75 * leaves(st.target_params), atol=1e-6)


def test_learning_rate_is_traced_in_optimizer_state():
    cfg = SwitcherConfig(obs_dim=3, hidden=(8,))
    st = jax.jit(lambda hp: dqn.init(cfg, hp, jax.random.key(0)))(HParams.create(lr=0.0123))
    assert float(st.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.0123)


def test_config_and_hparam_errors_name_the_fix():
    with pytest.raises(UnknownNameError, match="dqn, pqn"):
        SwitcherConfig(obs_dim=3, learner="ppo")
    with pytest.raises(UnknownNameError, match="known hyper-parameters: budget, c,"):
        HParams.create(cost=0.1)
    with pytest.raises(LondiError, match="num_minibatches"):
        SwitcherConfig(obs_dim=3, learner="pqn", num_envs=3, rollout_len=3, num_minibatches=2)


@pytest.mark.parametrize("learner", ["dqn", "pqn"])
def test_sweeping_traced_hyperparameters_never_retraces(learner):
    """One compiled update serves every (c, gamma, lambda, lr, tau): chex counts the traces."""
    cfg = SwitcherConfig(obs_dim=3, hidden=(8,), learner=learner, num_minibatches=2, num_epochs=1)
    mod = {"dqn": dqn, "pqn": pqn}[learner]
    batch = _random_batch(jax.random.key(11), 8, 3, p_can=0.5)
    data = batch if learner == "dqn" else jax.tree.map(lambda x: x.reshape((2, 4, *x.shape[1:])), batch)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, hp, key):
        return mod.update(cfg, hp, state, data) if learner == "dqn" else mod.update(cfg, hp, state, data, key)

    state = mod.init(cfg, HParams.create(), jax.random.key(0))
    for c, gamma, lam, lr in [(0.0, 0.9, 0.0, 1e-3), (0.5, 0.99, 0.9, 3e-4), (2.0, 0.5, 0.5, 1e-2)]:
        hp = HParams.create(c=c, gamma=gamma, lam=lam, lr=lr)
        new, metrics = step(state, hp, jax.random.key(1))
        chex.assert_trees_all_equal_shapes_and_dtypes(new.params, state.params)
        chex.assert_tree_all_finite((new.params, metrics))
    chex.clear_trace_counter()
