"""T5 and Flan-T5 (encoder-decoder) in Flax NNX: the family GLAM and SwiftSage use.

What sets T5 apart from the decoder-only families (transformers' ``models/t5/modeling_t5.py`` is the
parity reference in the tests):

* an encoder (bidirectional self-attention) reads the prompt once; the decoder (causal
  self-attention, then cross-attention to the encoder's output) writes the continuation;
* no RoPE: a learned bias per attention head and *relative position bucket* is added to the
  attention logits; the buckets are exact for small distances and logarithmic up to
  ``relative_attention_max_distance`` (:func:`relative_position_bucket`), bidirectional in the
  encoder and causal in the decoder; each stack computes its bias once (its first layer owns the
  table) and every layer shares it; cross-attention has no position bias;
* attention logits are not scaled by ``1/sqrt(d_kv)`` (T5 folds that into its initialisation);
* RMS layer norms without bias or mean subtraction, before each sub-layer (residual adds after);
* the MLP is ``wo(relu(wi(x)))`` in T5 v1.0 and ``wo(gelu_tanh(wi_0(x)) * wi_1(x))`` in v1.1 /
  Flan-T5 (``feed_forward_proj = "gated-gelu"``);
* v1.0 scales the decoder output by ``d_model ** -0.5`` before the LM head (which is the shared
  embedding); v1.1 / Flan skips the rescale and stores its own head. transformers v4 configs say
  both with ``tie_word_embeddings``; v5 configs always tie and say the rescale with
  ``scale_decoder_outputs`` (``T5Config.from_hf_dict`` reads either; a stored ``lm_head.weight``
  is used as the head: ``hf_loader.load_t5_directory``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from londi_jax.lm.config import ConfigError, UnsupportedArchitectureError
from londi_jax.lm.layers import NEG_INF, activation, jnp_dtype

FEED_FORWARD = {"relu": ("relu", False), "gated-gelu": ("gelu_new", True), "gated-silu": ("silu", True),
                "gelu": ("gelu", False)}  # feed_forward_proj -> (activation, gated)


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Everything static about a T5 model (transformers' ``T5Config`` names in brackets):
    ``hidden_size`` [d_model], ``head_dim`` [d_kv], ``num_heads``, ``intermediate_size`` [d_ff],
    ``num_layers`` (encoder) and ``num_decoder_layers``, ``relative_attention_num_buckets`` /
    ``relative_attention_max_distance``, ``norm_eps`` [layer_norm_epsilon], ``feed_forward``
    [feed_forward_proj: ``FEED_FORWARD``], ``tie_embeddings`` (the LM head is the shared embedding),
    ``scale_decoder_outputs`` (times ``d_model ** -0.5`` before the head: T5 v1.0),
    ``decoder_start_token_id`` (the decoder's first input: the pad id in T5)."""

    vocab_size: int
    hidden_size: int
    head_dim: int
    num_heads: int
    intermediate_size: int
    num_layers: int
    num_decoder_layers: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    norm_eps: float = 1e-6
    feed_forward: str = "relu"
    tie_embeddings: bool = True
    scale_decoder_outputs: bool = True
    decoder_start_token_id: int = 0
    pad_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 1
    bos_token_id: int | None = None
    max_position_embeddings: int = 512  # not a hard limit (relative positions); the engine's context cap
    dtype: str = "float32"
    model_type: str = "t5"
    family: str = "t5"

    def __post_init__(self) -> None:
        problems = [f"{n} must be positive, got {getattr(self, n)}" for n in
                    ("vocab_size", "hidden_size", "head_dim", "num_heads", "intermediate_size", "num_layers",
                     "num_decoder_layers", "relative_attention_num_buckets", "relative_attention_max_distance")
                    if int(getattr(self, n)) <= 0]
        for name in ("decoder_start_token_id", "pad_token_id"):
            v = getattr(self, name)
            if v is not None and not 0 <= int(v) < self.vocab_size:
                problems.append(f"{name} {v} is outside the vocabulary [0, {self.vocab_size})")
        if any(not 0 <= int(e) < self.vocab_size for e in self.eos_token_ids):
            problems.append(f"eos_token_id {self.eos_token_id} is outside the vocabulary [0, {self.vocab_size})")
        if self.feed_forward not in FEED_FORWARD:
            raise UnsupportedArchitectureError(f"feed_forward_proj {self.feed_forward!r} is not supported; supported: "
                                               f"{', '.join(FEED_FORWARD)}")
        if problems:
            raise ConfigError("invalid T5 config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> T5Config:
        return dataclasses.replace(self, **changes)

    @property
    def context_window(self) -> int:
        return self.max_position_embeddings

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        return self.eos_token_id if isinstance(self.eos_token_id, tuple) else (int(self.eos_token_id),)

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], dtype: str = "float32") -> T5Config:
        """Read a transformers T5 / Flan-T5 ``config.json`` dict (model_type ``t5``); raises
        ``ConfigError`` for missing or non-numeric values."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"config.json must hold a JSON object, got {type(d).__name__}")
        try:
            return cls._from_hf_dict(d, dtype)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config.json (model_type t5) has a value of the wrong type: {err}") from err

    @classmethod
    def _from_hf_dict(cls, d: Mapping[str, Any], dtype: str) -> T5Config:
        if d.get("model_type") != "t5":
            raise UnsupportedArchitectureError(f"not a T5 config: model_type={d.get('model_type')!r}")

        def need(key: str) -> Any:
            if d.get(key) is None:
                raise ConfigError(f"config.json (model_type t5) lacks required key {key!r}")
            return d[key]

        ff = str(d.get("feed_forward_proj", "relu"))
        eos = d.get("eos_token_id", 1)
        return cls(
            vocab_size=int(need("vocab_size")), hidden_size=int(need("d_model")), head_dim=int(need("d_kv")),
            num_heads=int(need("num_heads")), intermediate_size=int(need("d_ff")), num_layers=int(need("num_layers")),
            num_decoder_layers=int(d.get("num_decoder_layers") or d["num_layers"]),
            relative_attention_num_buckets=int(d.get("relative_attention_num_buckets", 32)),
            relative_attention_max_distance=int(d.get("relative_attention_max_distance", 128)),
            norm_eps=float(d.get("layer_norm_epsilon", 1e-6)), feed_forward=ff,
            tie_embeddings=bool(d.get("tie_word_embeddings", True)),
            # v5 configs say the rescale; v4 configs tied the head exactly when they rescaled
            scale_decoder_outputs=bool(d.get("scale_decoder_outputs", d.get("tie_word_embeddings", True))),
            decoder_start_token_id=int(d.get("decoder_start_token_id") or 0),
            pad_token_id=d.get("pad_token_id", 0),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            bos_token_id=d.get("bos_token_id"), max_position_embeddings=int(d.get("n_positions") or 512),
            dtype=dtype,
        )


def relative_position_bucket(relative_position: jax.Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
    """T5's bucket of each ``relative_position = key position - query position`` (int array).

    Bidirectional (encoder): half the buckets for keys after the query. Causal (decoder): only keys
    at or before it count (later ones fall in bucket 0). Of the remaining ``n`` buckets, distances
    below ``n // 2`` get one each; larger ones share logarithmically spaced buckets up to
    ``max_distance``, beyond which all fall in the last (Raffel et al. 2020, and transformers'
    ``T5Attention._relative_position_bucket``, whose integer rounding this follows)."""
    buckets = jnp.zeros_like(relative_position)
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * n
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = n // 2
    is_small = distance < max_exact
    # float32 log as transformers computes it, then truncation toward zero (.to(long))
    large = max_exact + (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
                         / math.log(max_distance / max_exact) * (n - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, n - 1)
    return buckets + jnp.where(is_small, distance, large)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, mask: jax.Array) -> jax.Array:
    """``q (B, T, N, D)`` over ``k, v (B, S, N, D)``: unscaled logits plus ``bias (N, T, S)`` (or
    none), keys masked by ``mask`` (broadcastable to ``(B, N, T, S)``), float32 softmax."""
    s = jnp.einsum("btnd,bsnd->bnts", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias[None].astype(jnp.float32)
    s = jnp.where(mask, s, NEG_INF)
    p = jax.nn.softmax(s, axis=-1).astype(q.dtype)
    return jnp.einsum("bnts,bsnd->btnd", p, v)


class T5Attention(nnx.Module):
    """Multi-head attention without biases or logit scaling (self- or cross-attention)."""

    def __init__(self, config: T5Config, rngs: nnx.Rngs):
        dt = jnp_dtype(config.dtype)
        inner = config.num_heads * config.head_dim
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        lin = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dt, param_dtype=dt, rngs=rngs)  # noqa: E731
        self.q, self.k, self.v = (lin(config.hidden_size, inner) for _ in range(3))
        self.o = lin(inner, config.hidden_size)

    def heads(self, proj: nnx.Linear, x: jax.Array) -> jax.Array:
        return proj(x).reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def __call__(self, x: jax.Array, kv: jax.Array, bias: jax.Array | None, mask: jax.Array) -> jax.Array:
        return self.over(x, self.heads(self.k, kv), self.heads(self.v, kv), bias, mask)

    def over(self, x: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None, mask: jax.Array) -> jax.Array:
        """Attention of ``x``'s queries over given keys and values ``(B, S, N, D)`` (a cache)."""
        o = _attend(self.heads(self.q, x), k, v, bias, mask)
        return self.o(o.reshape(*o.shape[:-2], -1))


