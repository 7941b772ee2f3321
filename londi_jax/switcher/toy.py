"""A pure-JAX toy switching benchmark with exact answers (gymnax-like ``reset`` / ``step``).

A chain of cells 0 .. S-1 ends in a goal (reward ``goal_reward``, terminal). In every cell the
switch g picks who moves: the small model (g = 0, QUICK) or the large one (g = 1, DEEPTHINK).
Each model, in each cell, moves forward, stays put, or *fails* (terminal, reward 0) with
per-cell probabilities. Plain cells are easy for both; **trap** cells make QUICK fail
(more often and with higher stakes nearer the goal); in one plain cell DEEPTHINK "overthinks"
and stalls, so calling it there is worse even at c = 0. Which traps deserve a call depends on their stakes (the discounted
value downstream), on ``c``, and under a budget on how many calls are left: so the exact
optimal switch changes with both, and ``exact.py`` computes it by value iteration.

Observation: one-hot of the current cell (``obs_dim = S``). Episodes start in a random cell
(``start_probs``) so every cell is visited, and are truncated after ``max_steps``.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from flax import struct

# (forward, stay, fail) for QUICK, per cell; DEEPTHINK moves forward surely except where noted.
_QUICK = [
    (1.00, 0.00, 0.00),  # 0 plain
    (0.60, 0.00, 0.40),  # 1 trap, low stakes (far from the goal)
    (1.00, 0.00, 0.00),  # 2 plain
    (0.85, 0.00, 0.15),  # 3 mild trap
    (1.00, 0.00, 0.00),  # 4 plain; DEEPTHINK "overthinks" here and stalls
    (0.40, 0.00, 0.60),  # 5 hard trap
    (1.00, 0.00, 0.00),  # 6 plain
    (0.10, 0.00, 0.90),  # 7 near-certain trap next to the goal
]
_DEEPTHINK_OVERRIDES = {4: (0.70, 0.30, 0.00)}


class ToyParams(struct.PyTreeNode):
    """Explicit env parameters (traced). ``probs[g, s] = (forward, stay, fail)``."""

    probs: jax.Array
    goal_reward: jax.Array
    start_probs: jax.Array
    max_steps: jax.Array


class ToyState(struct.PyTreeNode):
    """Current cell and step count."""

    pos: jax.Array
    t: jax.Array


def default_params(max_steps: int = 64) -> ToyParams:
    """The benchmark layout above (8 cells + goal)."""
    quick = np.asarray(_QUICK, np.float32)
    deep = np.tile(np.asarray([1.0, 0.0, 0.0], np.float32), (len(_QUICK), 1))
    for cell, row in _DEEPTHINK_OVERRIDES.items():
        deep[cell] = row
    s = len(_QUICK)
    return ToyParams(probs=jnp.asarray(np.stack([quick, deep])),
                     goal_reward=jnp.asarray(1.0, jnp.float32),
                     start_probs=jnp.full((s,), 1.0 / s, jnp.float32),
                     max_steps=jnp.asarray(max_steps, jnp.int32))


class ToyEnv:
    """The chain env. Static: number of cells; everything else lives in ``ToyParams``."""

    def __init__(self, num_cells: int = len(_QUICK)):
        self.num_cells = num_cells

    @property
    def obs_dim(self) -> int:
        return self.num_cells

    def default_params(self, max_steps: int = 64) -> ToyParams:
        return default_params(max_steps)

    def observe(self, pos: jax.Array) -> jax.Array:
        """One-hot cell (the goal, index S, gives all zeros)."""
        return jax.nn.one_hot(pos, self.num_cells, dtype=jnp.float32)

    def reset(self, key: jax.Array, params: ToyParams) -> tuple[jax.Array, ToyState]:
        """Start in a cell drawn from ``start_probs``."""
        pos = jax.random.choice(key, self.num_cells, p=params.start_probs).astype(jnp.int32)
        state = ToyState(pos=pos, t=jnp.zeros((), jnp.int32))
        return self.observe(pos), state

    def step(self, key: jax.Array, state: ToyState, g: jax.Array, params: ToyParams):
        """Move with model ``g``; returns ``(obs, state, reward, terminated, truncated, info)``."""
        p = params.probs[g, state.pos]  # (forward, stay, fail)
        u = jax.random.uniform(key)  # inverse-CDF draw: cheaper than random.choice per env
        outcome = (u >= p[0]).astype(jnp.int32) + (u >= p[0] + p[1]).astype(jnp.int32)
        pos = jnp.where(outcome == 0, state.pos + 1, state.pos).astype(jnp.int32)
        at_goal = pos == self.num_cells
        failed = outcome == 2
        reward = jnp.where(at_goal, params.goal_reward, 0.0).astype(jnp.float32)
        terminated = at_goal | failed
        t = state.t + 1
        truncated = (t >= params.max_steps) & ~terminated
        info = {"success": at_goal}
        return self.observe(pos), ToyState(pos=pos, t=t), reward, terminated, truncated, info


def tabular_model(params: ToyParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact MDP over non-terminal cells, for ``exact.py``.

    Returns ``P [2, S, S]`` (sub-stochastic: missing mass goes to terminal states),
    ``R [2, S]`` expected immediate reward, and the start distribution ``[S]``.
    """
    probs = np.asarray(params.probs, np.float64)
    _, s, _ = probs.shape
    P = np.zeros((2, s, s))
    R = np.zeros((2, s))
    for g in range(2):
        for i in range(s):
            fwd, stay, _ = probs[g, i]
            P[g, i, i] += stay
            if i + 1 < s:
                P[g, i, i + 1] += fwd
            else:
                R[g, i] = fwd * float(params.goal_reward)
    return P, R, np.asarray(params.start_probs, np.float64)


def all_observations(env: ToyEnv) -> jax.Array:
    """Observations of every non-terminal cell, ``[S, obs_dim]`` (row i = cell i)."""
    return env.observe(jnp.arange(env.num_cells))
