"""Learner 1, the paper's off-policy form: Double DQN over the binary switch.

Target (LONDI-B masks g' = 1 where b' = 0, in the argmax *and* hence in the value used):

    g*  = argmax_{g' in G(b')} Q_online(z', g')
    y   = (r - c g) + gamma (1 - terminated) Q_target(z', g*)

Target network: hard copy every ``HParams.target_period`` updates, or Polyak with ``tau``.
All functions are pure and jit/vmap-able; ``config`` is static, ``hparams`` traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from londi_jax.switcher import budget as budget_lib
from londi_jax.switcher import replay
from londi_jax.switcher.config import HParams, SwitcherConfig
from londi_jax.switcher.core import Transition, act, greedy, make_optimizer, switch_reward
from londi_jax.switcher.network import graphdef, init_params, q_of, q_values

__all__ = ["DQNState", "init", "act", "greedy", "update", "double_q_target", "loss_fn"]


class DQNState(struct.PyTreeNode):
    """Learner state: online and target parameters, optimizer state, update counter."""

    params: nnx.State
    target_params: nnx.State
    opt_state: optax.OptState
    step: jax.Array


def init(config: SwitcherConfig, hparams: HParams, key: jax.Array) -> DQNState:
    """Fresh learner (target = online at start)."""
    params = init_params(config, key)
    opt_state = make_optimizer(config, hparams).init(params)
    return DQNState(params=params, target_params=params, opt_state=opt_state,
                    step=jnp.zeros((), jnp.int32))


def double_q_target(q_next_online: jax.Array, q_next_target: jax.Array, reward_sw: jax.Array,
                    discount: jax.Array, next_can_call: jax.Array) -> jax.Array:
    """Double-Q bootstrap target with the admissibility mask on the argmax (batched over [...])."""
    g_star = budget_lib.masked_argmax(q_next_online, next_can_call)
    q_star = q_of(q_next_target, g_star)
    return reward_sw + discount * q_star


def td_errors(gdef: nnx.GraphDef, params: nnx.State, target_params: nnx.State,
              batch: Transition, hparams: HParams) -> jax.Array:
    """Double-DQN TD errors ``y - Q(z, g)`` for a batch (target is stop-gradiented)."""
    q = q_values(gdef, params, batch.obs)
    q_taken = q_of(q, batch.g)
    q_next_online = q_values(gdef, params, batch.next_obs)
    q_next_target = q_values(gdef, target_params, batch.next_obs)
    discount = hparams.gamma * (1.0 - batch.terminated.astype(q.dtype))
    y = double_q_target(q_next_online, q_next_target,
                        switch_reward(batch.reward, batch.g, hparams.c), discount,
                        batch.next_can_call)
    return jax.lax.stop_gradient(y) - q_taken


def loss_fn(params: nnx.State, target_params: nnx.State, gdef: nnx.GraphDef,
            batch: Transition, hparams: HParams) -> tuple[jax.Array, jax.Array]:
    """Mean squared TD error (times 1/2) and the TD errors."""
    td = td_errors(gdef, params, target_params, batch, hparams)
    return 0.5 * jnp.mean(td**2), td


def update(config: SwitcherConfig, hparams: HParams, state: DQNState,
           batch: Transition) -> tuple[DQNState, dict[str, jax.Array]]:
    """One gradient step on ``batch`` then the target-network update."""
    gdef = graphdef(config)
    (loss, td), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.target_params, gdef, batch, hparams)
    updates, opt_state = make_optimizer(config, hparams).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    if config.target_update == "hard":
        copy = (step % jnp.maximum(hparams.target_period, 1)) == 0
        target = jax.tree.map(lambda p, t: jnp.where(copy, p, t), params, state.target_params)
    else:
        target = optax.incremental_update(params, state.target_params, hparams.tau)
    metrics = {"loss": loss, "td_abs": jnp.mean(jnp.abs(td)), "grad_norm": optax.tree.norm(grads)}
    return DQNState(params=params, target_params=target, opt_state=opt_state, step=step), metrics


def learn_from_buffer(config: SwitcherConfig, hparams: HParams, state: DQNState, buffer: replay.ReplayState,
                      key: jax.Array) -> tuple[DQNState, dict[str, jax.Array]]:
    """``config.updates_per_step`` updates on minibatches sampled from ``buffer``, once it holds
    ``max(learning_starts, batch_size)`` transitions; before that a no-op with zero metrics.

    The one learning step shared by the JAX trainer and the host loop. Metrics are means over the
    updates plus ``learned`` (whether any update ran)."""

    def learn(state: DQNState):
        def one(state, k):
            return update(config, hparams, state, replay.sample(buffer, k, config.batch_size))

        state, m = jax.lax.scan(one, state, jax.random.split(key, config.updates_per_step))
        return state, {**jax.tree.map(jnp.mean, m), "learned": jnp.ones((), bool)}

    def skip(state: DQNState):
        z = jnp.zeros((), jnp.float32)
        return state, {"loss": z, "td_abs": z, "grad_norm": z, "learned": jnp.zeros((), bool)}

    ready = buffer.size >= max(config.learning_starts, config.batch_size)
    return jax.lax.cond(ready, learn, skip, state)
