"""Learned switches on the toy benchmark vs the exact optimum (value iteration).

Each fixture trains all its members in ONE compiled, vmapped program.
"""

import numpy as np
import pytest

from londi_jax.switcher import exact, toy
from londi_jax.switcher.toy_bench import TOY_HPARAMS, sweep_toy

pytestmark = pytest.mark.slow

C_GRID = [0.05, 0.12, 0.25, 0.5, 1.0]  # five different exact activation sets
EVAL_EPISODES = 10_000


def _sweep(learner, use_budget, params, seeds, base_extra=None, eval_episodes=EVAL_EPISODES):
    return sweep_toy(params, learner=learner, use_budget=use_budget, seeds=seeds, base=base_extra,
                     eval_episodes=eval_episodes, progress=False).rows


@pytest.fixture(scope="module")
def dqn_c_sweep():
    return _sweep("dqn", False, {"c": C_GRID}, seeds=2, eval_episodes=2000)


@pytest.fixture(scope="module")
def dqn_budget_sweep():
    return _sweep("dqn", True, {"budget": [2, 3]}, seeds=2, base_extra={"c": 0.05})


def test_exact_activation_sets_differ_across_c(dqn_c_sweep):
    sets = {tuple(np.asarray(r["exact_policy"]).ravel()) for r in dqn_c_sweep}
    assert len(sets) == len(C_GRID)  # the test really covers different switches


def test_dqn_learns_exact_activation_set_for_several_c(dqn_c_sweep):
    for r in dqn_c_sweep:
        assert r["agreement"] >= 0.99, (r["c"], r["seed"], r["policy"], r["exact_policy"])
        assert r["agreement_all_states"] >= 0.99
        assert r["learned_value"] == pytest.approx(r["exact_value"], rel=0.02)


def test_larger_c_never_gives_more_calls(dqn_c_sweep):
    for seed in (0, 1):
        rows = sorted((r for r in dqn_c_sweep if r["seed"] == seed), key=lambda r: r["c"])
        exact_calls = [r["learned_calls"] for r in rows]        # exact evaluation, no noise
        disc_calls = [r["learned_disc_calls"] for r in rows]
        mc_calls = [r["calls"] for r in rows]                    # 2,000 greedy episodes each
        assert all(a >= b - 1e-9 for a, b in zip(exact_calls, exact_calls[1:])), exact_calls
        assert all(a >= b - 1e-9 for a, b in zip(disc_calls, disc_calls[1:])), disc_calls
        assert all(a >= b - 0.05 for a, b in zip(mc_calls, mc_calls[1:])), mc_calls
        assert exact_calls[0] > exact_calls[-1]


def test_budget_zero_violations_and_near_optimal_return(dqn_budget_sweep):
    for r in dqn_budget_sweep:
        n = r["budget"]
        assert r["violations"] == 0 and r["max_calls"] <= n and r["unfinished"] == 0
        assert r["agreement"] >= 0.99, (n, r["seed"], r["policy"], r["exact_policy"])
        # learned return within 2% of the exact constrained optimum: exactly evaluated and by
        # Monte Carlo over 10,000 greedy episodes
        assert r["learned_value"] == pytest.approx(r["exact_value"], rel=0.02)
        assert r["disc_return"] == pytest.approx(r["exact_value"], rel=0.02)
        assert r["train_violations"] == 0 and r["train_episodes"] > 1000
    # the budget binds: with b = n left the constrained optimum differs from plain LONDI's
    P, R, _ = toy.tabular_model(toy.default_params())
    free = exact.solve(P, R, 0.05, TOY_HPARAMS["dqn"]["gamma"]).policy[:, 0]
    for r in dqn_budget_sweep:
        full_budget_col = np.asarray(r["exact_policy"])[-1]  # policies are [b][cell]
        assert (r["budget"] == 2) == (not np.array_equal(full_budget_col, free))


def test_pqn_learns_exact_switch_with_budget():
    rows = _sweep("pqn", True, {"c": [0.05, 0.25]}, seeds=2, base_extra={"budget": 3},
                  eval_episodes=EVAL_EPISODES)
    for r in rows:
        assert r["violations"] == 0 and r["max_calls"] <= 3
        assert r["agreement"] >= 0.99, (r["c"], r["seed"], r["policy"], r["exact_policy"])
        assert r["learned_value"] == pytest.approx(r["exact_value"], rel=0.02)
        assert r["disc_return"] == pytest.approx(r["exact_value"], rel=0.02)
