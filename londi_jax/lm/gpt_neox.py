"""GPT-NeoX (Pythia) in Flax NNX.

Pre-LayerNorm blocks with biases everywhere, partial rotary (``rotary_dim < head_dim``), a plain
GELU MLP ``dense_4h_to_h(gelu(dense_h_to_4h(x)))``, and either the parallel residual
``x + attn(ln1(x)) + mlp(ln2(x))`` (Pythia) or the sequential one. The checkpoint's fused
``query_key_value`` projection (interleaved per head) is split into q/k/v by the loader
(``hf_loader``), so attention itself is the shared ``layers.Attention``.
"""

from __future__ import annotations

import jax
from flax import nnx

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.layers import CausalLM, activation, jnp_dtype


class GeluMLP(nnx.Module):
    """``down(act(up(x)))`` with biases (GPT-NeoX ``dense_h_to_4h`` / ``dense_4h_to_h``)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        dt = jnp_dtype(config.dtype)
        h, f, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.act_name = config.hidden_act
        self.up_proj = nnx.Linear(h, f, use_bias=bias, dtype=dt, param_dtype=dt, rngs=rngs)
        self.down_proj = nnx.Linear(f, h, use_bias=bias, dtype=dt, param_dtype=dt, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(activation(self.act_name)(self.up_proj(x)))


class GPTNeoXForCausalLM(CausalLM):
    """GPT-NeoX causal LM (see module docstring)."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        assert config.family == "gpt_neox", config.family
        super().__init__(config, GeluMLP, rngs)
