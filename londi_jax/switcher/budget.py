"""LONDI-B: the per-episode DEEPTHINK budget and the admissibility mask it induces.

The remaining budget ``b`` (int32, one per env) is part of the switcher's state: it starts at
``n`` each episode, drops by one per DEEPTHINK call, and at ``b = 0`` the switch g = 1 is not
admissible, both when acting and in the max / argmax of bootstrap targets. With the budget off
every switch is admissible. ``n`` is a traced value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite "minus infinity": keeps gradients and argmax NaN-free


def reset(n: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """Budget at the start of an episode: ``n`` broadcast to ``shape`` (int32)."""
    return jnp.full(shape, n, dtype=jnp.int32)


def can_call(b: jax.Array, use_budget: bool) -> jax.Array:
    """Whether DEEPTHINK (g = 1) is admissible: ``b > 0`` under LONDI-B, always otherwise."""
    return b > 0 if use_budget else jnp.ones(jnp.shape(b), dtype=bool)


def spend(b: jax.Array, g: jax.Array) -> jax.Array:
    """Budget after switch ``g`` (never below zero: g = 1 is masked at b = 0)."""
    return jnp.maximum(b - g.astype(jnp.int32), 0)


def reset_where(b: jax.Array, done: jax.Array, n: jax.Array) -> jax.Array:
    """Reset the budget to ``n`` where an episode ended."""
    return jnp.where(done, jnp.asarray(n, jnp.int32), b)


def admissible_mask(can: jax.Array) -> jax.Array:
    """Mask ``[..., 2]`` over g in {0, 1}: QUICK always admissible, DEEPTHINK iff ``can``."""
    can = jnp.asarray(can, bool)
    return jnp.stack([jnp.ones_like(can), can], axis=-1)


def mask_q(q: jax.Array, can: jax.Array) -> jax.Array:
    """Q-values with inadmissible switches set to a huge negative number."""
    return jnp.where(admissible_mask(can), q, NEG_INF)


def masked_argmax(q: jax.Array, can: jax.Array) -> jax.Array:
    """Greedy admissible switch (ties go to QUICK, the cheaper model)."""
    return jnp.argmax(mask_q(q, can), axis=-1).astype(jnp.int32)


def masked_max(q: jax.Array, can: jax.Array) -> jax.Array:
    """max over admissible switches."""
    return jnp.max(mask_q(q, can), axis=-1)


def features(obs: jax.Array, b: jax.Array, n: jax.Array, use_budget: bool) -> jax.Array:
    """Switcher input: ``obs`` with ``b/n`` appended under LONDI-B (n = 0 gives 0)."""
    if not use_budget:
        return obs
    frac = jnp.where(n > 0, b / jnp.maximum(n, 1), 0.0).astype(obs.dtype)
    return jnp.concatenate([obs, frac[..., None]], axis=-1)
