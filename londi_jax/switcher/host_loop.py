"""Step-by-step switcher for environments outside JAX (Python text envs, LM-driven envs).

The env loop stays in Python; the switcher's work is two jitted calls per lockstep step of
``N = config.num_envs`` envs, on the same learner functions the pure-JAX trainer uses
(``core.act``, ``dqn.update`` with the ring replay, ``pqn.update`` on ``[T, N]`` rollouts)::

    sw = HostSwitcher(config, hparams, jax.random.key(0))
    obs = np.stack([encode(e.reset()) for e in envs])           # [N, obs_dim] features
    while training:
        g = sw.act(obs)                                         # [N] 0 = QUICK, 1 = DEEPTHINK
        steps = [e.step(quick_or_deepthink(e, gi)) for e, gi in zip(envs, g)]
        next_obs, reward, terminated, truncated = ...           # next_obs: real final obs at ends
        sw.observe(reward, next_obs, terminated, truncated)     # record, learn, budget bookkeeping
        obs = np.where(done[:, None], reset_obs, next_obs)      # the caller resets finished envs

Budget bookkeeping (LONDI-B) is per env inside the switcher: ``b`` starts at ``n``, drops by
one per DEEPTHINK call, g = 1 is never chosen at ``b = 0`` (even while exploring), and ``b``
returns to ``n`` when an env's episode ends (``terminated | truncated``). The whole state is one
pytree (:attr:`HostSwitcher.state`), so it can be checkpointed with
:class:`londi_jax.switcher.checkpoint.CheckpointStore` (:meth:`save` / :meth:`load`).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from londi_jax.switcher import budget as budget_lib
from londi_jax.switcher import dqn, pqn, replay
from londi_jax.switcher.config import HParams, SwitcherConfig, epsilon
from londi_jax.switcher.core import Transition, act, greedy
from londi_jax.switcher.network import graphdef, q_values
from londi_jax.utils.errors import LondiError
from londi_jax.utils.programs import program_cache

__all__ = ["HostSwitcher", "HostState", "HostLoopError"]


class HostLoopError(LondiError):
    """Misuse of the host loop (shapes, call order, sweeps)."""


class HostState(struct.PyTreeNode):
    """Everything the host switcher carries between calls (one pytree)."""

    learner: Any        # dqn.DQNState | pqn.PQNState
    buffer: Any         # replay.ReplayState (DQN) or None
    rollout: Any        # Transition with leaves [T, N] (PQN) or None
    t: jax.Array        # PQN: next rollout slot
    budget: jax.Array   # [N] remaining DEEPTHINK calls in each env's episode
    feats: jax.Array    # [N, input_dim] features of the last ``act``
    g: jax.Array        # [N] switches of the last ``act``
    rng: jax.Array
    update: jax.Array   # updates so far (DQN: lockstep steps; PQN: rollouts): epsilon schedule


def _example_transition(config: SwitcherConfig) -> Transition:
    z = jnp.zeros((config.input_dim,), jnp.float32)
    f = jnp.zeros((), bool)
    return Transition(obs=z, g=jnp.zeros((), jnp.int32), reward=jnp.zeros((), jnp.float32),
                      next_obs=z, terminated=f, truncated=f, next_can_call=f)


def init_state(config: SwitcherConfig, hparams: HParams, rng: jax.Array) -> HostState:
    """Fresh host state (pure)."""
    k_net, rng = jax.random.split(rng)
    n = config.num_envs
    example = _example_transition(config)
    if config.learner == "dqn":
        learner = dqn.init(config, hparams, k_net)
        buffer, rollout = replay.init(example, config.buffer_size), None
    else:
        learner = pqn.init(config, hparams, k_net)
        buffer = None
        rollout = jax.tree.map(
            lambda x: jnp.zeros((config.rollout_len, n, *x.shape), x.dtype), example)
    return HostState(learner=learner, buffer=buffer, rollout=rollout, t=jnp.zeros((), jnp.int32),
                     budget=budget_lib.reset(hparams.budget, (n,)),
                     feats=jnp.zeros((n, config.input_dim), jnp.float32),
                     g=jnp.zeros((n,), jnp.int32), rng=rng, update=jnp.zeros((), jnp.int32))


def act_step(config: SwitcherConfig, hparams: HParams, state: HostState, obs: jax.Array,
             explore: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Switches for ``obs [N, obs_dim]`` (epsilon-greedy if ``explore``): ``(feats, g, rng)``.

    Returns only what changes (the caller puts it into the state), so nothing large is copied
    or donated on this path.
    """
    gdef = graphdef(config)
    feats = budget_lib.features(obs.astype(jnp.float32), state.budget, hparams.budget,
                                config.use_budget)
    can = budget_lib.can_call(state.budget, config.use_budget)
    if explore:
        rng, key = jax.random.split(state.rng)
        eps = epsilon(hparams, state.update, config.num_updates)
        g = act(gdef, state.learner.params, feats, can, eps, key)
    else:
        rng, g = state.rng, greedy(gdef, state.learner.params, feats, can)
    return feats, g, rng


