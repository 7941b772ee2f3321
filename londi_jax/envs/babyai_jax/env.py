"""The gymnax-style face of the JAX BabyAI-Text env.

``reset(key, params) -> (obs, state)`` and ``step(key, state, action, params) -> (obs, state,
reward, terminated, truncated, info)``, pure and ``vmap``-able. ``step`` auto-resets: after an
episode ends it returns the *next* episode's first observation and state (as GLAM's parallel
envs do), with the ended episode's reward and flags; ``info["success"]`` says it succeeded.

A reset draws a level by rejection sampling (``levels.generate``), which costs far more than a
step. Under ``vmap`` a ``lax.cond`` computes both branches, so a per-env auto-reset would
generate a level at every step; ``step_batch`` instead generates ``resets`` levels per call for
the whole batch and hands them to the envs that ended (``resets`` >= the number of envs that can
end in one step keeps it exact; ``resets = n_envs`` always is).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from londi_jax.envs.babyai_jax import core, levels
from londi_jax.envs.babyai_jax.core import EnvState, Obs, StaticConfig
from londi_jax.envs.babyai_jax.levels import EnvParams
from londi_jax.utils.errors import LondiError


def reset(key: jax.Array, params: EnvParams, config: StaticConfig | None = None) -> tuple[Obs, EnvState]:
    """A new episode: ``(obs, state)``."""
    state, _ = levels.generate(key, params, config)
    return core.observe(state), state


def check_actions(action: Any, batch: tuple[int, ...] = ()) -> jax.Array:
    """Actions as int32 of shape ``batch``: integer ids 0 turn left, 1 turn right, 2 go forward,
    3 pick up, 4 drop, 5 toggle. Raises ``LondiError`` for another shape, a non-integer dtype, or
    (when the values are known, outside ``jit``) an id outside [0, 6). Inside ``jit`` an id outside
    it cannot be caught: it changes nothing but counts a step, as minigrid's ``done`` action does."""
    if isinstance(action, (list, tuple)):
        action = np.asarray(action)
    dtype = getattr(action, "dtype", None) if not isinstance(action, (int, np.integer)) else np.dtype(np.int32)
    if dtype is None or isinstance(action, bool) or not (np.issubdtype(dtype, np.integer)):
        raise LondiError(f"actions must be integer ids in [0, 6) (0 turn left ... 5 toggle), got "
                         f"{getattr(action, 'dtype', type(action).__name__)}")
    shape = tuple(np.shape(action))
    if shape != tuple(batch):
        raise LondiError(f"actions must have shape {tuple(batch)} (one per env), got {shape}")
    if not isinstance(action, jax.core.Tracer):
        values = np.asarray(action)
        if values.size and (values.min() < 0 or values.max() >= core.N_ACTIONS):
            raise LondiError(f"actions must be ids in [0, 6) (0 turn left ... 5 toggle), got {values.min()}..{values.max()}")
    return jnp.asarray(action, jnp.int32)


def step_env(state: EnvState, action: jax.Array) -> tuple[Obs, EnvState, jax.Array, jax.Array, jax.Array]:
    """One step, no auto-reset: ``(obs, state, reward, terminated, truncated)``."""
    action = check_actions(action, tuple(state.step_count.shape))
    state, reward, terminated, truncated = core.step_world(state, action)
    return core.observe(state), state, reward, terminated, truncated


def step(key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams,
         config: StaticConfig | None = None) -> tuple[Obs, EnvState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
    """One step with auto-reset (per env; see the module doc for batches)."""
    obs, state, reward, terminated, truncated = step_env(state, action)
    done = terminated | truncated
    new_obs, new_state = jax.lax.cond(done, lambda: reset(key, params, config), lambda: (obs, state))
    info = {"success": terminated, "done": done}
    return new_obs, new_state, reward, terminated, truncated, info


def step_batch(key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams,
               config: StaticConfig | None = None, resets: int | None = None
               ) -> tuple[Obs, EnvState, jax.Array, jax.Array, jax.Array, dict[str, Any]]:
    """``step`` for a batch of envs (leading axis N) with ``resets`` fresh levels per call
    (default N). The k-th env that ended (in batch order) gets fresh level ``k mod resets``:
    with ``resets`` below the number that ended, some share a layout; ``info["reset_shortfall"]``
    counts them (0 means every new episode is independent)."""
    n = int(state.step_count.shape[0]) if getattr(state.step_count, "ndim", 0) == 1 else 0
    if n < 1:
        raise LondiError("step_batch needs a batch of states (leading axis N >= 1); use step() for one env")
    action = check_actions(action, (n,))
    if resets is not None and (isinstance(resets, bool) or not isinstance(resets, (int, np.integer)) or resets < 1):
        raise LondiError(f"resets must be an int >= 1 (default: the batch size), got {resets!r}")
    resets = n if resets is None else int(resets)
    obs, state, reward, terminated, truncated = jax.vmap(step_env)(state, action)
    done = terminated | truncated
    fresh = reset_pool(key, params, resets, done, (obs, state), config)
    (obs, state), shortfall = assign_resets(done, fresh, (obs, state))
    info = {"success": terminated, "done": done, "reset_shortfall": shortfall}
    return obs, state, reward, terminated, truncated, info


def reset_pool(key: jax.Array, params: EnvParams, resets: int, done: jax.Array, current: Any,
               config: StaticConfig | None = None, extend: Any = None) -> Any:
    """``resets`` fresh ``(obs, state)`` pairs for the envs that ended (``done [N]``), generated only
    on calls where one did (a real branch outside ``vmap``; under an outer ``vmap`` both run).
    ``current``: the batch's ``(obs, state)``, whose first rows fill the pool when none ended.
    ``extend(obs, state) -> tree``: more per-level values computed with the pool (e.g. an LM's
    outputs at the fresh levels) in the same branch; the result is then ``(obs, state, tree)``,
    the idle branch's tree zeros (it is never handed out)."""
    n = int(done.shape[0])

    def fresh():
        obs, state = reset_batch(key, params, resets, config)
        return (obs, state) if extend is None else (obs, state, extend(obs, state))

    def idle():
        pool = jax.tree.map(lambda x: x[jnp.arange(resets) % n], current)
        if extend is None:
            return pool
        return (*pool, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(extend, *pool)))

    return jax.lax.cond(done.any(), fresh, idle)


def assign_resets(done: jax.Array, pool: Any, current: Any) -> tuple[Any, jax.Array]:
    """Hand the pool's rows (leading axis R) to the rows of ``current`` (leading axis N) where
    ``done``: the k-th ended row (in batch order) gets pool row ``k mod R``. Returns the new tree
    and the shortfall (ended rows beyond R, which share a layout with another; 0: all independent)."""
    resets = int(jax.tree.leaves(pool)[0].shape[0])
    rank = jnp.cumsum(done) - 1
    pick = jnp.where(done, rank % resets, 0)

    def choose(new, old):
        return jnp.where(done.reshape((-1,) + (1,) * (old.ndim - 1)), new[pick], old)

    return jax.tree.map(choose, pool, current), jnp.maximum(done.sum() - resets, 0)


def reset_batch(key: jax.Array, params: EnvParams, n: int, config: StaticConfig | None = None
                ) -> tuple[Obs, EnvState]:
    """N independent new episodes (``levels.generate_batch``: no env waits for the unluckiest)."""
    state, _ = levels.generate_batch(key, params, n, config)
    return jax.vmap(core.observe)(state), state
