"""Tiny GGUF files written in a test, the way llama.cpp's converter writes them (imported by tests
as ``from gguf_files import ...``; conftest.py only holds fixtures, so a second conftest.py in a
test folder cannot shadow these names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "o n", "Ġ Ġ", "e r", "Ġa n", "Ġan d"]
TINY_TEMPLATE = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)


# A Llama-3-style tokenizer: 'llama-bpe' pre-tokenizer (BOS by default), BOS 0, EOS 1 (<|end_of_text|>),
# <|eot_id|> 2 ends a turn, a template that writes the BOS itself, no add_bos_token key.
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
    " + m['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def llama3_tokenizer_kwargs(**overrides) -> dict:
    """``write_tiny_gguf`` arguments for the Llama-3-style tokenizer above (``overrides`` win)."""
    return {**dict(pre="llama-bpe", specials=LLAMA3_SPECIALS, bos_id=0, eos_id=1, pad_id=None, add_bos=None,
                   chat_template=LLAMA3_TEMPLATE), **overrides}


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order, written index by index (independent of the loader's reshape trick):
    in every head, Hugging Face row ``half * d/2 + i`` is stored at row ``2 * i + half``."""
    d = w.shape[0] // n_heads
    out = np.empty_like(w)
    for h in range(n_heads):
        for i in range(d // 2):
            for half in range(2):
                out[h * d + 2 * i + half] = w[h * d + half * (d // 2) + i]
    return out


def _byte_alphabet_tokens() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return [bytes_to_unicode()[b] for b in range(256)]


def write_tiny_gguf(path: Path, *, arch: str = "llama", quant: str | None = None, tie: bool = True,
                    add_bos: bool | None = False, seed: int = 0, pre: str = "smollm", context: int = 256,
                    specials: list[str] | None = None, bos_id: int | None = 1, eos_id: int | None = 2,
                    pad_id: int | None = 0, chat_template: str | None = TINY_TEMPLATE,
                    metadata: dict | None = None, rope_freqs: np.ndarray | None = None,
                    script: list[int] | None = None) -> dict:
    """Write a random tiny model as a GGUF file; return its Hugging Face-layout tensors and shape info.

    ``specials`` (control tokens, ids 0..) default to TINY_SPECIAL; ``add_bos=None`` / ``bos_id=None`` /
    ``chat_template=None`` ... leave the key out; ``metadata`` adds keys (int -> uint32, float32, bool, str);
    ``rope_freqs`` is written as llama.cpp's ``rope_freqs.weight``. ``script`` (distinct ids, untied head
    only) makes greedy generation emit ``script[0], script[1], ...`` (cyclically) after any prompt: token
    ``script[i]`` writes a large marker into residual dimension i (every other token into dimension
    len(script)), and LM-head row ``script[i+1]`` reads it, so the next token is decided by the
    current one; the random weights add only O(1) noise to logits of about 400."""
    import gguf
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(seed)
    specials = list(TINY_SPECIAL if specials is None else specials)
    tokens = specials + _byte_alphabet_tokens() + ["".join(m.split(" ")) for m in TINY_MERGES]
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    vocab, hidden, heads, kv_heads, ffn, layers = len(tokens), 64, 4, 2, 128, 2
    head_dim = 128 if arch == "qwen3" else hidden // heads  # real Qwen3 heads: 128 wide whatever the hidden size

    def rnd(*shape, scale=0.08):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    hf = {"model.embed_tokens.weight": rnd(vocab, hidden, scale=0.5), "model.norm.weight": 1 + rnd(hidden)}
    if not tie:
        hf["lm_head.weight"] = rnd(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        hf[p + "input_layernorm.weight"] = 1 + rnd(hidden)
        hf[p + "post_attention_layernorm.weight"] = 1 + rnd(hidden)
        hf[p + "self_attn.q_proj.weight"] = rnd(heads * head_dim, hidden)
        hf[p + "self_attn.k_proj.weight"] = rnd(kv_heads * head_dim, hidden)
        hf[p + "self_attn.v_proj.weight"] = rnd(kv_heads * head_dim, hidden)
        hf[p + "self_attn.o_proj.weight"] = rnd(hidden, heads * head_dim)
        hf[p + "mlp.gate_proj.weight"] = rnd(ffn, hidden)
        hf[p + "mlp.up_proj.weight"] = rnd(ffn, hidden)
        hf[p + "mlp.down_proj.weight"] = rnd(hidden, ffn)
        if arch == "qwen2":
            for k, n in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
                hf[p + f"self_attn.{k}_proj.bias"] = rnd(n * head_dim)
        if arch == "qwen3":
            hf[p + "self_attn.q_norm.weight"] = 1 + rnd(head_dim)
            hf[p + "self_attn.k_norm.weight"] = 1 + rnd(head_dim)

    if script is not None:
        assert not tie and len(set(script)) == len(script) < hidden, "script: distinct ids, untied head"
        emb, head, n = hf["model.embed_tokens.weight"], hf["lm_head.weight"], len(script)
        emb[:, : n + 1] = 0.0
        emb[:, n] = 100.0  # "any other token"
        for i, t in enumerate(script):
            emb[t, n], emb[t, i] = 0.0, 100.0
            head[script[(i + 1) % n], i] = 50.0
        head[script[0], n] = 50.0

    qtype = getattr(gguf.GGMLQuantizationType, quant) if quant else None
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(context)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    if head_dim != hidden // heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(TINY_MERGES)
    for value, add in ((bos_id, w.add_bos_token_id), (eos_id, w.add_eos_token_id), (pad_id, w.add_pad_token_id),
                       (add_bos, w.add_add_bos_token), (chat_template, w.add_chat_template)):
        if value is not None:
            add(value)
    for key, value in (metadata or {}).items():
        add = {bool: w.add_bool, str: w.add_string, float: w.add_float32}.get(type(value), w.add_uint32)
        add(key, value)
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, np.float32))

    gguf_names = {
        "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer_names = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias", "mlp.gate_proj.weight": "ffn_gate.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
    }
    expected = {}
    for name, t in hf.items():
        if name.startswith("model.layers."):
            _, _, idx, rest = name.split(".", 3)
            gname = f"blk.{idx}.{layer_names[rest]}"
        else:
            gname = gguf_names[name]
        stored = t
        if arch == "llama" and ("q_proj" in name or "k_proj" in name):
            stored = llama_cpp_permute(t, heads if "q_proj" in name else kv_heads)
        if qtype is not None and t.ndim == 2:
            data = quantize(stored, qtype)
            w.add_tensor(gname, data, raw_dtype=qtype)
            expected[name] = dequantize(quantize(t, qtype), qtype).reshape(t.shape)
        else:
            w.add_tensor(gname, stored)
            expected[name] = t
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"tensors": expected, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
            "vocab": vocab, "tokens": tokens, "layers": layers, "hidden": hidden}