def _zero_metrics() -> dict[str, jax.Array]:
    z = jnp.zeros((), jnp.float32)
    return {"loss": z, "grad_norm": z, "learned": jnp.zeros((), bool)}


def observe_step(config: SwitcherConfig, hparams: HParams, state: HostState, reward: jax.Array,
                 next_obs: jax.Array, terminated: jax.Array, truncated: jax.Array,
                 learn: bool) -> tuple[HostState, dict[str, jax.Array]]:
    """Record the outcome of the last ``act``; learn when due; spend / reset budgets."""
    b2 = budget_lib.spend(state.budget, state.g) if config.use_budget else state.budget
    tr = Transition(
        obs=state.feats, g=state.g, reward=reward.astype(jnp.float32),
        next_obs=budget_lib.features(next_obs.astype(jnp.float32), b2, hparams.budget,
                                     config.use_budget),
        terminated=terminated, truncated=truncated,
        next_can_call=budget_lib.can_call(b2, config.use_budget))
    rng, key = jax.random.split(state.rng)
    done = terminated | truncated
    state = state.replace(rng=rng, budget=budget_lib.reset_where(b2, done, hparams.budget))
    if config.learner == "dqn":
        buffer = replay.add(state.buffer, tr)
        learner, metrics = state.learner, _zero_metrics()
        if learn:
            learner, m = dqn.learn_from_buffer(config, hparams, learner, buffer, key)
            metrics = {k: m[k] for k in metrics}
        return state.replace(learner=learner, buffer=buffer, update=state.update + 1), metrics
    rollout = jax.tree.map(lambda buf, x: buf.at[state.t].set(x), state.rollout, tr)
    full = state.t + 1 == config.rollout_len

    def fit(learner):
        learner, m = pqn.update(config, hparams, learner, rollout, key)
        return learner, {"loss": m["loss"], "grad_norm": m["grad_norm"], "learned": jnp.ones((), bool)}

    learner, metrics = (jax.lax.cond(full, fit, lambda l: (l, _zero_metrics()), state.learner)
                        if learn else (state.learner, _zero_metrics()))
    return state.replace(learner=learner, rollout=rollout, t=jnp.where(full, 0, state.t + 1),
                         update=state.update + full.astype(jnp.int32)), metrics


@program_cache(maxsize=32)
def _compiled(config: SwitcherConfig):
    """Jitted (init, act, observe) per static config, shared by every HostSwitcher using it."""
    return (jax.jit(functools.partial(init_state, config)),
            jax.jit(functools.partial(act_step, config), static_argnames="explore"),
            jax.jit(functools.partial(observe_step, config), static_argnames="learn",
                    donate_argnums=1))


