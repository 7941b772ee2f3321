"""The real Gemma-3-270M GGUF (Q4_K_M, installed by ``londi-jax lm fetch gemma-3-270m --accept-license``)
in londi_jax vs transformers' PyTorch Gemma 3 built from the same file.

Both sides dequantize with the gguf package (and subtract the 1 llama.cpp adds to Gemma's norm
weights) and compute in float32; what is left is the order of floating-point sums. One prompt is
longer than the 512-token window of the 15 sliding layers, so a window that is wrong by one token,
or a sliding layer attending globally, or a wrong local RoPE base, shows in its later logits.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

pytestmark = pytest.mark.slow

NAME = "gemma-3-270m"
# measured max |logit diff| (2-core CPU): 3.2e-5 over 6 tokens, 1.5e-4 over 652 tokens (logits up to 38;
# past the window, so its sliding layers prefill in bands)
# a wrong window, local RoPE base or norm offset moves logits by far more than this
LOGIT_ATOL = 5e-3
STORY = ("Once upon a time, in a village by the sea, there lived an old fisherman who told stories to the "
         "children every evening. ")


@pytest.fixture(scope="module")
def gguf_path():
    from londi_jax.lm.fetch import installed_path

    path = installed_path(NAME)
    if path is None:
        pytest.skip(f"{NAME} is not installed (`londi-jax lm fetch {NAME} --accept-license` installs it)")
    return path


@pytest.fixture(scope="module")
def ours(gguf_path):
    from londi_jax.lm import load_lm

    lm = load_lm(NAME, progress=False)
    yield lm
    del lm
    gc.collect()


@pytest.fixture(scope="module")
def hf_tokenizer(gguf_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


@pytest.fixture(scope="module")
def reference(gguf_path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32).eval()
    yield model
    del model
    gc.collect()


def test_config_is_gemma3_with_interleaved_windows(ours, reference):
    c, r = ours.config, reference.config
    assert (c.family, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size) == \
        ("gemma3", r.num_hidden_layers, r.hidden_size, r.num_attention_heads, r.num_key_value_heads, r.head_dim,
         r.vocab_size)
    assert c.layer_types == tuple(r.layer_types) and c.layer_types.count("full_attention") == 3
    assert c.sliding_window == r.sliding_window == 512 and c.tie_embeddings
    assert (c.rope_theta, c.rope_local_theta) == (1e6, 1e4) and c.query_pre_attn_scalar == r.query_pre_attn_scalar


def test_logits_match_transformers_past_the_window(ours, reference, hf_tokenizer):
    import torch

    long_text = STORY * 25  # about 650 tokens: past the 512-token window
    prompts = ["The capital of France is", "def add(a, b):\n    return", long_text]
    seqs = [hf_tokenizer(p)["input_ids"] for p in prompts]
    assert len(seqs[-1]) > 600 and seqs[0][0] == hf_tokenizer.bos_token_id  # banded prefill too (> 2 x 256)
    for ids, got in zip(seqs, ours.logits(seqs)):
        with torch.no_grad():
            want = reference(torch.tensor([ids])).logits[0].float().numpy()
        err = float(np.abs(got - want).max())
        print(f"max |logit diff| {err:.2e} over {len(ids)} tokens (logits up to {np.abs(want).max():.1f})")
        assert got.shape == want.shape and err < LOGIT_ATOL
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def test_greedy_generation_matches_transformers(ours, reference, hf_tokenizer):
    import torch

    n_new = 12
    prompts = ["A list of three fruits: apple,", STORY * 24]
    res = ours.generate(prompts, n_new)  # one batched, left-padded call; the last prompt passes the window
    for prompt, got in zip(prompts, res.token_ids):
        ids = hf_tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = reference.generate(ids, max_new_tokens=n_new, do_sample=False,
                                     pad_token_id=hf_tokenizer.pad_token_id)
        want = out[0, ids.shape[1]:].tolist()
        want = want[: want.index(1) + 1] if 1 in want else want  # <eos> (id 1) ends both
        assert got == want, (prompt[:40], hf_tokenizer.decode(got), hf_tokenizer.decode(want))


def test_tokenizer_from_gguf_metadata_matches_transformers(ours, hf_tokenizer):
    for s in ["hello world", "  two  spaces and\ttabs\n\nnew lines", "naïve café 你好 😀", STORY, ""]:
        want = hf_tokenizer(s)["input_ids"]
        assert ours.tokenizer(s)["input_ids"] == want, s
        assert ours.tokenizer.decode(want, skip_special_tokens=True) == hf_tokenizer.decode(want, skip_special_tokens=True)
    assert ours.eog_token_ids and hf_tokenizer.eos_token_id in ours.eog_token_ids
