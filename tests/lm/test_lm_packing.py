"""Shape buckets (waste bound), packed prefill (padding skipped in the projections) and batch tokenization."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from lm_core_helpers import load_tiny

from londi_jax.lm.engine import PROMPT_BUCKET, bucket, packed_slots, prefill


@pytest.mark.parametrize("granule,steps", [(1, 1), (16, 1), (16, 4), (16, 8), (1, 4)])
def test_bucket_bounds_padding_and_sizes_per_octave(granule, steps):
    sizes = {}
    for n in range(1, 5000):
        b = bucket(n, granule, steps)
        assert b >= n
        # the documented bound: under n * (1 + 1/steps), or within one granule of n
        assert b < n * (1 + 1 / steps) or b - n < granule or b == granule, (n, b)
        sizes.setdefault((n - 1).bit_length(), set()).add(b)
    for octave, got in sizes.items():
        if 2 ** octave > 2 * granule * steps:
            assert len(got) <= steps, (octave, sorted(got))


def test_bucket_examples():
    assert [bucket(n, 16) for n in (1, 16, 17, 33, 193)] == [16, 16, 32, 64, 256]  # steps=1: powers of two
    assert [bucket(n, 16, 4) for n in (1, 17, 144, 160, 161, 193)] == [16, 32, 160, 160, 192, 224]
    assert [bucket(n, 16, 8) for n in (193, 2690)] == [208, 2816]
    assert [bucket(n, 1, 4) for n in range(1, 11)] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 10]


def test_packed_slots_bound_waste_and_programs_per_block():
    assert [packed_slots(n, 4 * 32) for n in (1, 26, 100, 112, 113, 128)] == [16, 32, 112, 112, None, None]
    assert [packed_slots(n, 16) for n in (2, 3, 9)] == [None] * 3  # one short prompt: steps of 16 tokens at least
    assert [packed_slots(n, 64) for n in (3, 17, 40)] == [16, 32, 48]
    for B, P in [(1, 160), (4, 192), (8, 224), (16, 320)]:
        block, seen = B * P, set()
        for n in range(1, block + 1):
            got = packed_slots(n, block)
            if got is not None:
                assert n <= got < block and got - n < max(block / 8, 16), (B, P, n, got)
            seen.add(got)
        assert len(seen - {None}) <= 7  # one program per eighth at most, whatever the prompt lengths


def test_ragged_batches_of_one_block_shape_compile_a_few_programs():
    """Scoring many batches whose lengths differ but share one (B, P) block compiles at most one
    prefill program per packed eighth (the octave scheme compiled about ten per block shape) and
    one candidate program (packing is the prefill's business only)."""
    lm, _ = load_tiny("llama")
    rng = np.random.default_rng(1)
    before, before_blocks = lm.trace_counts["prefill"], lm.trace_counts["score"]
    for _ in range(12):
        lengths = rng.integers(20, 33, 4)  # P bucket 32, B 4: block 128
        prompts = [rng.integers(3, 300, int(n)).tolist() for n in lengths]
        lm.score_tokens(prompts, [[[5], [6, 7]]] * 4)
    assert lm.trace_counts["prefill"] - before <= 3  # 80-128 real tokens: eighths 96, 112 and None
    assert lm.trace_counts["score"] - before_blocks <= 1


@pytest.mark.parametrize("kind", ["llama", "neox_parallel", "gemma3"])
def test_packed_prefill_equals_padded(kind):
    """Packing the real tokens for the projections changes no value: hidden states at real
    positions and the KV cache at real slots equal the padded layout's (incl. an empty batch row)."""
    lm, _ = load_tiny(kind)
    rng = np.random.default_rng(0)
    rows = [rng.integers(3, 300, n).tolist() for n in (19, 2, 7)] + [[]]  # last: batch padding
    B, P = 4, 32
    tok, valid = lm._left_pad(rows, B, P)
    model = nnx.merge(lm.graphdef, lm.state)
    ref_h, ref_cache, ref_kv = prefill(model, jnp.asarray(tok), jnp.asarray(valid), P + 8)
    n_real = int(valid.sum())
    for packed in (n_real, 48):
        h, cache, kv = prefill(model, jnp.asarray(tok), jnp.asarray(valid), P + 8, packed)
        np.testing.assert_array_equal(kv, ref_kv)
        np.testing.assert_allclose(np.asarray(h)[valid], np.asarray(ref_h)[valid], rtol=1e-5, atol=1e-5)
        assert cache.k[0].shape == ref_cache.k[0].shape == (B, P + 8, lm.config.num_kv_heads, lm.config.head_dim)
        for got, ref in zip(cache.k + cache.v, ref_cache.k + ref_cache.v):
            np.testing.assert_allclose(np.asarray(got)[:, :P][valid], np.asarray(ref)[:, :P][valid],
                                       rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(np.asarray(got)[:, P:], 0.0)  # decode slots start empty


def test_engine_packs_ragged_prompts():
    lm, _ = load_tiny("llama")
    rows = [[1] * 19, [1] * 2, [1] * 5]
    tok, valid, packed = lm._prompt_block(rows)
    assert tok.shape == (4, bucket(19, *PROMPT_BUCKET)) and valid.sum() == 26
    assert packed == 32 < tok.size  # eighths of the 4 x 32 block: the projections see 32 tokens, not 128
    _, _, packed = lm._prompt_block([[1] * 16])
    assert packed is None  # nothing to save: the padded layout is used


class CountingTokenizer:
    """Delegates to a transformers tokenizer and counts batch calls and single-string encodes."""

    def __init__(self, tok):
        self._tok, self.batch_calls, self.encodes = tok, 0, 0

    def __call__(self, texts, **kw):
        self.batch_calls += 1
        return self._tok(texts, **kw)

    def encode(self, text, **kw):
        self.encodes += 1
        return self._tok.encode(text, **kw)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def test_scoring_tokenizes_each_batch_in_one_call():
    lm, _ = load_tiny("llama")
    real = lm.tokenizer
    prompts = [f"you see a red ball {i} steps forward. you" for i in range(12)]
    actions = [" go forward", " turn left", " pick up the key"]
    counting = CountingTokenizer(real)
    lm.tokenizer = counting
    try:
        res = lm.score(prompts, [actions] * len(prompts))
    finally:
        lm.tokenizer = real
    assert counting.encodes == 0 and counting.batch_calls == 2  # the prompts, then the distinct candidates
    p_ids = [real.encode(p, add_special_tokens=True) for p in prompts]
    c_ids = [[real.encode(a, add_special_tokens=False) for a in actions]] * len(prompts)
    ref = lm.score_tokens(p_ids, c_ids)
    for a, b in zip(res.logprobs, ref.logprobs):
        np.testing.assert_array_equal(a, b)


def test_single_token_candidates_need_no_candidate_forward():
    """All candidates one token long: scores come from the prompt's last logits alone (the L=1
    program runs no candidate forward) and equal log-softmax of the full-sequence logits."""
    lm, _ = load_tiny("llama")
    prompts = [[1, 40, 41, 42, 43], [1, 7]]
    cands = [[[5], [6], [9]], [[100], [3]]]
    res = lm.score_tokens(prompts, cands)
    for p, cs, got in zip(prompts, cands, res.logprobs):
        last = lm.logits([p])[0][-1].astype(np.float64)
        logp = last - np.log(np.exp(last - last.max()).sum()) - last.max()
        np.testing.assert_allclose(got, [logp[c[0]] for c in cs], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T,window", [(9, 4), (16, 4), (37, 8), (5, 8)])
def test_banded_attention_equals_the_full_windowed_softmax(T, window):
    """Sliding layers' prefill in window-sized chunks (each reading its own and the previous chunk's
    keys) equals attention over every key with the causal window mask, with left-padded rows."""
    from londi_jax.lm.layers import banded_attention, grouped_attention

    rng = np.random.default_rng(T)
    B, N, G, D = 3, 2, 2, 8
    q = jnp.asarray(rng.standard_normal((B, T, N, G, D)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((B, T, N, D)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((B, T, N, D)), jnp.float32)
    valid = np.ones((B, T), bool)
    valid[1, :3] = False  # left padding
    valid[2, :] = False  # a batch-padding row
    s = np.arange(T)
    causal_window = (s[None, :] <= s[:, None]) & (s[:, None] - s[None, :] < window)
    mask = jnp.asarray(causal_window[None] & valid[:, None, :])
    want = np.asarray(grouped_attention(q[:, None], (k, v, mask[:, None]))[:, 0])
    got = np.asarray(banded_attention(q, k, v, jnp.asarray(valid), window, None))
    np.testing.assert_allclose(got[:2][valid[:2]], want[:2][valid[:2]], rtol=1e-5, atol=1e-5)
