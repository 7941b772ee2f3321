"""Shared building blocks for decoder-only LMs (Flax NNX): norms, RoPE, attention with a KV cache,
the generic pre-norm decoder layer and the causal-LM trunk both families reuse.

Layout conventions (all families):
* linear kernels are ``(in, out)`` (PyTorch ``weight.T``); heads are laid out ``head * head_dim + d``
  along the projection's output axis, exactly as in Hugging Face checkpoints;
* RoPE uses the Hugging Face "rotate_half" convention (first half / second half of the rotated
  dimensions form the pairs), applied to the first ``rotary_dim`` dimensions of each head;
* the KV cache is a pytree ``KVCache(k=(per layer (B, S, KV, D)), v=(...))``;
* attention masks are boolean, True = may attend. Masked logits use the most negative finite
  float instead of -inf, so fully padded rows (batch padding) stay finite instead of NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from londi_jax.lm.config import ModelConfig

NEG_INF = float(np.finfo(np.float32).min)


def jnp_dtype(name: str) -> jnp.dtype:
    """'float32' / 'bfloat16' -> jnp dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The MLP nonlinearity named by a transformers ``hidden_act``."""
    if name == "silu":
        return jax.nn.silu
    if name == "gelu":  # PyTorch/transformers "gelu" is the exact (erf) form
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(name)  # ModelConfig validates names first


# ---------------------------------------------------------------------------------------- norms
class OffsetRMSNorm(nnx.Module):
    """Gemma's RMSNorm: ``x / rms(x) * (1 + scale)``, computed in float32 and cast back (the
    checkpoint stores ``scale``, which starts at 0; transformers' ``Gemma3RMSNorm``)."""

    def __init__(self, size: int, epsilon: float, dtype: jnp.dtype):
        self.epsilon = epsilon
        self.scale = nnx.Param(jnp.zeros((size,), dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
        return (y * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)


def make_norm(config: ModelConfig, rngs: nnx.Rngs, size: int | None = None) -> nnx.Module:
    """RMSNorm for the Llama family, Gemma's (1 + w) RMSNorm for Gemma 3, LayerNorm (with bias)
    for GPT-NeoX; over ``size`` features (default hidden_size; head_dim for q/k norms)."""
    dt = jnp_dtype(config.dtype)
    size = config.hidden_size if size is None else size
    if config.family == "gpt_neox":
        # exact variance (not E[x^2]-E[x]^2) to match PyTorch to fp32 tolerance
        return nnx.LayerNorm(size, epsilon=config.norm_eps, use_fast_variance=False,
                             dtype=dt, param_dtype=dt, rngs=rngs)
    if config.family == "gemma3":
        return OffsetRMSNorm(size, config.norm_eps, dt)
    return nnx.RMSNorm(size, epsilon=config.norm_eps, use_fast_variance=False,
                       dtype=dt, param_dtype=dt, rngs=rngs)


# ---------------------------------------------------------------------------------------- RoPE
def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """Inverse frequencies (rotary_dim // 2,) float32, incl. Llama-3 / linear scaling and llama.cpp's
    per-frequency divisors (``config.rope_freq_factors``, applied last as ggml's rope does).

    Computed like transformers (float32 powers) so positions match the PyTorch reference.
    """
    inv = _scaled_inv_freq(config)
    if config.rope_freq_factors is not None:
        inv = (inv / np.asarray(config.rope_freq_factors, np.float32)).astype(np.float32)
    return inv


def _scaled_inv_freq(config: ModelConfig) -> np.ndarray:
    dim = config.rotary_dim
    inv = 1.0 / (np.float32(config.rope_theta) ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    inv = inv.astype(np.float32)
    rs = config.rope_scaling
    if rs is None:
        return inv
    rtype = rs.get("rope_type", rs.get("type"))
    factor = float(rs["factor"])
    if rtype == "linear":
        return (inv / factor).astype(np.float32)
    # llama3: low frequencies slowed by `factor`, high kept, a smooth ramp in between
    low_ff, high_ff = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
    old_ctx = float(rs["original_max_position_embeddings"])
    low_wl, high_wl = old_ctx / low_ff, old_ctx / high_ff
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wl, inv / factor, inv)
    smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotate the first ``2 * len(inv_freq)`` dims of ``x (..., T, heads, D)`` by ``positions (..., T)``."""
    rd = 2 * inv_freq.shape[0]
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # (..., T, rd/2)
    emb = jnp.concatenate([freqs, freqs], axis=-1)[..., None, :]  # (..., T, 1, rd)
    cos, sin = jnp.cos(emb), jnp.sin(emb)
    xr = x[..., :rd].astype(jnp.float32)
    half = rd // 2
    rotated = jnp.concatenate([-xr[..., half:], xr[..., :half]], axis=-1)
    out = (xr * cos + rotated * sin).astype(x.dtype)
    if rd == x.shape[-1]:
        return out
    return jnp.concatenate([out, x[..., rd:]], axis=-1)


# ---------------------------------------------------------------------------------------- attention
class KVCache(NamedTuple):
    """Per-layer key/value buffers, each ``(B, S, num_kv_heads, head_dim)``."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]


def init_cache(config: ModelConfig, batch: int, size: int, dtype: str | None = None) -> KVCache:
    """A zeroed KV cache for ``batch`` rows and ``size`` slots."""
    dt = jnp_dtype(dtype or config.dtype)
    shape = (batch, size, config.num_kv_heads, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dt) for _ in range(config.num_layers))
    return KVCache(zeros, tuple(jnp.zeros(shape, dt) for _ in range(config.num_layers)))


def grouped_attention(
    q: jax.Array,
    shared: tuple[jax.Array, jax.Array, jax.Array] | None,
    own: tuple[jax.Array, jax.Array, jax.Array] | None = None,
    scale: float | None = None,
) -> jax.Array:
    """Softmax attention of ``q (B, K, T, N, G, D)`` over up to two key blocks, jointly normalised.

    ``shared = (k, v, mask)``: keys ``(B, S, N, D)`` shared by all K query groups (a prompt's KV
    cache), mask broadcastable to ``(B, K, T, S)``. ``own = (k, v, mask)``: keys ``(B, K, T2, N, D)``
    private to each group (a candidate's own tokens), mask ``(B, K, T, T2)``. GQA: N kv heads, each
    serving G query heads, without repeating K/V. ``scale``: the logits' scale (default
    ``1/sqrt(D)``). Returns ``(B, K, T, N, G, D)``.

    Layout: the queries are put head-major once, ``(B, N, K, G*T, D)``, so each score block comes out
    of its dot as ``(..., queries, keys)``, the layout the mask, the softmax and the value product
    read: the score tensor (the largest one, ``T x S`` per head) is never transposed.
    """
    B, K, T, N, G, D = q.shape
    f32 = jnp.float32
    qh = (q * jnp.asarray(1.0 / math.sqrt(D) if scale is None else scale, q.dtype)).transpose(0, 3, 1, 4, 2, 5).reshape(B, N, K, G * T, D)
    scores, masks = [], []
    if shared is not None:
        k, _, m = shared  # (B, S, N, D): batch (b, n), contract d
        s = jax.lax.dot_general(qh.reshape(B, N, K * G * T, D), k, (((3,), (3,)), ((0, 1), (0, 2))),
                                preferred_element_type=f32)
        scores.append(s.reshape(B, N, K, G, T, k.shape[1]))
        masks.append(m)
    if own is not None:
        k, _, m = own  # (B, K, T2, N, D): batch (b, n, k), contract d
        s = jax.lax.dot_general(qh, k, (((4,), (4,)), ((0, 1, 2), (0, 3, 1))), preferred_element_type=f32)
        scores.append(s.reshape(B, N, K, G, T, k.shape[2]))
        masks.append(m)
    sizes = [x.shape[-1] for x in scores]
    s = scores[0] if len(scores) == 1 else jnp.concatenate(scores, axis=-1)
    mask = jnp.concatenate([jnp.broadcast_to(m, (B, K, T, m.shape[-1])) for m in masks], axis=-1)
    s = jnp.where(mask[:, None, :, None], s, NEG_INF)
    p = jax.nn.softmax(s, axis=-1).astype(q.dtype)
    out = jnp.zeros((B, N, K, G * T, D), f32)
    if shared is not None:
        _, v, _ = shared
        pv = jax.lax.dot_general(p[..., :sizes[0]].reshape(B, N, K * G * T, sizes[0]), v,
                                 (((3,), (1,)), ((0, 1), (0, 2))), preferred_element_type=f32)
        out += pv.reshape(B, N, K, G * T, D)
    if own is not None:
        _, v, _ = own
        pv = jax.lax.dot_general(p[..., sizes[0] if shared is not None else 0:].reshape(B, N, K, G * T, -1), v,
                                 (((4,), (2,)), ((0, 1, 2), (0, 3, 1))), preferred_element_type=f32)
        out += pv
    return out.reshape(B, N, K, G, T, D).transpose(0, 2, 4, 1, 3, 5).astype(q.dtype)


def layer_rope_config(config: ModelConfig, layer: int) -> ModelConfig:
    """The RoPE settings of layer ``layer``: Gemma 3's sliding layers rotate with their own base
    (``rope_local_theta``) and no scaling; every other layer with ``rope_theta`` / ``rope_scaling``."""
    if config.is_sliding(layer) and config.rope_local_theta is not None:
        return config.replace(rope_theta=config.rope_local_theta, rope_scaling=None, rope_freq_factors=None)
    return config


def _chunks(x: jax.Array, C: int, n: int) -> jax.Array:
    """``x (B, T, ...)`` padded to ``n * C`` slots and cut into ``B * n`` chunks of ``C``."""
    x = jnp.pad(x, [(0, 0), (0, n * C - x.shape[1])] + [(0, 0)] * (x.ndim - 2))
    return x.reshape(x.shape[0] * n, C, *x.shape[2:])


def _bands(x: jax.Array, C: int, n: int) -> jax.Array:
    """``x (B, T, ...)`` -> ``(B * n, 2C, ...)``: for chunk j, slots ``[(j - 1) C, (j + 1) C)``
    (the chunk before it, empty before slot 0, and the chunk itself)."""
    x = jnp.pad(x, [(0, 0), (C, n * C - x.shape[1])] + [(0, 0)] * (x.ndim - 2))
    B = x.shape[0]
    prev = x[:, :n * C].reshape(B, n, C, *x.shape[2:])
    cur = x[:, C:].reshape(B, n, C, *x.shape[2:])
    return jnp.concatenate([prev, cur], axis=2).reshape(B * n, 2 * C, *x.shape[2:])


def banded_attention(q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, window: int,
                     scale: float | None) -> jax.Array:
    """Causal sliding-window self-attention of ``T`` tokens in ``window``-sized chunks: the queries
    of chunk j read only the keys of chunks j - 1 and j (``2 * window`` of them), which hold every
    key a query can reach (``q - window < key <= q``), so the work grows as ``T * window``, not
    ``T ** 2``. ``q (B, T, N, G, D)``, ``k, v (B, T, N, D)``, ``valid (B, T)`` (real tokens, one
    contiguous run per row, so slot distance is position distance). Returns ``(B, T, N, G, D)``."""
    B, T = valid.shape
    C = window
    n = -(-T // C)
    a = jnp.arange(C)[:, None]
    b = jnp.arange(2 * C)[None, :]
    dist = a + C - b  # query slot - key slot within a chunk's band
    mask = ((dist >= 0) & (dist < window))[None] & _bands(valid, C, n)[:, None, :]  # (B n, C, 2C)
    o = grouped_attention(_chunks(q, C, n)[:, None], (_bands(k, C, n), _bands(v, C, n), mask[:, None]),
                          scale=scale)[:, 0]
    return o.reshape(B, n * C, *o.shape[2:])[:, :T]


class Attention(nnx.Module):
    """Multi-head / grouped-query self-attention with RoPE (full or partial), optional biases and
    per-head q/k norms; layer ``layer``'s RoPE base and window follow ``config.layer_types``."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs, layer: int = 0):
        dt = jnp_dtype(config.dtype)
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.inv_freq = nnx.static(tuple(float(f) for f in rope_inv_freq(layer_rope_config(c, layer))))
        self.scale = nnx.static(None if c.query_pre_attn_scalar is None else float(c.query_pre_attn_scalar) ** -0.5)
        lin = lambda i, o, bias: nnx.Linear(i, o, use_bias=bias, dtype=dt, param_dtype=dt, rngs=rngs)  # noqa: E731
        self.q_proj = lin(c.hidden_size, c.num_heads * c.head_dim, c.qkv_bias)
        self.k_proj = lin(c.hidden_size, c.num_kv_heads * c.head_dim, c.qkv_bias)
        self.v_proj = lin(c.hidden_size, c.num_kv_heads * c.head_dim, c.qkv_bias)
        self.o_proj = lin(c.num_heads * c.head_dim, c.hidden_size, c.o_bias)
        if c.qk_norm:  # Qwen3, Gemma 3: the family's RMSNorm over each head's dimensions, before RoPE
            self.q_norm, self.k_norm = make_norm(c, rngs, c.head_dim), make_norm(c, rngs, c.head_dim)
        else:
            self.q_norm = self.k_norm = None

    def _qkv(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        lead = x.shape[:-1]
        n, g, d = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
        inv = np.asarray(self.inv_freq, np.float32)
        q, k = self.q_proj(x).reshape(*lead, n * g, d), self.k_proj(x).reshape(*lead, n, d)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, positions, inv).reshape(*lead, n, g, d)
        k = apply_rope(k, positions, inv)
        v = self.v_proj(x).reshape(*lead, n, d)
        return q, k, v

    def _out(self, o: jax.Array) -> jax.Array:
        return self.o_proj(o.reshape(*o.shape[:-3], self.num_heads * self.head_dim))

    def cached(self, x: jax.Array, positions: jax.Array, k_cache: jax.Array, v_cache: jax.Array,
               index: jax.Array, mask: jax.Array, band: tuple[jax.Array, int] | None = None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """``x (B, T, H)`` written into the cache at slot ``index``, then attending the cache
        under ``mask (B, T, S)``. ``band = (valid (B, T), window)``: a sliding layer's prefill
        (``index`` 0, the T tokens the whole context), attended in window-sized chunks
        (:func:`banded_attention`) instead. Returns the output and the updated cache."""
        q, k, v = self._qkv(x, positions)
        k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, index, 0, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, index, 0, 0))
        if band is not None:
            o = banded_attention(q, k, v, band[0], band[1], self.scale)
        else:
            o = grouped_attention(q[:, None], (k_cache, v_cache, mask[:, None]), scale=self.scale)[:, 0]
        return self._out(o), (k_cache, v_cache)

    def packed(self, x: jax.Array, positions: jax.Array, rows: jax.Array, flat: jax.Array,
               mask: jax.Array, band: tuple[jax.Array, int] | None = None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Prefill of packed prompts: ``x (N, H)`` holds the real tokens of all rows back to back.

        Projections run on the N packed tokens only; attention runs in the row layout: ``rows (B, P)``
        gives the packed index of each (left-padded) row slot, ``flat (N,)`` the row slot ``b * P + p``
        of each packed token, ``mask (B, P, P)`` the causal padding mask. ``band = (valid (B, P),
        window)``: a sliding layer attends in window-sized chunks (:func:`banded_attention`). Returns
        the output ``(N, H)`` and the rows' ``(k, v)``, each ``(B, P, num_kv_heads, head_dim)`` (the
        prompt cache).
        """
        q, k, v = self._qkv(x, positions)
        k, v = k[rows], v[rows]
        if band is not None:  # a sliding layer over rows longer than twice its window: in bands
            o = banded_attention(q[rows], k, v, band[0], band[1], self.scale)
        else:
            o = grouped_attention(q[rows][:, None], (k, v, mask[:, None]), scale=self.scale)[:, 0]
        return self._out(o.reshape(-1, *o.shape[2:])[flat]), (k, v)

    def with_prefix(self, x: jax.Array, positions: jax.Array, prefix_k: jax.Array, prefix_v: jax.Array,
                    prefix_mask: jax.Array, own_mask: jax.Array) -> tuple[jax.Array, None]:
        """``x (B, K, L, H)``: K continuations per row attending the row's shared prefix cache
        ``(B, P, N, D)`` (``prefix_mask`` broadcastable to ``(B, K, L, P)``) plus themselves
        (``own_mask (B, K, L, L)``)."""
        q, k, v = self._qkv(x, positions)
        o = grouped_attention(q, (prefix_k, prefix_v, prefix_mask), (k, v, own_mask), scale=self.scale)
        return self._out(o), None


# ---------------------------------------------------------------------------------------- layers
class DecoderLayer(nnx.Module):
    """Pre-norm block: sequential (Llama) or parallel (GPT-NeoX) residual around attention + MLP;
    with ``post_norms`` (Gemma 3) each branch's output is normed again before its residual add."""

    def __init__(self, config: ModelConfig, mlp: nnx.Module, rngs: nnx.Rngs, layer: int = 0):
        self.parallel_residual = config.parallel_residual
        self.attn_norm = make_norm(config, rngs)
        self.attn = Attention(config, rngs, layer)
        self.mlp_norm = make_norm(config, rngs)
        self.mlp = mlp
        self.post_attn_norm = make_norm(config, rngs) if config.post_norms else None
        self.post_mlp_norm = make_norm(config, rngs) if config.post_norms else None

    def __call__(self, x: jax.Array, attend: Callable[[Attention, jax.Array], tuple[jax.Array, object]]):
        """``attend(attn_module, normed_x) -> (out, aux)`` picks the attention mode (cache / prefix)."""
        a, aux = attend(self.attn, self.attn_norm(x))
        if self.post_attn_norm is not None:
            a = self.post_attn_norm(a)
        if self.parallel_residual:
            return x + a + self.mlp(self.mlp_norm(x)), aux
        x = x + a
        m = self.mlp(self.mlp_norm(x))
        if self.post_mlp_norm is not None:
            m = self.post_mlp_norm(m)
        return x + m, aux


class CausalLM(nnx.Module):
    """Embedding, a stack of decoder layers, final norm and LM head (optionally tied).

    Families differ only in the MLP and norm they plug in (see llama.py, gpt_neox.py). Three
    forward modes, all pure functions of the module's arrays:
    ``forward_cached`` (prefill / decode against a KV cache), ``forward_packed`` (prefill with the
    prompts' real tokens packed, padding skipped outside attention) and ``forward_with_prefix``
    (K continuations per row sharing one prompt cache).
    """

    def __init__(self, config: ModelConfig, make_mlp: Callable[[ModelConfig, nnx.Rngs], nnx.Module],
                 rngs: nnx.Rngs):
        dt = jnp_dtype(config.dtype)
        self.config = nnx.static(config)
        self.embed = nnx.Embed(config.vocab_size, config.hidden_size, dtype=dt, param_dtype=dt, rngs=rngs)
        self.layers = nnx.List([DecoderLayer(config, make_mlp(config, rngs), rngs, i)
                                for i in range(config.num_layers)])
        self.final_norm = make_norm(config, rngs)
        self.lm_head = None if config.tie_embeddings else nnx.Linear(
            config.hidden_size, config.vocab_size, use_bias=False, dtype=dt, param_dtype=dt, rngs=rngs)

    def _embed(self, tokens: jax.Array) -> jax.Array:
        x = self.embed(tokens)
        if self.config.embed_scale:  # Gemma: sqrt(hidden) rounded to the activations' dtype, as transformers does
            x = x * jnp.asarray(math.sqrt(self.config.hidden_size), x.dtype)
        return x

    def _windowed(self, mask: jax.Array, q_pos: jax.Array, k_pos: jax.Array) -> list[jax.Array]:
        """Each layer's mask: ``mask`` for global layers; for sliding ones also ``q - k <
        sliding_window`` on the positions (``q_pos`` against ``k_pos``, broadcast to ``mask``)."""
        c = self.config
        if c.layer_types is None:
            return [mask] * c.num_layers
        near = mask & ((q_pos - k_pos) < c.sliding_window)
        return [near if c.is_sliding(i) else mask for i in range(c.num_layers)]

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final-normed hidden ``(..., H)`` -> float32 logits ``(..., V)``."""
        out = self.embed.attend(hidden) if self.lm_head is None else self.lm_head(hidden)
        return out.astype(jnp.float32)

    def forward_cached(self, tokens: jax.Array, positions: jax.Array, cache: KVCache, index: jax.Array,
                       key_valid: jax.Array, ring_valid: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
        """Run ``tokens (B, T)`` at ``positions (B, T)``, writing their K/V at cache slot ``index``.

        ``key_valid (B, S)`` marks cache slots holding real tokens (after this write); query t may
        attend slot s iff ``key_valid[b, s]`` and ``s <= index + t`` (and, in a sliding layer, the
        slot's token is less than ``sliding_window`` positions back). A sliding layer whose cache
        has ``R < S`` slots is a ring buffer (``engine.decode_cache``): one token at a time
        (``T == 1``) is written at slot ``index % R`` and attends the ring's slots marked in
        ``ring_valid (B, R)``, which then hold exactly its window. Returns the final-normed hidden
        states ``(B, T, H)`` and the new cache.
        """
        slots = jnp.arange(key_valid.shape[1])
        T = tokens.shape[1]
        causal = slots[None, None, :] <= (index + jnp.arange(T))[None, :, None]
        mask = causal & key_valid[:, None, :]
        W = self.config.sliding_window
        # a prefill longer than twice the window: sliding layers attend in bands (T > 1 is always a
        # prefill from slot 0 in this engine; decode steps take one token)
        band = (key_valid[:, :T], W) if self.config.layer_types is not None and T > 2 * W else None
        k_pos = jnp.cumsum(key_valid, axis=1) - 1  # valid slots are contiguous: slot -> token position
        masks = self._windowed(mask, positions[:, :, None], k_pos[:, None, :])
        x = self._embed(tokens)
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            ring = cache.k[i].shape[1]
            if ring != key_valid.shape[1]:  # a sliding layer's ring of its last `ring` tokens
                assert ring_valid is not None and tokens.shape[1] == 1, "ring caches decode one token at a time"
                slot, mask_i = index % ring, ring_valid[:, None, :]
            else:
                slot, mask_i = index, masks[i]
            b_i = band if self.config.is_sliding(i) else None
            x, (k, v) = layer(x, lambda attn, h, i=i, slot=slot, m=mask_i, b=b_i: attn.cached(
                h, positions, cache.k[i], cache.v[i], slot, m, b))
            ks.append(k)
            vs.append(v)
        return self.final_norm(x), KVCache(tuple(ks), tuple(vs))

    def forward_packed(self, tokens: jax.Array, positions: jax.Array, rows: jax.Array, flat: jax.Array,
                       mask: jax.Array) -> tuple[jax.Array, KVCache]:
        """Prefill of packed prompts: ``tokens/positions (N,)`` are the real tokens of all rows back to
        back (padding costs nothing in the projections and MLPs, the bulk of the FLOPs); attention
        runs per row (see ``Attention.packed`` for ``rows``, ``flat``, ``mask``). Returns the
        final-normed hidden states ``(N, H)`` and the rows' cache (``B x P`` slots)."""
        row_pos = positions[rows]  # (B, P): each row slot's position (padding slots are masked anyway)
        masks = self._windowed(mask, row_pos[:, :, None], row_pos[:, None, :])
        W = self.config.sliding_window
        band = (mask[:, -1, :], W) if self.config.layer_types is not None and rows.shape[1] > 2 * W else None
        x = self._embed(tokens)
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            b_i = band if self.config.is_sliding(i) else None  # the last row of the causal mask: the row's tokens
            x, (k, v) = layer(x, lambda attn, h, i=i, b=b_i: attn.packed(h, positions, rows, flat, masks[i], b))
            ks.append(k)
            vs.append(v)
        return self.final_norm(x), KVCache(tuple(ks), tuple(vs))

    def forward_with_prefix(self, tokens: jax.Array, positions: jax.Array, valid: jax.Array,
                            prefix: KVCache, prefix_valid: jax.Array) -> jax.Array:
        """``tokens (B, K, L)`` continuing each row's prefix cache; returns hidden ``(B, K, L, H)``.

        Every continuation sees the (unpadded) prefix and its own earlier valid tokens; the prefix
        K/V is read once per row, never copied K times. A sliding layer reads only the prefix's last
        ``sliding_window`` slots (the prompts are left-padded, so those hold the only keys any
        continuation token can still reach).
        """
        L = tokens.shape[-1]
        causal = jnp.tril(jnp.ones((L, L), bool))
        own_mask = causal[None, None] & valid[:, :, None, :]
        p_mask = prefix_valid[:, None, None, :]
        p_pos = (jnp.cumsum(prefix_valid, axis=1) - 1)[:, None, None, :]
        p_masks = self._windowed(jnp.broadcast_to(p_mask, (*tokens.shape, p_mask.shape[-1])), positions[..., None],
                                 p_pos)
        own_masks = self._windowed(own_mask, positions[..., :, None], positions[..., None, :])
        x = self._embed(tokens)
        W = self.config.sliding_window
        for i, layer in enumerate(self.layers):
            pk, pv, pm = prefix.k[i], prefix.v[i], p_mask
            if self.config.is_sliding(i):
                pm = p_masks[i]
                if pk.shape[1] > W:  # left-padded prompts end at the last slot: the window lies in the last W
                    pk, pv, pm = pk[:, -W:], pv[:, -W:], pm[..., -W:]
            x, _ = layer(x, lambda attn, h, i=i, pk=pk, pv=pv, pm=pm: attn.with_prefix(h, positions, pk, pv, pm,
                                                                                       own_masks[i]))
        return self.final_norm(x)
