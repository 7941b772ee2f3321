"""Host-driven switcher: the toy chain re-implemented as a plain numpy stepper (no JAX) is driven
through a Python loop; the HostSwitcher must learn the exact optimal switch and never exceed the
per-episode DEEPTHINK budget, with budgets reset at episode ends."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from londi_jax.switcher import exact, toy
from londi_jax.switcher.config import HParams, SwitcherConfig
from londi_jax.switcher.host_loop import HostLoopError, HostSwitcher
from londi_jax.switcher.offline import q_table

ENV = toy.ToyEnv()
ENV_PARAMS = ENV.default_params(max_steps=32)
GAMMA = 0.95


class NumpyToy:
    """The toy chain's dynamics in numpy, N envs, auto-reset (a stand-in for a Python text env)."""

    def __init__(self, params, num_envs: int, seed: int):
        self.probs = np.asarray(params.probs, np.float64)
        self.cells = self.probs.shape[1]
        self.start = np.asarray(params.start_probs, np.float64)
        self.start /= self.start.sum()
        self.max_steps = int(params.max_steps)
        self.rng = np.random.default_rng(seed)
        self.n = num_envs
        self.pos = self.rng.choice(self.cells, size=num_envs, p=self.start)
        self.t = np.zeros(num_envs, int)

    def obs(self, pos: np.ndarray) -> np.ndarray:
        out = np.zeros((len(pos), self.cells), np.float32)
        inside = np.flatnonzero(pos < self.cells)  # the goal has an all-zero observation
        out[inside, pos[inside]] = 1.0
        return out

    def step(self, g: np.ndarray):
        """Returns (next_obs, reward, terminated, truncated, reset_obs); finished envs reset."""
        p = self.probs[g, self.pos]
        outcome = (self.rng.random(self.n)[:, None] > np.cumsum(p, -1)).sum(-1)
        pos = np.where(outcome == 0, self.pos + 1, self.pos)
        goal = pos == self.cells
        term = goal | (outcome == 2)
        self.t += 1
        trunc = (self.t >= self.max_steps) & ~term
        done = term | trunc
        self.pos = np.where(done, self.rng.choice(self.cells, size=self.n, p=self.start), pos)
        self.t = np.where(done, 0, self.t)
        return self.obs(pos), goal.astype(np.float32), term, trunc, self.obs(self.pos)


def _config(learner: str, use_budget: bool, steps: int, num_envs: int = 16) -> SwitcherConfig:
    return SwitcherConfig(
        obs_dim=ENV.obs_dim, hidden=(32, 32), learner=learner, layer_norm=learner == "pqn",
        use_budget=use_budget, num_envs=num_envs,
        num_updates=steps if learner == "dqn" else steps // 8, buffer_size=4096, batch_size=64,
        learning_starts=256, rollout_len=8, num_minibatches=4, num_epochs=2)


def _drive(sw: HostSwitcher, env: NumpyToy, steps: int, n: int | None, learn: bool = True):
    """Python loop; checks the budget with its own bookkeeping. Returns (episodes, calls)."""
    obs = env.obs(env.pos)
    # calls already made in the running episodes (non-zero when continuing a loop)
    calls = np.zeros(env.n, int) if n is None else n - sw.budgets
    episodes, total_calls = 0, 0
    for _ in range(steps):
        g = sw.act(obs)
        assert set(np.unique(g)) <= {0, 1}
        calls += g
        if n is not None:
            assert np.all(calls <= n), "a DEEPTHINK call beyond the episode's budget"
        nobs, r, term, trunc, reset_obs = env.step(g)
        sw.observe(r, nobs, term, trunc, learn=learn)
        done = term | trunc
        if n is not None:  # the switcher's own budgets: n - calls, back to n after an episode
            np.testing.assert_array_equal(sw.budgets, np.where(done, n, n - calls))
        episodes += int(done.sum())
        total_calls += int(g.sum())
        calls[done] = 0
        obs = np.where(done[:, None], reset_obs, nobs)
    return episodes, total_calls


