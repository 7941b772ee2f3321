"""Offline switcher learning: one logged toy dataset (both models' outcomes per state) trains a
whole c x budget grid in one vmapped program; each member's greedy switch is checked against the
exact optimum from value iteration."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from londi_jax.switcher import exact, toy
from londi_jax.switcher.config import ConfigError, SwitcherConfig
from londi_jax.switcher.offline import (
    FORMAT,
    OfflineDataError,
    OfflineDataset,
    OfflineLogger,
    collect_toy,
    grid_hparams,
    load_dataset,
    make_offline_train,
    q_table,
    save_dataset,
)

ENV = toy.ToyEnv()
ENV_PARAMS = ENV.default_params(max_steps=32)
GAMMA = 0.95
MARGIN = 0.04  # states whose exact Q-gap is below this are near-ties; either switch is fine there


@pytest.fixture(scope="module")
def dataset():
    return collect_toy(ENV, ENV_PARAMS, jax.random.key(0), num_envs=32, num_steps=96)


def test_collected_dataset_matches_the_toy_dynamics(dataset):
    """Empirical outcome frequencies per (cell, model) agree with the toy's probabilities."""
    assert dataset.size == 32 * 96
    obs = np.asarray(dataset.obs)
    cell = obs.argmax(-1)
    assert np.allclose(obs.sum(-1), 1.0)  # logged states are non-terminal one-hots
    nxt = np.asarray(dataset.next_obs)
    term = np.asarray(dataset.terminated)
    probs = np.asarray(ENV_PARAMS.probs)
    for g in (0, 1):
        next_cell = np.where(nxt[:, g].sum(-1) > 0, nxt[:, g].argmax(-1), ENV.num_cells)
        moved = next_cell == cell + 1
        stayed = (next_cell == cell) & ~term[:, g]
        failed = term[:, g] & (next_cell != ENV.num_cells) & ~moved
        for s in range(ENV.num_cells):
            m = cell == s
            assert m.sum() > 50
            emp = np.array([moved[m].mean(), stayed[m].mean(), failed[m].mean()])
            tol = 4.5 * np.sqrt(probs[g, s] * (1 - probs[g, s]) / m.sum()) + 1e-9  # 4.5 sigma
            assert np.all(np.abs(emp - probs[g, s]) <= tol), (g, s, emp, probs[g, s])
        # reward only on reaching the goal, which terminates
        goal = next_cell == ENV.num_cells
        np.testing.assert_array_equal(np.asarray(dataset.reward)[:, g] > 0, goal & moved)


@pytest.mark.parametrize("use_budget", [False, True], ids=["plain", "budget"])
def test_offline_grid_learns_the_exact_switch(dataset, use_budget):
    # c values whose exact Q-gaps are all >= 0.05 (no near-ties), with different optimal switches
    cs = [0.05, 0.2, 0.3] if not use_budget else [0.05, 0.2]
    budgets = [3] if not use_budget else [1, 3]
    config = SwitcherConfig(obs_dim=ENV.obs_dim, hidden=(32, 32), use_budget=use_budget,
                            batch_size=64, num_updates=2000)
    hp, pairs = grid_hparams(cs, budgets, lr=2e-3, gamma=GAMMA, target_period=100)
    train = jax.jit(jax.vmap(make_offline_train(config), in_axes=(0, 0, None)))
    state, metrics = train(jax.random.split(jax.random.key(1), len(pairs)), hp, dataset)
    assert metrics["loss"].shape == (len(pairs), config.num_updates)
    P, R, start = toy.tabular_model(ENV_PARAMS)
    obs = toy.all_observations(ENV)
    policies = []
    for i, (c, n) in enumerate(pairs):
        sol = exact.solve(P, R, c, GAMMA, budget=n if use_budget else None)
        params = jax.tree.map(lambda x: x[i], state.params)
        q = np.asarray(q_table(config, params, obs, n))
        learned = (q[..., 1] > q[..., 0]).astype(np.int32)
        if use_budget:
            learned[:, 0] = 0  # g = 1 is inadmissible at b = 0 (the learner masks it too)
        reach = exact.reachable(P, start, n if use_budget else None)
        clear = reach & (np.abs(np.nan_to_num(sol.Q[..., 1] - sol.Q[..., 0], neginf=1.0)) > MARGIN)
        assert clear.sum() >= reach.sum() - 1, "grid chosen so (almost) every state is decisive"
        np.testing.assert_array_equal(learned[clear], sol.policy[clear], err_msg=f"c={c} n={n}")
        # the learned switch is (near-)optimal in value, evaluated exactly
        ev = exact.evaluate_policy(P, R, learned, c, GAMMA, use_budget)
        assert exact.start_value(ev["value"], start) >= exact.start_value(sol.V, start) - 5e-3
        # and the Q-values themselves are close to the exact ones where admissible
        finite = np.isfinite(sol.Q) & reach[..., None]
        assert np.max(np.abs(q - sol.Q)[finite]) < 0.15
        policies.append(sol.policy[:, -1].copy())
    # the grid is informative: the optimal switch really changes across it
    assert len({p.tobytes() for p in policies}) >= 2


