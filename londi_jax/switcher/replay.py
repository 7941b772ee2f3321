"""A replay buffer as a pytree ring buffer: ``init`` / ``add`` / ``sample`` / ``can_sample``.

Storage is preallocated ``[capacity, ...]`` per leaf; ``add`` scatters a batch of items at the
write pointer (wrapping), so under ``jax.jit`` with the buffer donated it updates in place.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from londi_jax.utils.errors import LondiError


class ReplayError(LondiError):
    """Misuse of the replay buffer (wrong capacity, sampling an empty buffer, ...)."""


class ReplayState(struct.PyTreeNode):
    """Ring-buffer storage ``data`` (leaves ``[capacity, ...]``), write pointer and fill level."""

    data: Any
    ptr: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def init(example_item: Any, capacity: int) -> ReplayState:
    """Empty buffer holding ``capacity`` items shaped like ``example_item`` (one item, no batch dim)."""
    if capacity < 1:
        raise ReplayError(f"replay capacity must be >= 1, got {capacity}")
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example_item)
    return ReplayState(data=data, ptr=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def add(state: ReplayState, items: Any) -> ReplayState:
    """Append a batch of items (leaves ``[k, ...]``), overwriting the oldest when full."""
    capacity = state.capacity
    k = jax.tree.leaves(items)[0].shape[0]
    if k > capacity:
        raise ReplayError(f"adding {k} items to a buffer of capacity {capacity}; raise buffer_size")
    idx = (state.ptr + jnp.arange(k, dtype=jnp.int32)) % capacity
    data = jax.tree.map(lambda buf, x: buf.at[idx].set(x.astype(buf.dtype)), state.data, items)
    return ReplayState(data=data, ptr=(state.ptr + k) % capacity,
                       size=jnp.minimum(state.size + k, capacity))


def can_sample(state: ReplayState, batch_size: int) -> jax.Array:
    """True once the buffer holds at least ``batch_size`` items."""
    return state.size >= batch_size


def sample(state: ReplayState, key: jax.Array, batch_size: int) -> Any:
    """Uniform sample (with replacement) of ``batch_size`` items among those stored.

    On an empty buffer this returns zero-filled slots; check ``can_sample`` (or gate with
    ``lax.cond``) before learning from it.
    """
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree.map(lambda buf: buf[idx], state.data)
