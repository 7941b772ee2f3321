"""GGUF reading: q/k unpermutation, dequantization, metadata -> config, and clear errors (tiny files)."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_files import llama_cpp_permute
from londi_jax.lm.gguf_loader import GGUFError, permute_rotary_rows, read_gguf, unpermute_rotary_rows


@pytest.mark.parametrize("heads,head_dim,cols", [(1, 2, 3), (4, 16, 5), (3, 64, 1)])
def test_unpermute_inverts_llama_cpp_permutation(heads, head_dim, cols):
    w = np.random.default_rng(0).standard_normal((heads * head_dim, cols)).astype(np.float32)
    stored = llama_cpp_permute(w, heads)
    np.testing.assert_array_equal(permute_rotary_rows(w, heads), stored)
    np.testing.assert_array_equal(unpermute_rotary_rows(stored, heads), w)
    bias = w[:, 0]
    np.testing.assert_array_equal(unpermute_rotary_rows(llama_cpp_permute(bias[:, None], heads)[:, 0], heads), bias)


def _rope_rotate_half(x, pos, theta=10000.0):
    """Hugging Face Llama rotary: dimension i pairs with i + d/2."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = pos * inv
    cos, sin = np.concatenate([np.cos(ang)] * 2), np.concatenate([np.sin(ang)] * 2)
    rot = np.concatenate([-x[d // 2:], x[: d // 2]])
    return x * cos + rot * sin


def _rope_interleaved(x, pos, theta=10000.0):
    """llama.cpp rotary for llama: adjacent dimensions (2i, 2i+1) form a pair."""
    d = x.shape[-1]
    ang = pos * theta ** (-np.arange(0, d, 2) / d)
    a, b = x[0::2], x[1::2]
    out = np.empty_like(x)
    out[0::2] = a * np.cos(ang) - b * np.sin(ang)
    out[1::2] = a * np.sin(ang) + b * np.cos(ang)
    return out


def test_permutation_turns_rotate_half_into_interleaved_rope():
    """Why the permutation exists: attention scores with llama.cpp's stored weights + interleaved
    rotary equal those with Hugging Face weights + rotate-half rotary."""
    rng = np.random.default_rng(1)
    d, hidden = 16, 24
    wq, wk = rng.standard_normal((d, hidden)), rng.standard_normal((d, hidden))
    x1, x2 = rng.standard_normal(hidden), rng.standard_normal(hidden)
    hf = _rope_rotate_half(wq @ x1, 5) @ _rope_rotate_half(wk @ x2, 2)
    cpp = _rope_interleaved(llama_cpp_permute(wq, 1) @ x1, 5) @ _rope_interleaved(llama_cpp_permute(wk, 1) @ x2, 2)
    np.testing.assert_allclose(cpp, hf, rtol=1e-10)


@pytest.mark.parametrize("quant", [None, "Q8_0", "Q4_1"])
@pytest.mark.parametrize("tie", [True, False])
def test_tiny_llama_tensors_round_trip(tiny_gguf, quant, tie):
    path, info = tiny_gguf(quant=quant, tie=tie)
    ck = read_gguf(path)
    assert set(ck.tensors) == set(info["tensors"])
    for name, want in info["tensors"].items():
        got = ck.tensors[name]
        assert got.dtype == np.float32 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    c = ck.config
    assert c["model_type"] == "llama" and c["tie_word_embeddings"] is tie
    assert (c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]) == (
        info["layers"], info["hidden"], info["heads"], info["kv_heads"])
    assert c["head_dim"] == info["head_dim"] and c["intermediate_size"] == 128
    assert c["vocab_size"] == info["vocab"] and c["max_position_embeddings"] == 256
    assert c["rope_theta"] == 10000.0 and c["rms_norm_eps"] == pytest.approx(1e-5)
    assert (c["bos_token_id"], c["eos_token_id"], c["pad_token_id"]) == (1, 2, 0)
    assert c["attention_bias"] is False


def test_qwen2_is_not_unpermuted_and_has_biases(tiny_gguf):
    path, info = tiny_gguf(arch="qwen2", pre="qwen2")
    ck = read_gguf(path)
    assert ck.config["model_type"] == "qwen2" and "attention_bias" not in ck.config
    for name, want in info["tensors"].items():
        np.testing.assert_array_equal(ck.tensors[name], want, err_msg=name)


def test_qwen3_has_per_head_q_k_norms_and_wide_heads(tiny_gguf):
    from londi_jax.lm import load_gguf

    path, info = tiny_gguf(arch="qwen3", pre="qwen2", quant="Q8_0", tie=False)
    ck = read_gguf(path)
    assert ck.config["model_type"] == "qwen3" and ck.config["head_dim"] == info["head_dim"] == 128
    assert set(ck.tensors) == set(info["tensors"]) and "model.layers.1.self_attn.k_norm.weight" in ck.tensors
    for name, want in info["tensors"].items():  # not unpermuted (llama.cpp keeps Qwen's q/k rows as they are)
        np.testing.assert_array_equal(ck.tensors[name], want, err_msg=name)
    # transformers' own GGUF reader and PyTorch Qwen3 give the logits we give
    import torch
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    lm = load_gguf(path, progress=False)
    assert lm.config.qk_norm and lm.config.family == "llama"
    rows = [[5, 9, 33, 70, 101], [7, 8, 9]]
    for ours, row in zip(lm.logits(rows), rows):
        with torch.no_grad():
            theirs = ref(torch.tensor([row])).logits[0].float().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_transformers_reads_the_tiny_file_like_we_do(tiny_gguf):
    """transformers' own GGUF reader (independent unpermute) gives the same tensors."""
    from transformers import AutoModelForCausalLM

    path, info = tiny_gguf(quant="Q8_0", tie=False)
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).state_dict()
    ours = read_gguf(path).tensors
    assert set(ours) == set(ref)
    for name in ours:
        np.testing.assert_array_equal(ours[name], ref[name].float().numpy(), err_msg=name)


def test_our_reader_parses_exactly_what_ggufs_reader_parses(tiny_gguf, smollm2_gguf):
    """``gguf_loader._reader_class`` (gguf's reader over a plain view of the mapping, which our loader and
    the tests' transformers references use) gives every field and tensor of gguf's stock reader."""
    from gguf.gguf_reader import GGUFReader

    from londi_jax.lm.gguf_loader import _reader_class

    for path in (tiny_gguf(quant="Q8_0", tie=False)[0], smollm2_gguf):  # the real one: a 49k-token vocabulary
        ours, stock = _reader_class()(str(path)), GGUFReader(str(path))
        assert type(ours.data) is np.ndarray and isinstance(stock.data, np.memmap)
        assert list(ours.fields) == list(stock.fields)
        for name, field in stock.fields.items():
            assert ours.fields[name].contents() == field.contents(), name
        assert [(t.name, t.tensor_type, list(t.shape), t.data_offset) for t in ours.tensors] == \
            [(t.name, t.tensor_type, list(t.shape), t.data_offset) for t in stock.tensors]
        for a, b in zip(ours.tensors, stock.tensors):
            np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)


def test_missing_file_error(tmp_path):
    with pytest.raises(GGUFError, match="not found"):
        read_gguf(tmp_path / "nope.gguf")


def test_not_a_gguf_error(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf(p)


@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_truncated_gguf_error(tiny_gguf, tmp_path, keep):
    path, _ = tiny_gguf(quant="Q4_1")
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(GGUFError, match="truncated or corrupt|corrupt"):
        ck = read_gguf(cut)
        for name in ck.tensors:  # a cut in the tensor data only shows when the data is read
            ck.tensors[name]


def test_unknown_architecture_error(tmp_path):
    import gguf

    p = tmp_path / "falcon.gguf"
    w = gguf.GGUFWriter(str(p), "falcon")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GGUFError, match=r"architecture 'falcon'.*supported: gemma3, llama, qwen2, qwen3"):
        read_gguf(p)
