"""The switch Q-network: a small Flax NNX MLP with two outputs, Q(z, QUICK) and Q(z, DEEPTHINK).

The module is split once (``nnx.split``); everything hot works on the ``(graphdef, params)``
pair, where ``params`` is an ``nnx.State`` pytree that jit/vmap/scan handle like any other.
"""

from __future__ import annotations

import functools

import jax
from flax import nnx

from londi_jax.switcher.config import SwitcherConfig

NUM_SWITCHES = 2  # g = 0 (QUICK), g = 1 (DEEPTHINK)


class QNetwork(nnx.Module):
    """MLP: [Dense -> (LayerNorm) -> ReLU] * len(hidden) -> Dense(2)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], layer_norm: bool, *, rngs: nnx.Rngs):
        dims = (in_dim, *hidden)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in hidden]) if layer_norm else None
        self.head = nnx.Linear(dims[-1], NUM_SWITCHES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = jax.nn.relu(x)
        return self.head(x)


def _build(config: SwitcherConfig, key: jax.Array) -> QNetwork:
    return QNetwork(config.input_dim, config.hidden, config.layer_norm, rngs=nnx.Rngs(params=key))


@functools.lru_cache(maxsize=64)
def graphdef(config: SwitcherConfig) -> nnx.GraphDef:
    """The static graph of the Q-network for ``config`` (no weights are materialised)."""
    abstract = nnx.eval_shape(lambda: _build(config, jax.random.key(0)))
    return nnx.split(abstract)[0]


def init_params(config: SwitcherConfig, key: jax.Array) -> nnx.State:
    """Fresh Q-network parameters (pure; vmappable over ``key``)."""
    return nnx.split(_build(config, key))[1]


def q_values(gdef: nnx.GraphDef, params: nnx.State, x: jax.Array) -> jax.Array:
    """Q-values ``[..., 2]`` for features ``x [..., input_dim]`` (pure)."""
    model = nnx.merge(gdef, params)
    flat = x.reshape((-1, x.shape[-1]))
    return model(flat).reshape((*x.shape[:-1], NUM_SWITCHES))
