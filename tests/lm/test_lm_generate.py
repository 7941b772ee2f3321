"""Batched KV-cache generation: greedy parity with transformers, bucketing, stops, sampling, cost."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lm_core_helpers import load_tiny, torch_greedy

from londi_jax.lm.engine import bucket, sample_token
from londi_jax.lm.interface import ContextLengthError, LMInputError

PROMPTS = [[1, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26], [1, 60], [1, 70, 71, 72, 73, 74]]


@pytest.mark.parametrize("kind", ["llama", "neox_parallel", "qwen3", "gemma3", "mistral_window"])
def test_greedy_equals_transformers_generate(kind):
    lm, ref = load_tiny(kind)
    ours, reasons = lm.generate_tokens(PROMPTS, 12)
    theirs = torch_greedy(ref, PROMPTS, 12)
    assert ours == theirs
    for row, why in zip(ours, reasons):
        assert why == ("eos" if row[-1] == 2 else "length")
        assert len(row) == 12 or row[-1] == 2


def test_prompt_lengths_in_one_bucket_reuse_the_program():
    lm, _ = load_tiny("llama")
    lm.generate_tokens([[1, 5, 6]], 5)  # bucket: batch 1, prompt 16, new-token cap 16
    before = lm.trace_counts["generate"]
    a, _ = lm.generate_tokens([[1, 5, 6, 7, 8, 9, 10, 11, 12]], 7)  # other length and cap, same buckets
    b, _ = lm.generate_tokens([[1, 40]], 16)
    assert lm.trace_counts["generate"] == before
    assert len(a[0]) <= 7 and len(b[0]) <= 16
    lm.generate_tokens([[1] * 17], 3)  # prompt bucket 32: a new program
    assert lm.trace_counts["generate"] == before + 1
    before = lm.trace_counts["score"]
    lm.score_tokens([[1, 2, 3]], [[[4], [5, 6]]])
    lm.score_tokens([[1, 2, 3, 9, 9, 9]], [[[7, 7], [5]]])  # candidate count and length are bucketed exactly
    assert lm.trace_counts["score"] - before <= 1
    assert [bucket(n, 16) for n in (1, 16, 17, 33)] == [16, 16, 32, 64]


def test_max_new_tokens_respected_and_batch_padding_rows_ignored():
    lm, ref = load_tiny("llama")
    three = [PROMPTS[0], PROMPTS[1], PROMPTS[2]]  # batch bucket 4: one all-padding row
    full, _ = lm.generate_tokens(three, 12)
    short, _ = lm.generate_tokens(three, 3)
    assert short == [r[:3] for r in full]
    alone, _ = lm.generate_tokens([PROMPTS[1]], 12)
    assert alone[0] == full[1]


def test_eos_and_stop_strings():
    lm, _ = load_tiny("llama")
    ids, _ = lm.generate_tokens([PROMPTS[0]], 12)
    res = lm.generate([lm.tokenizer.decode(PROMPTS[0][1:])], 12)
    full_text = res.texts[0]
    assert res.finish_reasons[0] in ("length", "eos")
    assert len(full_text) > 2
    stop = full_text[len(full_text) // 2: len(full_text) // 2 + 2]
    cut = lm.generate([lm.tokenizer.decode(PROMPTS[0][1:])], 12, stop=[stop])
    assert cut.finish_reasons == ["stop"]
    assert cut.texts[0] == full_text[: full_text.find(stop)]
    assert res.token_ids[0][: len(cut.token_ids[0])] == cut.token_ids[0]
    assert stop in lm.tokenizer.decode(cut.token_ids[0]) and stop not in lm.tokenizer.decode(cut.token_ids[0][:-1])


def test_eos_from_config_stops_rows():
    lm, _ = load_tiny("llama")
    ids, _ = lm.generate_tokens(PROMPTS, 12)
    target = ids[0][3]  # pretend this token is EOS: row 0 must stop right there
    lm._stop_masks.clear()
    old = lm.config
    try:
        lm.config = old.replace(eos_token_id=(2, target))
        got, reasons = lm.generate_tokens(PROMPTS, 12)
    finally:
        lm.config = old
        lm._stop_masks.clear()
    for row, new, why in zip(ids, got, reasons):
        k = next((j for j, t in enumerate(row) if t in (2, target)), None)
        assert new == (row if k is None else row[: k + 1])
        assert why == ("length" if k is None else "eos")


def test_sample_token_filters_match_definition():
    logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    keys = jax.random.split(jax.random.key(0), 400)
    draw = jax.vmap(lambda k, tk, tp: sample_token(logits, k, jnp.float32(1.0), tk, tp), in_axes=(0, None, None))
    seen = lambda tk, tp: set(np.asarray(draw(keys, jnp.int32(tk), jnp.float32(tp))).ravel().tolist())  # noqa: E731
    assert seen(2, 1.0) == {0, 1}
    assert seen(5, 0.5) == {0}  # 0.5 reached by the first token alone
    assert seen(5, 0.8) == {0, 1, 2}  # 0.5 + 0.2 < 0.8 needs the third
    assert seen(5, 1.0) == {0, 1, 2, 3, 4}
    freq = np.bincount(np.asarray(draw(keys, jnp.int32(5), jnp.float32(1.0))).ravel(), minlength=5) / 400
    np.testing.assert_allclose(freq, [0.5, 0.2, 0.15, 0.1, 0.05], atol=0.08)


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    lm, _ = load_tiny("llama")
    greedy, _ = lm.generate_tokens(PROMPTS, 8)
    k1, _ = lm.generate_tokens(PROMPTS, 8, temperature=0.9, top_k=1, seed=3)
    assert k1 == greedy
    a, _ = lm.generate_tokens(PROMPTS, 8, temperature=1.5, seed=1)
    b, _ = lm.generate_tokens(PROMPTS, 8, temperature=1.5, seed=1)
    c, _ = lm.generate_tokens(PROMPTS, 8, temperature=1.5, top_p=0.9, seed=2)
    assert a == b and a != greedy and c != a


def test_generation_errors():
    lm, _ = load_tiny("llama")
    limit = lm.config.context_window
    with pytest.raises(ContextLengthError, match=rf"{limit - 1} tokens \+ max_new_tokens=5.*context window of {limit}"
                                                 r".*max_new_tokens"):
        lm.generate_tokens([[1] * (limit - 1)], 5)
    with pytest.raises(LMInputError, match="max_new_tokens must be >= 1"):
        lm.generate(["go"], 0)
    with pytest.raises(LMInputError, match="top_p"):
        lm.generate(["go"], 3, temperature=1.0, top_p=0.0)
    with pytest.raises(LMInputError, match="prompt 0 is empty"):
        lm.generate_tokens([[]], 3)


def test_cost_report():
    lm, ref = load_tiny("llama")
    c = lm.config
    assert lm.num_params == sum(p.numel() for p in ref.parameters())
    emb = c.vocab_size * c.hidden_size
    assert lm.num_nonembedding_params == lm.num_params - 2 * emb  # untied: embedding + head
    lm.generate_tokens([[1, 2, 3, 4]], 5)
    lm.generate_tokens([[1, 2, 3, 4]], 5)
    before = lm.cost()
    ids, _ = lm.generate_tokens([[1, 5, 6, 7]], 5)
    rep = lm.cost()
    last = rep.last_call
    assert last.kind == "generate" and not last.compiled and last.seconds > 0
    assert (last.prompt_tokens, last.generated_tokens) == (4, len(ids[0]))
    assert rep.num_calls == before.num_calls + 1
    assert rep.total_seconds == pytest.approx(before.total_seconds + last.seconds)
    # independent count: prompt tokens attend 1..4 keys, generated tokens fed back attend 5..
    g = len(ids[0])
    att = 4 * c.num_layers * c.num_heads * c.head_dim
    n_ne = lm.num_nonembedding_params
    want = (2 * n_ne * 4 + att * (1 + 2 + 3 + 4) + 2 * emb
            + sum(2 * n_ne + att * (5 + j) + 2 * emb for j in range(g - 1)))
    assert last.flops == pytest.approx(want)
    assert rep.flops_per_generated_token - rep.flops_per_prompt_token == pytest.approx(2 * emb)
    assert rep.flops_per_prompt_token == pytest.approx(2 * n_ne + att * rep.context)


def test_sliding_layers_decode_from_a_ring_of_their_window():
    """``decode_cache``: a sliding layer keeps only its window (a ring of ``sliding_window`` slots holding
    the prompt's last tokens at ``slot % window``), a global layer the prompt plus room to decode; short
    rows leave ring slots empty. The greedy parity tests above run through these rings."""
    import jax.numpy as jnp
    from flax import nnx
    from lm_core_helpers import WINDOW

    from londi_jax.lm.engine import decode_cache, prefill

    lm, _ = load_tiny("gemma3")
    cfg = lm.config
    assert cfg.layer_types == ("sliding_attention", "full_attention") and cfg.sliding_window == WINDOW
    rows = [[1, 17, 18, 19, 20, 21, 22], [1, 60]]  # 7 and 2 tokens: past the window and within it
    tok, valid = lm._left_pad(rows, 2, 8)
    P = tok.shape[1]
    model = nnx.merge(lm.graphdef, lm.state)
    _, cache, kv = prefill(model, jnp.asarray(tok), jnp.asarray(valid), P)
    dec, kv2, ring_valid = decode_cache(cfg, cache, kv, P + 6)
    assert dec.k[0].shape[1] == WINDOW and dec.k[1].shape[1] == P + 6  # the sliding layer never grows
    assert kv2.shape == (2, P + 6) and not np.asarray(kv2[:, P:]).any()
    for s in range(P - WINDOW, P):  # ring slot s % W holds cache slot s
        np.testing.assert_array_equal(np.asarray(dec.k[0][:, s % WINDOW]), np.asarray(cache.k[0][:, s]))
        np.testing.assert_array_equal(np.asarray(ring_valid[:, s % WINDOW]), valid[:, s])
    assert np.asarray(ring_valid).sum(axis=1).tolist() == [WINDOW, 2]
    np.testing.assert_array_equal(np.asarray(dec.k[1][:, :P]), np.asarray(cache.k[1]))
    # no ring where the window covers every slot: a plain, grown cache as for global layers
    dec, _, ring_valid = decode_cache(cfg.replace(sliding_window=P + 6), cache, kv, P + 6)
    assert ring_valid is None and dec.k[0].shape[1] == P + 6
