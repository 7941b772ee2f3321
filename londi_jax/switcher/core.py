"""Pieces both learners share: the transition pytree, acting, the switch reward, the optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from londi_jax.switcher import budget as budget_lib
from londi_jax.switcher.config import HParams, SwitcherConfig
from londi_jax.switcher.network import q_values


class Transition(struct.PyTreeNode):
    """One switch transition (any leading batch / time dims).

    obs / next_obs: switcher features (with b/n appended under LONDI-B); ``next_obs`` is the
        real next observation, also at episode ends (not the reset one).
    g: switch taken (0 QUICK, 1 DEEPTHINK), int32.
    reward: the *environment* reward; the learners subtract ``c * g`` with the traced c.
    terminated: the episode ended in the MDP (no bootstrap).
    truncated: cut by a step limit (bootstrap from ``next_obs``; PQN also cuts the lambda trace).
    next_can_call: whether g = 1 is admissible at ``next_obs`` (LONDI-B: b' > 0).
    """

    obs: jax.Array
    g: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_can_call: jax.Array


def switch_reward(reward: jax.Array, g: jax.Array, c: jax.Array) -> jax.Array:
    """LONDI's switch reward ``r - c * g``."""
    return reward - c * g.astype(reward.dtype)


def act(gdef: nnx.GraphDef, params: nnx.State, obs: jax.Array, can: jax.Array,
        eps: jax.Array, key: jax.Array) -> jax.Array:
    """Epsilon-greedy switch over admissible choices, for features ``obs [..., input_dim]``.

    Exploration draws g uniformly among *admissible* switches, so g = 1 never appears where
    ``can`` is False, even with eps = 1.
    """
    k_explore, k_coin = jax.random.split(key)
    greedy = budget_lib.masked_argmax(q_values(gdef, params, obs), can)
    shape = greedy.shape
    random_g = (jax.random.bernoulli(k_coin, 0.5, shape) & can).astype(jnp.int32)
    explore = jax.random.uniform(k_explore, shape) < eps
    return jnp.where(explore, random_g, greedy)


def greedy(gdef: nnx.GraphDef, params: nnx.State, obs: jax.Array, can: jax.Array) -> jax.Array:
    """Greedy admissible switch for switcher inputs ``obs [..., input_dim]`` (ties go to QUICK)."""
    return budget_lib.masked_argmax(q_values(gdef, params, obs), can)


def greedy_switch(gdef: nnx.GraphDef, params: nnx.State, obs: jax.Array, b: jax.Array, n: jax.Array,
                  use_budget: bool, can: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The deployed LONDI switch, the one definition every evaluator and router uses.

    ``obs [..., obs_dim]``: the state features; ``b [...]``: budget left; ``n``: the episode's
    budget (LONDI-B appends ``b / n`` and masks g = 1 at ``b = 0``; without the budget both are
    ignored). ``can``: where g = 1 is admissible, default ``budget.can_call(b, use_budget)`` (a
    deployed agent also masks it wherever its own budget is spent). Returns ``(q [..., 2],
    g [...] int32)``: unmasked Q-values and ``argmax_g Q`` over admissible g, ties to QUICK.
    """
    q = q_values(gdef, params, budget_lib.features(obs, b, n, use_budget))
    return q, budget_lib.masked_argmax(q, budget_lib.can_call(b, use_budget) if can is None else can)


def _factory(name: str):
    opt = {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop}[name]

    def make(learning_rate, max_grad_norm):
        return optax.chain(optax.clip_by_global_norm(max_grad_norm), opt(learning_rate))

    return make


def make_optimizer(config: SwitcherConfig, hparams: HParams) -> optax.GradientTransformation:
    """Clipped optimizer with traced learning rate and clip norm (kept in the optimizer state)."""
    return optax.inject_hyperparams(_factory(config.optimizer))(
        learning_rate=hparams.lr, max_grad_norm=hparams.max_grad_norm)