def _check_learned_switch(config, sw, c, n):
    P, R, start = toy.tabular_model(ENV_PARAMS)
    use_budget = config.use_budget
    sol = exact.solve(P, R, c, GAMMA, budget=n if use_budget else None)
    q = np.asarray(q_table(config, sw.params, toy.all_observations(ENV), n))
    learned = (q[..., 1] > q[..., 0]).astype(np.int32)
    if use_budget:
        learned[:, 0] = 0
    reach = exact.reachable(P, start, n if use_budget else None)
    np.testing.assert_array_equal(learned[reach], sol.policy[reach])
    assert sol.policy[reach].any() and not sol.policy[reach].all()  # a non-trivial switch
    ev = exact.evaluate_policy(P, R, learned, c, GAMMA, use_budget)
    np.testing.assert_allclose(exact.start_value(ev["value"], start), exact.start_value(sol.V, start),
                               atol=1e-9)


@pytest.mark.slow  # ~10 s each on an idle 2-core CPU, > 20 s under load
@pytest.mark.parametrize(("learner", "use_budget"), [("dqn", True), ("pqn", False)])
def test_host_loop_learns_exact_switch_within_budget(learner, use_budget):
    steps = 1600
    c, n = (0.05, 2) if use_budget else (0.2, 3)
    config = _config(learner, use_budget, steps)
    hp = HParams.create(c=c, budget=n, lr=1e-3, gamma=GAMMA, target_period=100)
    sw = HostSwitcher(config, hp, jax.random.key(0))
    episodes, calls = _drive(sw, NumpyToy(ENV_PARAMS, config.num_envs, seed=0), steps,
                             n if use_budget else None)
    assert episodes > 500 and calls > 0
    _check_learned_switch(config, sw, c, n)


def test_budget_holds_while_exploring_fully():
    """eps = 1 throughout: random switches, yet never a call at b = 0."""
    config = _config("dqn", True, 400, num_envs=32)
    hp = HParams.create(c=0.0, budget=1, eps_start=1.0, eps_end=1.0)
    sw = HostSwitcher(config, hp, jax.random.key(1))
    _, calls = _drive(sw, NumpyToy(ENV_PARAMS, 32, seed=1), 400, n=1, learn=False)
    assert calls > 100


def test_save_load_resumes_bitwise(tmp_path):
    config = dataclasses.replace(_config("dqn", True, 200, num_envs=4), learning_starts=64,
                                 batch_size=32)
    hp = HParams.create(c=0.05, budget=2)
    a = HostSwitcher(config, hp, jax.random.key(2))
    env_a = NumpyToy(ENV_PARAMS, 4, seed=2)
    _drive(a, env_a, 120, n=2)  # past learning_starts: updates happen before and after the save
    a.save(tmp_path / "ck")
    b = HostSwitcher(config, hp, jax.random.key(99))
    assert b.load(tmp_path / "ck") == 120
    env_b = NumpyToy(ENV_PARAMS, 4, seed=2)
    env_b.rng.bit_generator.state = env_a.rng.bit_generator.state
    env_b.pos, env_b.t = env_a.pos.copy(), env_a.t.copy()
    _drive(a, env_a, 30, n=2)
    _drive(b, env_b, 30, n=2)
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_misuse_raises_clear_errors():
    config = _config("dqn", True, 10, num_envs=2)
    sw = HostSwitcher(config, HParams.create(), jax.random.key(0))
    with pytest.raises(HostLoopError, match="without a preceding act"):
        sw.observe(np.zeros(2), np.zeros((2, ENV.obs_dim)), np.zeros(2, bool), np.zeros(2, bool))
    with pytest.raises(HostLoopError, match=r"obs must have shape \[2, 8\].*got \[3, 8\]"):
        sw.act(np.zeros((3, ENV.obs_dim)))
    sw.act(np.zeros((2, ENV.obs_dim)))
    with pytest.raises(HostLoopError, match="reward contains NaN"):
        sw.observe(np.array([0.0, np.nan]), np.zeros((2, ENV.obs_dim)), np.zeros(2, bool), np.zeros(2, bool))
    from londi_jax.switcher.offline import grid_hparams

    with pytest.raises(HostLoopError, match="one hyper-parameter point"):
        HostSwitcher(config, grid_hparams([0.1, 0.2], [1])[0], jax.random.key(0))