class HostSwitcher:
    """A switcher driven call by call from Python (see the module docstring).

    ``hparams`` must be one member (scalar leaves); a sweep over host envs is a list of
    ``HostSwitcher`` objects, or a JAX env with :mod:`londi_jax.switcher.sweep`.
    """

    def __init__(self, config: SwitcherConfig, hparams: HParams, rng: jax.Array):
        if jnp.ndim(hparams.c) != 0:
            raise HostLoopError(
                f"HostSwitcher takes one hyper-parameter point, got stacked hparams of shape "
                f"{list(jnp.shape(hparams.c))}; build one HostSwitcher per member")
        self.config, self.hparams = config, hparams
        init, self._act, self._observe = _compiled(config)
        # committed like restored checkpoints, so load() does not trigger a recompile
        self.state = jax.device_put(init(hparams, rng), jax.devices()[0])
        self._pending = False

    # ---- the two hot calls ---------------------------------------------------------
    def act(self, obs: Any, *, explore: bool = True) -> np.ndarray:
        """Switches ``[N]`` (int32) for the envs' current features ``obs [N, obs_dim]``."""
        obs = self._check(obs, "obs", (self.config.num_envs, self.config.obs_dim))
        feats, g, rng = self._act(self.hparams, self.state, obs, explore=explore)
        self.state = self.state.replace(feats=feats, g=g, rng=rng)
        self._pending = True
        return np.asarray(g)

    def observe(self, reward: Any, next_obs: Any, terminated: Any, truncated: Any, *,
                learn: bool = True) -> dict[str, float]:
        """Outcome of the last :meth:`act`: env rewards, next features (the real final ones
        where an episode ended), termination and truncation flags, all ``[N]`` / ``[N, obs_dim]``.
        Learns (``learn=False`` records only, e.g. for evaluation runs with a frozen switcher)."""
        if not self._pending:
            raise HostLoopError("observe() called without a preceding act(); call act(obs) first")
        n, d = self.config.num_envs, self.config.obs_dim
        args = (self._check(reward, "reward", (n,)), self._check(next_obs, "next_obs", (n, d)),
                self._check(terminated, "terminated", (n,), bool),
                self._check(truncated, "truncated", (n,), bool))
        self.state, metrics = self._observe(self.hparams, self.state, *args, learn=learn)
        self._pending = False
        return {k: v.item() for k, v in metrics.items()}

    # ---- inspection ------------------------------------------------------------------
    @property
    def budgets(self) -> np.ndarray:
        """Remaining DEEPTHINK calls of each env's running episode ``[N]``."""
        return np.asarray(self.state.budget)

    @property
    def params(self) -> Any:
        """A copy of the current Q-network parameters (an ``nnx.State``); a copy because
        :meth:`observe` donates the state's buffers to update them in place."""
        return jax.tree.map(jnp.copy, self.state.learner.params)

    def q_values(self, obs: Any, budget: Any | None = None) -> np.ndarray:
        """Q-values ``[M, 2]`` of features ``obs [M, obs_dim]`` at remaining budgets ``[M]``."""
        obs = jnp.asarray(obs, jnp.float32)
        b = jnp.zeros(obs.shape[:1], jnp.int32) if budget is None else jnp.asarray(budget, jnp.int32)
        feats = budget_lib.features(obs, b, self.hparams.budget, self.config.use_budget)
        return np.asarray(q_values(graphdef(self.config), self.params, feats))

    # ---- checkpoints -----------------------------------------------------------------
    def save(self, directory: str | os.PathLike, step: int | None = None, keep: int = 3) -> int:
        """Checkpoint the whole state (orbax, via :mod:`checkpoint`); returns the step used."""
        from londi_jax.utils.checkpoint import CheckpointStore

        step = int(self.state.update) if step is None else int(step)
        with CheckpointStore(directory, keep=keep) as store:
            store.save(step, self.state, kind=f"switcher-host/{self.config.learner}",
                       config=self.config, hparams=self.hparams)
        return step

    def load(self, directory: str | os.PathLike, step: int | None = None) -> int:
        """Restore a checkpoint written by :meth:`save` (config / hparams must match)."""
        from londi_jax.utils.checkpoint import CheckpointStore

        with CheckpointStore(directory) as store:
            state, meta = store.restore(
                jax.eval_shape(lambda: self.state), step,
                kind=f"switcher-host/{self.config.learner}", config=self.config, hparams=self.hparams)
        self.state = state
        self._pending = False
        return int(meta["step"])

    def _check(self, x: Any, name: str, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        arr = np.asarray(x)
        if arr.shape != shape:
            raise HostLoopError(
                f"{name} must have shape {list(shape)} (num_envs = {self.config.num_envs}, "
                f"obs_dim = {self.config.obs_dim}), got {list(arr.shape)}")
        if dtype is bool:
            return jnp.asarray(arr.astype(bool))
        if not np.all(np.isfinite(arr)):
            raise HostLoopError(f"{name} contains NaN or inf")
        return jnp.asarray(arr, jnp.float32)
