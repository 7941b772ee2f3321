"""The exact solver and the toy env: brute force, Monte Carlo agreement, structure."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from londi_jax.switcher import exact, toy
from londi_jax.utils.errors import LondiError

GAMMA = 0.95
P, R, START = toy.tabular_model(toy.default_params())
S = P.shape[1]


@pytest.mark.parametrize("c", [0.0, 0.05, 0.25, 1.0])
def test_value_iteration_equals_brute_force_over_all_switch_tables(c):
    sol = exact.solve(P, R, c, GAMMA)
    best = -np.inf
    for bits in itertools.product((0, 1), repeat=S):  # all 2^8 deterministic switches
        v = exact.evaluate_policy(P, R, np.array(bits)[:, None], c, GAMMA, False)["value"][:, 0]
        assert np.all(v <= sol.V[:, 0] + 1e-9)
        best = max(best, START @ v)
    assert best == pytest.approx(exact.start_value(sol.V, START), abs=1e-9)


def test_budgeted_value_iteration_equals_brute_force_n1():
    """n = 1: the b = 0 column is forced to QUICK; enumerate the b = 1 column."""
    c = 0.05
    sol = exact.solve(P, R, c, GAMMA, budget=1)
    vals = []
    for bits in itertools.product((0, 1), repeat=S):
        pol = np.stack([np.zeros(S, int), np.array(bits)], axis=1)
        v = exact.evaluate_policy(P, R, pol, c, GAMMA, True)["value"]
        assert np.all(v <= sol.V + 1e-9)
        vals.append(START @ v[:, 1])
    assert max(vals) == pytest.approx(exact.start_value(sol.V, START), abs=1e-9)
    # budget-dependence: with one call left, save it for the last trap
    np.testing.assert_array_equal(sol.policy[:, 1], [0, 0, 0, 0, 0, 0, 0, 1])
    assert not np.array_equal(sol.policy[:, 1], exact.solve(P, R, c, GAMMA).policy[:, 0])


def test_exact_structure_monotone_in_c_and_budget():
    cs = np.linspace(0.0, 1.2, 25)
    calls = [exact.start_value(exact.evaluate_policy(P, R, exact.solve(P, R, c, GAMMA).policy, c,
                                                     GAMMA, False)["disc_calls"], START) for c in cs]
    assert all(a >= b - 1e-12 for a, b in zip(calls, calls[1:])) and calls[0] > 0 == calls[-1]
    values = [exact.start_value(exact.solve(P, R, 0.05, GAMMA, n).V, START) for n in range(6)]
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))  # more budget never hurts
    assert values[-1] == pytest.approx(exact.start_value(exact.solve(P, R, 0.05, GAMMA).V, START))


def test_reachable_states():
    reach = exact.reachable(P, START, 2)
    # a call needs a cell before it: (s, b) is reachable iff n - b <= s (calls made in cells < s)
    expected = np.array([[2 - b <= s for b in range(3)] for s in range(S)])
    np.testing.assert_array_equal(reach, expected)


def test_evaluate_policy_rejects_calls_without_budget():
    with pytest.raises(LondiError, match="zero budget"):
        exact.evaluate_policy(P, R, np.ones((S, 2), int), 0.1, GAMMA, True)
    with pytest.raises(LondiError, match="expected P"):
        exact.solve(P[0], R, 0.1, GAMMA)


def test_jax_env_matches_tabular_model_by_monte_carlo():
    """Simulate the JAX env under the exact optimal budgeted switch; compare with exact values."""
    n, c, episodes = 2, 0.05, 20_000
    sol = exact.solve(P, R, c, GAMMA, budget=n)
    ev = exact.evaluate_policy(P, R, sol.policy, c, GAMMA, True)
    env, params = toy.ToyEnv(), toy.default_params(max_steps=300)
    table = jnp.asarray(sol.policy)

    def episode(key):
        k0, k1 = jax.random.split(key)
        _, st = env.reset(k0, params)

        def step(carry, k):
            st, b, alive, disc, ret, calls = carry
            g = table[jnp.minimum(st.pos, S - 1), b]
            _, st2, r, term, trunc, _ = env.step(k, st, g, params)
            ret = ret + jnp.where(alive, disc * (r - c * g), 0.0)
            calls = calls + jnp.where(alive, g, 0)
            return (st2, b - g, alive & ~(term | trunc), disc * GAMMA, ret, calls), None

        init = (st, jnp.asarray(n), jnp.asarray(True), jnp.asarray(1.0), jnp.asarray(0.0),
                jnp.asarray(0))
        (_, _, alive, _, ret, calls), _ = jax.lax.scan(step, init, jax.random.split(k1, 60))
        return ret, calls, alive

    ret, calls, alive = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(0), episodes))
    assert not bool(alive.any())
    se = float(ret.std()) / np.sqrt(episodes)
    assert float(ret.mean()) == pytest.approx(exact.start_value(ev["value"], START), abs=4 * se)
    se_c = float(calls.std()) / np.sqrt(episodes)
    assert float(calls.mean()) == pytest.approx(exact.start_value(ev["calls"], START), abs=4 * se_c)
    assert int(calls.max()) <= n
