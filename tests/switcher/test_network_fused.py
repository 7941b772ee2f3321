"""The Q-network's fused LayerNorm+ReLU and select-based Q(z, g) against flax / jnp references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from londi_jax.switcher.network import layer_norm_relu, q_of


def _reference(x, scale, bias):
    """nnx.LayerNorm (default settings, eps 1e-6) with the given parameters, then ReLU."""
    ln = nnx.LayerNorm(x.shape[-1], rngs=nnx.Rngs(0))
    ln.scale[...] = scale
    ln.bias[...] = bias
    return jax.nn.relu(ln(x))


@pytest.mark.parametrize("shape", [(5, 16), (3, 4, 64)])
def test_layer_norm_relu_matches_flax_value_and_gradients(shape):
    k = jax.random.split(jax.random.key(0), 4)
    x = 3.0 * jax.random.normal(k[0], shape) + 1.0
    scale = 1.0 + 0.5 * jax.random.normal(k[1], shape[-1:])
    bias = 0.3 * jax.random.normal(k[2], shape[-1:])
    w = jax.random.normal(k[3], shape)  # a loss that weighs every output differently

    ours = layer_norm_relu(x, scale, bias, 1e-6)
    ref = _reference(x, scale, bias)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert 0 < float(jnp.mean(ref > 0)) < 1  # the ReLU mask is exercised both ways

    def loss(f):
        return lambda x, s, b: jnp.sum(w * f(x, s, b) ** 2)

    g_ours = jax.grad(loss(lambda x, s, b: layer_norm_relu(x, s, b, 1e-6)), argnums=(0, 1, 2))(
        x, scale, bias)
    g_ref = jax.grad(loss(_reference), argnums=(0, 1, 2))(x, scale, bias)
    for a, b in zip(g_ours, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # jitted and vmapped (as in a sweep) gives the same gradients
    g_vm = jax.jit(jax.vmap(jax.grad(loss(lambda x, s, b: layer_norm_relu(x, s, b, 1e-6)),
                                     argnums=(0, 1, 2)), in_axes=(0, None, None)))(
        x[None], scale, bias)
    for a, b in zip(g_vm, g_ref):
        np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-4)


def test_q_of_equals_take_along_axis_and_its_gradient():
    q = jax.random.normal(jax.random.key(1), (7, 3, 2))
    g = jax.random.bernoulli(jax.random.key(2), 0.5, (7, 3)).astype(jnp.int32)

    def ref(q):
        return jnp.take_along_axis(q, g[..., None], axis=-1)[..., 0]

    np.testing.assert_array_equal(q_of(q, g), ref(q))
    np.testing.assert_array_equal(jax.grad(lambda q: jnp.sum(q_of(q, g) ** 3))(q),
                                  jax.grad(lambda q: jnp.sum(ref(q) ** 3))(q))
