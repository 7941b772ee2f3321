"""RoPE scaling in GGUF files: Llama-3.1/3.2's ``rope_freqs.weight`` and linear scaling, checked against
transformers running the same weights from a Hugging Face config with the equivalent ``rope_scaling``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from londi_jax.lm import load_gguf
from londi_jax.lm.config import ConfigError, ModelConfig
from londi_jax.lm.gguf_loader import GGUFError, read_gguf

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}  # head_dim 16, theta 1e4: high, medium and low frequencies


def llama_cpp_rope_freqs(base: float, dim: int, scaling: dict) -> np.ndarray:
    """``rope_freqs.weight`` as llama.cpp's convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors)
    computes it: torch float32 frequencies, one divisor each (1, factor, or the smooth blend)."""
    import torch

    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]  # the converter reads 8192 by default
    low_wavelen, high_wavelen = old_context_len / low, old_context_len / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_context_len / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32).numpy()


def _torch_reference(info, rope_scaling):
    """transformers' Llama with the file's weights and ``rope_scaling``."""
    import torch
    import transformers as T

    cfg = T.LlamaConfig(vocab_size=info["vocab"], hidden_size=info["hidden"], intermediate_size=128,
                        num_hidden_layers=info["layers"], num_attention_heads=info["heads"],
                        num_key_value_heads=info["kv_heads"], rms_norm_eps=1e-5, rope_theta=10000.0,
                        max_position_embeddings=256, tie_word_embeddings=False, rope_scaling=rope_scaling)
    model = T.LlamaForCausalLM(cfg).eval()
    missing, unexpected = model.load_state_dict({k: torch.tensor(v) for k, v in info["tensors"].items()}, strict=False)
    assert not missing and not unexpected
    return model


def _logits_close(lm, model, seqs, atol=1e-4):
    import torch

    for ids, got in zip(seqs, lm.logits(seqs)):
        with torch.no_grad():
            want = model(torch.tensor([ids])).logits[0].numpy()
        np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)


SEQS = [np.random.default_rng(0).integers(3, 260, size=n).tolist() for n in (7, 200)]


def test_rope_freqs_give_llama3_scaling(tiny_gguf):
    factors = llama_cpp_rope_freqs(10000.0, 16, LLAMA3)
    assert 1.0 < factors[1] < factors[2] < 8.0 and factors[0] == 1.0 and factors[-1] == 8.0  # all three regimes
    path, info = tiny_gguf(tie=False, rope_freqs=factors)
    ck = read_gguf(path)
    assert "rope_freqs.weight" not in ck.tensors and ck.config["rope_freq_factors"] == factors.tolist()
    lm = load_gguf(path, progress=False)
    assert lm.config.rope_freq_factors == tuple(factors.tolist())
    _logits_close(lm, _torch_reference(info, dict(LLAMA3)), SEQS)
    # the scaling matters at these positions: without it the long sequence's logits differ
    plain = _torch_reference(info, None)
    import torch

    with torch.no_grad():
        unscaled = plain(torch.tensor([SEQS[1]])).logits[0].numpy()
    assert np.abs(lm.logits([SEQS[1]])[0] - unscaled).max() > 1e-2


def test_linear_rope_scaling_metadata(tiny_gguf):
    path, info = tiny_gguf(tie=False, metadata={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0})
    lm = load_gguf(path, progress=False)
    assert dict(lm.config.rope_scaling) == {"rope_type": "linear", "factor": 2.0}
    _logits_close(lm, _torch_reference(info, {"rope_type": "linear", "factor": 2.0}), SEQS)


def test_unsupported_rope_scaling_and_bad_factors(tiny_gguf):
    path, _ = tiny_gguf(metadata={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(GGUFError, match="rope scaling 'yarn'.*not supported.*rope_freqs"):
        read_gguf(path)
    path, _ = tiny_gguf("short.gguf", rope_freqs=np.ones(5, np.float32))
    with pytest.raises(GGUFError, match="head_dim/2 = 8"):
        read_gguf(path)
    base = dict(family="llama", vocab_size=8, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2,
                head_dim=8, intermediate_size=8)
    with pytest.raises(ConfigError, match="rope_freq_factors"):
        ModelConfig(**base, rope_freq_factors=(1.0, 2.0, 0.0, 1.0))
    assert ModelConfig(**base, rope_freq_factors=[1, 2, 3, 4]).rope_freq_factors == (1.0, 2.0, 3.0, 4.0)
