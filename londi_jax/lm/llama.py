"""The Llama family in Flax NNX: Llama 2/3, SmolLM/SmolLM2, Mistral (no sliding window), Qwen2.

Differences inside the family are config flags: GQA (``num_kv_heads``), q/k/v biases (Qwen2,
``qkv_bias``), Llama-3 RoPE scaling, tied or untied embeddings. The block is pre-RMSNorm with a
sequential residual and a SwiGLU MLP: ``down(silu(gate(x)) * up(x))``.
"""

from __future__ import annotations

import jax
from flax import nnx

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.layers import CausalLM, activation, jnp_dtype


class SwiGLU(nnx.Module):
    """Gated MLP ``down(act(gate(x)) * up(x))``."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        dt = jnp_dtype(config.dtype)
        h, f, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.act_name = config.hidden_act
        self.gate_proj = nnx.Linear(h, f, use_bias=bias, dtype=dt, param_dtype=dt, rngs=rngs)
        self.up_proj = nnx.Linear(h, f, use_bias=bias, dtype=dt, param_dtype=dt, rngs=rngs)
        self.down_proj = nnx.Linear(f, h, use_bias=bias, dtype=dt, param_dtype=dt, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(activation(self.act_name)(self.gate_proj(x)) * self.up_proj(x))


class LlamaForCausalLM(CausalLM):
    """Llama-family causal LM (see module docstring)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        assert config.family == "llama", config.family
        assert not config.parallel_residual, "the Llama family uses a sequential residual"
        super().__init__(config, SwiGLU, rngs)