class T5FeedForward(nnx.Module):
    """``wo(act(wi(x)))`` (v1.0) or ``wo(act(wi_0(x)) * wi_1(x))`` (gated: v1.1, Flan-T5)."""

    def __init__(self, config: T5Config, rngs: nnx.Rngs):
        dt = jnp_dtype(config.dtype)
        act, self.gated = FEED_FORWARD[config.feed_forward]
        self.act_name = act
        lin = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dt, param_dtype=dt, rngs=rngs)  # noqa: E731
        h, f = config.hidden_size, config.intermediate_size
        if self.gated:
            self.wi_0, self.wi_1 = lin(h, f), lin(h, f)
        else:
            self.wi = lin(h, f)
        self.wo = lin(f, h)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.act_name)
        return self.wo(act(self.wi_0(x)) * self.wi_1(x) if self.gated else act(self.wi(x)))


def _norm(config: T5Config, rngs: nnx.Rngs) -> nnx.RMSNorm:
    dt = jnp_dtype(config.dtype)  # T5LayerNorm: x * rsqrt(mean(x^2) + eps) * w, no bias, no mean subtraction
    return nnx.RMSNorm(config.hidden_size, epsilon=config.norm_eps, use_fast_variance=False, dtype=dt,
                       param_dtype=dt, rngs=rngs)


