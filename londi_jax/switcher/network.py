"""The switch Q-network: a small Flax NNX MLP with two outputs, Q(z, QUICK) and Q(z, DEEPTHINK).

The module is split once (``nnx.split``); everything hot works on the ``(graphdef, params)``
pair, where ``params`` is an ``nnx.State`` pytree that jit/vmap/scan handle like any other.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from londi_jax.switcher.config import SwitcherConfig

NUM_SWITCHES = 2  # g = 0 (QUICK), g = 1 (DEEPTHINK)


def _row_mean(x: jax.Array, gemv: bool) -> jax.Array:
    """Mean over the last axis (keepdims); ``gemv``: as a matrix-vector product."""
    if not gemv:
        return jnp.mean(x, axis=-1, keepdims=True)
    w = jnp.full((x.shape[-1],), 1.0 / x.shape[-1], x.dtype)
    return jnp.einsum("...f,f->...", x, w)[..., None]


def _ln_relu(x, scale, bias, eps, gemv):
    # nnx.LayerNorm's maths: fast variance E[x^2] - E[x]^2 clipped at 0, then scale and bias
    mu = _row_mean(x, gemv)
    var = jnp.maximum(0.0, _row_mean(x * x, gemv) - mu * mu)
    rs = jax.lax.rsqrt(var + eps)
    return jax.nn.relu((x - mu) * (rs * scale) + bias), mu, rs


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm_relu(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """``relu(LayerNorm(x) * scale + bias)`` over the last axis of ``x [..., features]``.

    The same maths as ``nnx.LayerNorm`` then ReLU (equal to float rounding), written for XLA on
    CPU, where a vmapped sweep spends much of a gradient step in LayerNorm's row reductions:
    the gradient is the closed-form LayerNorm backward, and under differentiation the row means
    are matrix-vector products (cheaper there than XLA's reductions; measured 25% off a PQN
    gradient step). Without differentiation (acting, targets) the plain reductions are kept so
    the whole forward stays one fused kernel.
    """
    return _ln_relu(x, scale, bias, eps, False)[0]


def _ln_relu_fwd(x, scale, bias, eps):
    y, mu, rs = _ln_relu(x, scale, bias, eps, True)
    return y, (x, mu, rs, scale, y)


def _ln_relu_bwd(eps, res, dy):
    x, mu, rs, scale, y = res
    dz = jnp.where(y > 0, dy, 0.0)  # through the ReLU
    xh = (x - mu) * rs
    dxh = dz * scale
    dx = rs * (dxh - _row_mean(dxh, True) - xh * _row_mean(dxh * xh, True))
    rows = tuple(range(x.ndim - 1))
    return dx, jnp.sum(dz * xh, axis=rows), jnp.sum(dz, axis=rows)


layer_norm_relu.defvjp(_ln_relu_fwd, _ln_relu_bwd)


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
            if self.norms is not None:  # the LayerNorm's parameters, applied fused with the ReLU
                norm = self.norms[i]
                x = layer_norm_relu(x, norm.scale[...], norm.bias[...], norm.epsilon)
            else:
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


def q_of(q: jax.Array, g: jax.Array) -> jax.Array:
    """``Q(z, g)`` from Q-values ``q [..., 2]`` for switches ``g [...]`` in {0, 1}.

    A select rather than ``take_along_axis``: under ``vmap`` the gather (and the scatter in its
    gradient) costs more on CPU than the whole elementwise pick.
    """
    return jnp.where(g == 1, q[..., 1], q[..., 0])
