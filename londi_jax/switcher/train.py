"""Training on JAX environments: ``make_train(config, env, env_params) -> Trainer``.

The whole training state (learner params / target / optimizer state, replay buffer, env states,
budgets, episode accumulators, rng, update counter) is ONE pytree, ``TrainState``. Training is
a ``lax.scan`` over updates and can run in chunks::

    trainer = make_train(config, env, env_params)
    out = jax.jit(trainer.train)(rng, hparams)                      # everything at once
    ts = trainer.init_train_state(rng, hparams)                     # ... or in chunks
    chunk = jax.jit(trainer.train_chunk, static_argnums=2, donate_argnums=0)
    ts, metrics = chunk(ts, hparams, 500)

``jax.jit(jax.vmap(trainer.train))(rngs, stacked_hparams)`` trains many switchers in one program.
One DQN update = one lockstep env step of all ``num_envs`` + ``updates_per_step`` gradient steps
(after ``learning_starts`` transitions); one PQN update = a ``rollout_len``-step rollout + the
Q(lambda) update. The env must be gymnax-like: ``reset(key, params) -> (obs, state)`` and
``step(key, state, g, params) -> (obs, state, reward, terminated, truncated, info)``.

A *batched* env (``env.batched = True``, e.g. ``agents.online.LondiEnv``) steps all ``num_envs``
at once instead: ``reset_batch(key, params, n) -> (obs, state)`` and ``step_batch(key, state, g,
params) -> (obs, state, reward, terminated, truncated, info)``, resetting ended episodes itself
(``obs`` is then the next episode's first observation) with ``info["final_obs"]``, the real next
observations the learner bootstraps from; ``info["switch"]``, when present, is the switch that
was carried out (it may differ from ``g``, e.g. DEEPTHINK past its capacity ran QUICK). The env's
``info_metrics`` names info entries summed into the training metrics.

``env_params`` are bound at ``make_train`` and may be passed to ``train`` / ``train_chunk`` /
``init_train_state`` instead, as a shared (unbatched) argument under ``vmap``: large inputs (an
LM's weights) then stay arguments of the compiled program rather than constants baked into it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from londi_jax.switcher import budget as budget_lib
from londi_jax.switcher import dqn, pqn, replay
from londi_jax.switcher.config import HParams, SwitcherConfig, epsilon
from londi_jax.switcher.core import Transition, act, greedy_switch
from londi_jax.switcher.network import graphdef
from londi_jax.utils.errors import LondiError


class TrainState(struct.PyTreeNode):
    """Everything that evolves during training (one pytree: checkpoint / vmap it whole)."""

    learner: Any            # dqn.DQNState or pqn.PQNState
    buffer: Any             # replay.ReplayState (DQN) or None (PQN)
    env_state: Any          # batched env state, leading dim num_envs
    obs: jax.Array          # [N, obs_dim] raw env observations
    budget: jax.Array       # [N] remaining DEEPTHINK calls this episode (LONDI-B)
    ep_return: jax.Array    # [N] env return of the running episodes
    ep_calls: jax.Array     # [N] DEEPTHINK calls in the running episodes
    ep_len: jax.Array       # [N] steps in the running episodes
    rng: jax.Array
    update: jax.Array       # updates done so far (drives the epsilon schedule)


def _where_tree(mask: jax.Array, a: Any, b: Any) -> Any:
    def pick(x, y):
        m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
        return jnp.where(m, x, y)
    return jax.tree.map(pick, a, b)


class Trainer:
    """Pure training functions bound to a static config and an env (see module docstring)."""

    def __init__(self, config: SwitcherConfig, env: Any, env_params: Any):
        if getattr(env, "obs_dim", config.obs_dim) != config.obs_dim:
            raise LondiError(f"SwitcherConfig.obs_dim = {config.obs_dim} but the env's obs_dim "
                             f"is {env.obs_dim}; build the config with obs_dim={env.obs_dim}")
        self.config, self.env, self.env_params = config, env, env_params
        self.learner = dqn if config.learner == "dqn" else pqn
        self.gdef = graphdef(config)
        self.batched = bool(getattr(env, "batched", False))

    def env_meta(self, env_params: Any = None) -> Any:
        """What a checkpoint records about the env (``env_params``, default the bound ones): its
        ``describe(params)`` when it has one (a LONDI env's parameters hold LM weights), else the
        env parameters."""
        env_params = self.env_params if env_params is None else env_params
        describe = getattr(self.env, "describe", None)
        return describe(env_params) if callable(describe) else env_params

    # ---- state -------------------------------------------------------------------------
    def _reset_envs(self, key: jax.Array, env_params: Any):
        if self.batched:
            return self.env.reset_batch(key, env_params, self.config.num_envs)
        keys = jax.random.split(key, self.config.num_envs)
        return jax.vmap(self.env.reset, in_axes=(0, None))(keys, env_params)

    def _example_transition(self) -> Transition:
        d = self.config.input_dim
        z = jnp.zeros((d,), jnp.float32)
        f = jnp.zeros((), bool)
        return Transition(obs=z, g=jnp.zeros((), jnp.int32), reward=jnp.zeros((), jnp.float32),
                          next_obs=z, terminated=f, truncated=f, next_can_call=f)

    def init_train_state(self, rng: jax.Array, hparams: HParams, env_params: Any = None) -> TrainState:
        """Fresh train state (pure; vmappable over ``rng`` and ``hparams``)."""
        env_params = self.env_params if env_params is None else env_params
        k_net, k_env, rng = jax.random.split(rng, 3)
        learner = self.learner.init(self.config, hparams, k_net)
        buffer = (replay.init(self._example_transition(), self.config.buffer_size)
                  if self.config.learner == "dqn" else None)
        obs, env_state = self._reset_envs(k_env, env_params)
        n = self.config.num_envs
        zeros_f, zeros_i = jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32)
        return TrainState(learner=learner, buffer=buffer, env_state=env_state, obs=obs,
                          budget=budget_lib.reset(hparams.budget, (n,)), ep_return=zeros_f,
                          ep_calls=zeros_i, ep_len=zeros_i, rng=rng,
                          update=jnp.zeros((), jnp.int32))

    # ---- one lockstep env step --------------------------------------------------------
    def _env_step(self, ts: TrainState, hparams: HParams, eps: jax.Array, key: jax.Array, env_params: Any):
        cfg = self.config
        k_act, k_step, k_reset = jax.random.split(key, 3)
        feats = budget_lib.features(ts.obs, ts.budget, hparams.budget, cfg.use_budget)
        can = budget_lib.can_call(ts.budget, cfg.use_budget)
        g = act(self.gdef, ts.learner.params, feats, can, eps, k_act)
        if self.batched:
            next_obs, env_state2, reward, term, trunc, info = self.env.step_batch(
                k_step, ts.env_state, g, env_params)
            obs2, g = info["final_obs"], info.get("switch", g)
        else:
            step = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))
            obs2, env_state2, reward, term, trunc, info = step(
                jax.random.split(k_step, cfg.num_envs), ts.env_state, g, env_params)
        b2 = budget_lib.spend(ts.budget, g) if cfg.use_budget else ts.budget
        tr = Transition(obs=feats, g=g, reward=reward,
                        next_obs=budget_lib.features(obs2, b2, hparams.budget, cfg.use_budget),
                        terminated=term, truncated=trunc,
                        next_can_call=budget_lib.can_call(b2, cfg.use_budget))
        done = term | trunc
        ep_return, ep_calls, ep_len = ts.ep_return + reward, ts.ep_calls + g, ts.ep_len + 1
        stats = {  # sums over the episodes that ended at this step
            "episodes": jnp.sum(done),
            "return_sum": jnp.sum(jnp.where(done, ep_return, 0.0)),
            "calls_sum": jnp.sum(jnp.where(done, ep_calls, 0)),
            "len_sum": jnp.sum(jnp.where(done, ep_len, 0)),
            "violations": jnp.sum(done & (ep_calls > hparams.budget)) if cfg.use_budget
            else jnp.zeros((), jnp.int32),
            **{k: jnp.sum(info[k]) for k in getattr(self.env, "info_metrics", ())},
        }
        if self.batched:  # the env reset its ended episodes itself
            env_state = env_state2
        else:
            reset_obs, reset_state = self._reset_envs(k_reset, env_params)
            next_obs = jnp.where(done[:, None], reset_obs, obs2)
            env_state = _where_tree(done, reset_state, env_state2)
        ts = ts.replace(
            obs=next_obs, env_state=env_state,
            budget=budget_lib.reset_where(b2, done, hparams.budget),
            ep_return=jnp.where(done, 0.0, ep_return), ep_calls=jnp.where(done, 0, ep_calls),
            ep_len=jnp.where(done, 0, ep_len))
        return ts, tr, stats

    # ---- one update ------------------------------------------------------------------
    def _dqn_update(self, ts: TrainState, hparams: HParams, eps: jax.Array, key: jax.Array, env_params: Any):
        cfg = self.config
        k_env, k_learn = jax.random.split(key)
        ts, tr, stats = self._env_step(ts, hparams, eps, k_env, env_params)
        buffer = replay.add(ts.buffer, tr)
        learner, m = dqn.learn_from_buffer(cfg, hparams, ts.learner, buffer, k_learn)
        m.pop("learned")
        return ts.replace(learner=learner, buffer=buffer), {**m, **stats}

    def _pqn_update(self, ts: TrainState, hparams: HParams, eps: jax.Array, key: jax.Array, env_params: Any):
        k_env, k_learn = jax.random.split(key)

        def step(ts, k):
            ts, tr, stats = self._env_step(ts, hparams, eps, k, env_params)
            return ts, (tr, stats)

        ts, (rollout, stats) = jax.lax.scan(
            step, ts, jax.random.split(k_env, self.config.rollout_len))
        learner, m = pqn.update(self.config, hparams, ts.learner, rollout, k_learn)
        return ts.replace(learner=learner), {**m, **jax.tree.map(jnp.sum, stats)}

    def train_chunk(self, ts: TrainState, hparams: HParams, num_updates: int,
                    env_params: Any = None) -> tuple[TrainState, dict[str, jax.Array]]:
        """Run ``num_updates`` (static) updates; metrics are stacked ``[num_updates]``."""
        env_params = self.env_params if env_params is None else env_params
        body = self._dqn_update if self.config.learner == "dqn" else self._pqn_update

        def one(ts, _):
            rng, key = jax.random.split(ts.rng)
            eps = epsilon(hparams, ts.update, self.config.num_updates)
            ts, m = body(ts.replace(rng=rng), hparams, eps, key, env_params)
            return ts.replace(update=ts.update + 1), {**m, "epsilon": eps}

        return jax.lax.scan(one, ts, None, length=num_updates)

    def train(self, rng: jax.Array, hparams: HParams, env_params: Any = None) -> dict[str, Any]:
        """``config.num_updates`` updates from scratch: ``{"train_state", "metrics"}``."""
        ts = self.init_train_state(rng, hparams, env_params)
        ts, metrics = self.train_chunk(ts, hparams, self.config.num_updates, env_params)
        return {"train_state": ts, "metrics": metrics}

    __call__ = train

    # ---- greedy evaluation -----------------------------------------------------------
    def evaluate(self, params: Any, hparams: HParams, rng: jax.Array, num_episodes: int,
                 max_steps: int, env_params: Any = None) -> dict[str, jax.Array]:
        """Greedy switch on ``num_episodes`` parallel episodes of at most ``max_steps`` steps.

        Returns per-episode arrays: ``disc_return`` (discounted switch return, the objective),
        ``env_return``, ``calls``, ``success`` (env reward > 0 seen), ``violation``
        (calls > budget under LONDI-B), ``finished``.
        """
        cfg = self.config
        if self.batched:
            raise LondiError(f"Trainer.evaluate steps one env per episode; {type(self.env).__name__} is a batched "
                             "env: evaluate its switch with the host rollout (agents.londi.LondiAgent)")
        env_params = self.env_params if env_params is None else env_params
        k_reset, k_run = jax.random.split(rng)
        obs, env_state = jax.vmap(self.env.reset, in_axes=(0, None))(
            jax.random.split(k_reset, num_episodes), env_params)
        carry0 = {
            "obs": obs, "env_state": env_state,
            "b": budget_lib.reset(hparams.budget, (num_episodes,)),
            "alive": jnp.ones((num_episodes,), bool), "disc": jnp.ones((num_episodes,)),
            "disc_return": jnp.zeros((num_episodes,)), "env_return": jnp.zeros((num_episodes,)),
            "calls": jnp.zeros((num_episodes,), jnp.int32), "t": jnp.zeros((), jnp.int32),
        }

        def cond(c):
            return (c["t"] < max_steps) & jnp.any(c["alive"])

        def step(c):
            k = jax.random.fold_in(k_run, c["t"])
            _, g = greedy_switch(self.gdef, params, c["obs"], c["b"], hparams.budget, cfg.use_budget)
            obs2, st2, r, term, trunc, _ = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k, num_episodes), c["env_state"], g, env_params)
            alive = c["alive"]
            sw = jnp.where(alive, r - hparams.c * g, 0.0)
            return {
                "obs": obs2, "env_state": st2, "t": c["t"] + 1,
                "b": budget_lib.spend(c["b"], g) if cfg.use_budget else c["b"],
                "alive": alive & ~(term | trunc),
                "disc": c["disc"] * hparams.gamma,
                "disc_return": c["disc_return"] + c["disc"] * sw,
                "env_return": c["env_return"] + jnp.where(alive, r, 0.0),
                "calls": c["calls"] + jnp.where(alive, g, 0),
            }

        # stops as soon as every episode is over (or after max_steps)
        c = jax.lax.while_loop(cond, step, carry0)
        violation = (c["calls"] > hparams.budget) if cfg.use_budget else jnp.zeros_like(c["alive"])
        return {"disc_return": c["disc_return"], "env_return": c["env_return"],
                "calls": c["calls"], "success": c["env_return"] > 0, "violation": violation,
                "finished": ~c["alive"]}


def make_train(config: SwitcherConfig, env: Any, env_params: Any) -> Trainer:
    """Bind static config and env; the returned ``Trainer`` is callable as ``train(rng, hparams)``."""
    return Trainer(config, env, env_params)


def init_train_state(trainer: Trainer, rng: jax.Array, hparams: HParams) -> TrainState:
    """Functional alias of ``trainer.init_train_state``."""
    return trainer.init_train_state(rng, hparams)


def train_chunk(trainer: Trainer, ts: TrainState, hparams: HParams,
                num_updates: int) -> tuple[TrainState, dict[str, jax.Array]]:
    """Functional alias of ``trainer.train_chunk``."""
    return trainer.train_chunk(ts, hparams, num_updates)