class T5Block(nnx.Module):
    """Pre-norm self-attention, (decoder) cross-attention, MLP; residual adds after each."""

    def __init__(self, config: T5Config, rngs: nnx.Rngs, decoder: bool):
        self.attn_norm, self.self_attn = _norm(config, rngs), T5Attention(config, rngs)
        self.cross_norm = _norm(config, rngs) if decoder else None
        self.cross_attn = T5Attention(config, rngs) if decoder else None
        self.ff_norm, self.ff = _norm(config, rngs), T5FeedForward(config, rngs)

    def __call__(self, x: jax.Array, bias: jax.Array, mask: jax.Array, enc: jax.Array | None = None,
                 enc_mask: jax.Array | None = None) -> jax.Array:
        h = self.attn_norm(x)
        x = x + self.self_attn(h, h, bias, mask)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_norm(x), enc, None, enc_mask)
        return x + self.ff(self.ff_norm(x))

    def step(self, x: jax.Array, t: jax.Array, cache: tuple[jax.Array, jax.Array], bias: jax.Array,
             mask: jax.Array, cross: tuple[jax.Array, jax.Array], enc_mask: jax.Array
             ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """One decoder token ``x (B, 1, H)`` at step ``t``: its key/value written into ``cache``
        (``(B, T, N, D)`` each), attending the cache under ``bias``/``mask`` and the encoder's
        precomputed ``cross`` keys/values. Returns the new ``x`` and cache."""
        h = self.attn_norm(x)
        k_c = jax.lax.dynamic_update_slice(cache[0], self.self_attn.heads(self.self_attn.k, h), (0, t, 0, 0))
        v_c = jax.lax.dynamic_update_slice(cache[1], self.self_attn.heads(self.self_attn.v, h), (0, t, 0, 0))
        x = x + self.self_attn.over(h, k_c, v_c, bias, mask)
        x = x + self.cross_attn.over(self.cross_norm(x), cross[0], cross[1], None, enc_mask)
        return x + self.ff(self.ff_norm(x)), (k_c, v_c)


class T5Stack(nnx.Module):
    """The encoder or the decoder: blocks, one relative-position bias table, a final norm."""

    def __init__(self, config: T5Config, rngs: nnx.Rngs, decoder: bool):
        dt = jnp_dtype(config.dtype)
        self.decoder = decoder
        n = config.num_decoder_layers if decoder else config.num_layers
        self.layers = nnx.List([T5Block(config, rngs, decoder) for _ in range(n)])
        self.rel_bias = nnx.Embed(config.relative_attention_num_buckets, config.num_heads, dtype=dt, param_dtype=dt,
                                  rngs=rngs)
        self.final_norm = _norm(config, rngs)
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance

    def bias(self, q_pos: jax.Array, k_pos: jax.Array) -> jax.Array:
        """The per-head bias ``(N, T, S)`` for query positions ``(T,)`` against key positions ``(S,)``."""
        bucket = relative_position_bucket(k_pos[None, :] - q_pos[:, None], not self.decoder, self.num_buckets,
                                          self.max_distance)
        return self.rel_bias(bucket).transpose(2, 0, 1)


class T5ForConditionalGeneration(nnx.Module):
    """T5 / Flan-T5: shared embedding, encoder, decoder, LM head (see the module docstring)."""

    def __init__(self, config: T5Config, rngs: nnx.Rngs):
        dt = jnp_dtype(config.dtype)
        self.config = nnx.static(config)
        self.shared = nnx.Embed(config.vocab_size, config.hidden_size, dtype=dt, param_dtype=dt, rngs=rngs)
        self.encoder = T5Stack(config, rngs, decoder=False)
        self.decoder = T5Stack(config, rngs, decoder=True)
        self.lm_head = None if config.tie_embeddings else nnx.Linear(
            config.hidden_size, config.vocab_size, use_bias=False, dtype=dt, param_dtype=dt, rngs=rngs)

    def encode(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """Final-normed encoder states ``(B, S, H)`` of ``tokens (B, S)``; ``valid (B, S)`` marks real
        tokens (padding on either side: only position differences enter the bias)."""
        S = tokens.shape[1]
        pos = jnp.arange(S)
        bias = self.encoder.bias(pos, pos)
        mask = valid[:, None, None, :]
        x = self.shared(tokens)
        for layer in self.encoder.layers:
            x = layer(x, bias, mask)
        return self.encoder.final_norm(x)

    def decode(self, tokens: jax.Array, valid: jax.Array, enc: jax.Array, enc_valid: jax.Array) -> jax.Array:
        """Final-normed decoder states ``(B, T, H)`` of decoder inputs ``tokens (B, T)`` (starting with
        ``decoder_start_token_id``, right-padded: ``valid``), attending ``enc (B, S, H)``."""
        T = tokens.shape[1]
        pos = jnp.arange(T)
        bias = self.decoder.bias(pos, pos)
        mask = (jnp.tril(jnp.ones((T, T), bool))[None] & valid[:, None, :])[:, None]
        enc_mask = enc_valid[:, None, None, :]
        x = self.shared(tokens)
        for layer in self.decoder.layers:
            x = layer(x, bias, mask, enc, enc_mask)
        return self.decoder.final_norm(x)

    def generate(self, tokens: jax.Array, valid: jax.Array, max_new: jax.Array, key: jax.Array,
                 pick: Any, stop_mask: jax.Array, new_cap: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Decode up to ``max_new <= new_cap`` tokens after encoding ``tokens (B, S)`` once: each
        decoder layer keeps a self-attention cache of ``new_cap`` slots, the encoder's keys and
        values are computed once per layer. ``pick(logits, key) -> token ids`` chooses each token;
        a row ends on a token of ``stop_mask (V,)``. Returns ``(tokens (B, new_cap), counts (B,),
        pooled encoder states (B, H))``."""
        c = self.config
        B = tokens.shape[0]
        enc = self.encode(tokens, valid)
        enc_mask = valid[:, None, None, :]
        cross = [(layer.cross_attn.heads(layer.cross_attn.k, enc), layer.cross_attn.heads(layer.cross_attn.v, enc))
                 for layer in self.decoder.layers]
        zeros = jnp.zeros((B, new_cap, c.num_heads, c.head_dim), enc.dtype)
        cache = tuple((zeros, zeros) for _ in self.decoder.layers)
        slots = jnp.arange(new_cap)
        out = jnp.zeros((B, new_cap), jnp.int32)
        done = ~valid.any(-1)
        n_gen = jnp.zeros((B,), jnp.int32)
        prev = jnp.full((B,), c.decoder_start_token_id, jnp.int32)

        def cond(carry):
            t, *_, done, _, _ = carry
            return (t < max_new) & ~jnp.all(done)

        def body(carry):
            t, cache, prev, out, done, n_gen, key = carry
            bias = self.decoder.bias(t[None], slots)  # (N, 1, new_cap): causal buckets of key - query
            mask = (slots <= t)[None, None, None, :]
            x = self.shared(prev[:, None])
            new = []
            for layer, kv, cr in zip(self.decoder.layers, cache, cross):
                x, kv = layer.step(x, t, kv, bias, mask, cr, enc_mask)
                new.append(kv)
            key, sub = jax.random.split(key)
            tok = jnp.where(done, 0, pick(self.logits(self.decoder.final_norm(x))[:, 0], sub))
            out = out.at[:, t].set(tok)
            n_gen = jnp.where(done, n_gen, t + 1)
            return t + 1, tuple(new), tok, out, done | stop_mask[tok], n_gen, key

        carry = (jnp.int32(0), cache, prev, out, done, n_gen, key)
        _, _, _, out, _, n_gen, _ = jax.lax.while_loop(cond, body, carry)
        w = valid.astype(jnp.float32)[..., None]
        pooled = (enc.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
        return out, n_gen, pooled

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Decoder states -> float32 logits (rescaled by ``d_model ** -0.5`` first in T5 v1.0)."""
        if self.config.scale_decoder_outputs:
            hidden = hidden * jnp.asarray(self.config.hidden_size ** -0.5, hidden.dtype)
        out = self.shared.attend(hidden) if self.lm_head is None else self.lm_head(hidden)
        return out.astype(jnp.float32)

    def __call__(self, enc_tokens: jax.Array, enc_valid: jax.Array, dec_tokens: jax.Array,
                 dec_valid: jax.Array) -> jax.Array:
        """Teacher-forced logits ``(B, T, V)``."""
        return self.logits(self.decode(dec_tokens, dec_valid, self.encode(enc_tokens, enc_valid), enc_valid))


def shift_right(labels: np.ndarray, start: int) -> np.ndarray:
    """Decoder inputs for ``labels (B, T)``: ``start`` then the labels but the last (T5's shift)."""
    labels = np.asarray(labels)
    return np.concatenate([np.full((labels.shape[0], 1), start, labels.dtype), labels[:, :-1]], axis=1)
