"""Parity of the NNX Llama / Qwen2 / Mistral / GPT-NeoX ports with transformers' PyTorch models."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from lm_core_helpers import KINDS, save_tiny, torch_logits

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.hf_loader import load_hf_directory

ROWS = [[1, 5, 9, 33, 70, 101, 4], [1, 250, 3], [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_hf")


@pytest.mark.parametrize("kind", KINDS)
def test_logits_match_transformers(root, kind):
    path, ref_model = save_tiny(root, kind)
    lm = load_hf_directory(path)
    ours = lm.logits(ROWS)
    ref = torch_logits(ref_model, ROWS)
    for o, r in zip(ours, ref):
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5)


def test_config_fields_from_hf(root):
    path, _ = save_tiny(root, "llama3_tied")
    cfg = ModelConfig.from_hf_dict(json.loads((path / "config.json").read_text()))
    assert (cfg.family, cfg.num_kv_heads, cfg.head_dim, cfg.tie_embeddings) == ("llama", 1, 8, True)
    assert cfg.rope_scaling["rope_type"] == "llama3" and cfg.rope_scaling["factor"] == 8.0
    path, _ = save_tiny(root, "neox_sequential")
    cfg = ModelConfig.from_hf_dict(json.loads((path / "config.json").read_text()))
    assert (cfg.family, cfg.rotary_dim, cfg.parallel_residual, cfg.qkv_bias) == ("gpt_neox", 4, False, True)
    # transformers v4 spelling of the same options
    v4 = {"model_type": "gpt_neox", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "intermediate_size": 32, "rotary_pct": 0.25, "rotary_emb_base": 5000}
    cfg = ModelConfig.from_hf_dict(v4)
    assert (cfg.rotary_dim, cfg.rope_theta) == (2, 5000.0)
    v4_llama = {"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 32, "rope_theta": 1e4,
                "rope_scaling": {"rope_type": "llama3", "factor": 2.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}
    assert ModelConfig.from_hf_dict(v4_llama).rope_scaling["factor"] == 2.0


def test_sharded_checkpoint_loads(root):
    path, ref_model = save_tiny(root / "sharded", "qwen2", max_shard_size="30KB")
    assert (path / "model.safetensors.index.json").exists()
    assert len(list(path.glob("model-*-of-*.safetensors"))) > 1
    lm = load_hf_directory(path)
    for o, r in zip(lm.logits(ROWS), torch_logits(ref_model, ROWS)):
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5)


def test_bfloat16_params_and_activations(root):
    path, _ = save_tiny(root, "llama")
    lm32 = load_hf_directory(path)
    lm16 = load_hf_directory(path, dtype="bfloat16")
    assert lm16.config.dtype == "bfloat16"
    kernel = lm16.model.layers[0].attn.q_proj.kernel[...]
    assert kernel.dtype == jnp.bfloat16
    for a, b in zip(lm32.logits(ROWS), lm16.logits(ROWS)):
        scale = np.abs(a).max()
        assert np.abs(a - b).max() < 0.05 * scale  # bf16 has ~3 significant digits
        assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.8
    prompts, cands = [ROWS[0], ROWS[1]], [[[5, 6], [7]], [[8, 9, 10]]]
    s32, s16 = lm32.score_tokens(prompts, cands), lm16.score_tokens(prompts, cands)
    for a, b in zip(s32.logprobs, s16.logprobs):
        np.testing.assert_allclose(a, b, rtol=0.03)




@pytest.mark.parametrize("scaling", [
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},  # Llama-3.1 values: all three frequency bands occur
    {"rope_type": "linear", "factor": 4.0},
])
def test_rope_inverse_frequencies_match_transformers(scaling):
    import transformers as T
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from londi_jax.lm.layers import rope_inv_freq

    hf = T.LlamaConfig(hidden_size=2048, num_attention_heads=16, num_hidden_layers=1, intermediate_size=64,
                       rope_theta=500000.0, rope_scaling=dict(scaling), max_position_embeddings=131072)
    ref, attention_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf, None)
    assert attention_factor == 1.0  # no logit scaling for these types, none implemented
    ours = rope_inv_freq(ModelConfig.from_hf_dict(hf.to_dict()))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