def test_dataset_save_load_round_trip_and_errors(dataset, tmp_path):
    path = tmp_path / "log.npz"
    save_dataset(path, dataset)
    back = load_dataset(path)
    for name in ("obs", "reward", "next_obs", "terminated"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(dataset, name)))
    with pytest.raises(OfflineDataError, match="no dataset file"):
        load_dataset(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.asarray("other"), obs=np.zeros((2, 3)))
    with pytest.raises(OfflineDataError, match=f"expected '{FORMAT}'"):
        load_dataset(bad)
    with pytest.raises(OfflineDataError, match=r"reward must have shape \[4, 2\]"):
        save_dataset(path, OfflineDataset(obs=np.zeros((4, 3)), reward=np.zeros((4,)),
                                          next_obs=np.zeros((4, 2, 3)), terminated=np.zeros((4, 2), bool)))
    with pytest.raises(OfflineDataError, match="NaN"):
        save_dataset(path, OfflineDataset(obs=np.full((1, 3), np.nan), reward=np.zeros((1, 2)),
                                          next_obs=np.zeros((1, 2, 3)), terminated=np.zeros((1, 2), bool)))


def test_quick_confidence_is_its_own_field_through_logger_and_files(tmp_path):
    log = OfflineLogger(3)
    rng = np.random.default_rng(0)
    conf = rng.random((5, 4)).astype(np.float32)
    for k in (0, 2):  # two records of 2 and 3 states
        m = 2 if k == 0 else 3
        log.record(rng.random((m, 3)), np.zeros((m, 2)), rng.random((m, 2, 3)), np.zeros((m, 2), bool),
                   conf[k:k + m] if k == 0 else conf[2:])
    ds = log.dataset()
    np.testing.assert_array_equal(np.asarray(ds.quick_confidence), conf)
    save_dataset(tmp_path / "c.npz", ds)
    np.testing.assert_array_equal(np.asarray(load_dataset(tmp_path / "c.npz").quick_confidence), conf)
    with pytest.raises(OfflineDataError, match="every record or with none"):
        log.record(np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((1, 2, 3)), np.zeros((1, 2), bool))
    with pytest.raises(OfflineDataError, match=r"quick_confidence must have shape \[1, C\]"):
        OfflineLogger(3).record(np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((1, 2, 3)), np.zeros((1, 2), bool),
                                np.zeros((2, 4)))
    old = OfflineLogger(3)  # datasets without it still load (field None)
    old.record(np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((1, 2, 3)), np.zeros((1, 2), bool))
    save_dataset(tmp_path / "o.npz", old.dataset())
    assert load_dataset(tmp_path / "o.npz").quick_confidence is None


def test_offline_rejects_pqn_and_bad_grids():
    with pytest.raises(ConfigError, match="learner='dqn'"):
        make_offline_train(SwitcherConfig(obs_dim=3, learner="pqn"))
    with pytest.raises(ConfigError, match="budgets must be >= 0"):
        grid_hparams([0.1], [-1])


def test_logger_from_a_python_loop_equals_the_dataset(dataset):
    """Recording state by state (as a host env loop would) rebuilds the same dataset."""
    log = OfflineLogger(ENV.obs_dim)
    n = 50
    for i in range(n):  # one state at a time ...
        log.record(dataset.obs[i], dataset.reward[i], dataset.next_obs[i], dataset.terminated[i])
    log.record(dataset.obs[n:2 * n], dataset.reward[n:2 * n], dataset.next_obs[n:2 * n],
               dataset.terminated[n:2 * n])  # ... or a batch
    assert len(log) == 2 * n
    out = log.dataset()
    for name in ("obs", "reward", "next_obs", "terminated"):
        np.testing.assert_array_equal(np.asarray(getattr(out, name)),
                                      np.asarray(getattr(dataset, name))[:2 * n])
    with pytest.raises(OfflineDataError, match=r"next_obs must have shape \[1, 2, 8\]"):
        log.record(dataset.obs[0], dataset.reward[0], dataset.next_obs[0, 0], dataset.terminated[0])
    with pytest.raises(OfflineDataError, match="obs_dim=8"):
        log.record(np.zeros(3), np.zeros(2), np.zeros((2, 3)), np.zeros(2, bool))
    with pytest.raises(OfflineDataError, match="no states recorded"):
        OfflineLogger(ENV.obs_dim).dataset()
