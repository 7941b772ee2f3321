"""Gemma 3 (text) in Flax NNX: Gemma-3-270M/1B and the text towers of the larger models.

What sets it apart from the Llama block (all config flags, read by the shared layers):
* token embeddings scaled by ``sqrt(hidden_size)`` (the tied LM head reads them unscaled);
* RMSNorms that multiply by ``(1 + w)`` in float32 (``layers.OffsetRMSNorm``; the checkpoint's
  ``w`` is stored as it is, so loading and saving are exact);
* "sandwich" norms: attention and MLP outputs are normed again before each residual add;
* per-head RMSNorm of queries and keys before RoPE (``qk_norm``), logits scaled by
  ``query_pre_attn_scalar ** -0.5``;
* interleaved sliding-window and global layers (``layer_types``: five local layers of window
  ``sliding_window``, then one global), each kind with its own RoPE base;
* a gated GELU-tanh MLP ``down(gelu_tanh(gate(x)) * up(x))``.

Source: transformers' ``models/gemma3/modeling_gemma3.py`` (the parity reference in the tests).
"""

from __future__ import annotations

from flax import nnx

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.layers import CausalLM
from londi_jax.lm.llama import SwiGLU


class Gemma3ForCausalLM(CausalLM):
    """Gemma 3 text causal LM (see module docstring)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        assert config.family == "gemma3", config.family
        assert config.post_norms and config.embed_scale and config.qk_norm, "Gemma 3 flags (ModelConfig.from_hf_dict)"
        super().__init__(config, SwiGLU, rngs)  # the gated MLP with hidden_act gelu_pytorch_tanh
