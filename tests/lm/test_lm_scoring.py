"""Shared-cache candidate scoring and embeddings vs independent full-sequence computations."""

from __future__ import annotations

import numpy as np
import pytest
from lm_core_helpers import load_tiny, torch_logits

from londi_jax.lm.interface import ContextLengthError, LMInputError


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_scores(logits_fn, prompts, cands):
    """Score each prompt+candidate sequence on its own from full-sequence logits."""
    out = []
    for p, cs in zip(prompts, cands):
        row = []
        for c in cs:
            lg = _log_softmax(logits_fn([p + c])[0].astype(np.float64))
            row.append(sum(lg[len(p) - 1 + j, t] for j, t in enumerate(c)))
        out.append(np.array(row))
    return out


@pytest.fixture(params=["llama", "neox_parallel", "gemma3", "mistral_window"])
def tiny(request):  # the windowed kinds' prompts and candidates reach past their 4-token window
    return load_tiny(request.param)


@pytest.fixture
def tiny_llama():
    return load_tiny("llama")


PROMPTS = [[1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57],  # 19 tokens
           [1, 7],
           [1, 90, 91, 92, 93]]
CANDS = [[[5], [6, 7, 8], [9, 10], [11, 12, 13, 14, 15]],  # ragged K and L
         [[100, 101]],
         [[3, 4, 5], [3], [200, 201, 202, 203, 204, 205, 206, 207, 208]]]


def test_shared_cache_scores_equal_full_sequence(tiny):
    lm, ref_model = tiny
    res = lm.score_tokens(PROMPTS, CANDS)
    ref_torch = reference_scores(lambda rows: torch_logits(ref_model, rows), PROMPTS, CANDS)
    ref_ours = reference_scores(lm.logits, PROMPTS, CANDS)
    for got, a, b, cs in zip(res.logprobs, ref_torch, ref_ours, CANDS):
        np.testing.assert_allclose(got, a, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got, b, rtol=1e-5, atol=1e-5)
    assert [n.tolist() for n in res.num_tokens] == [[len(c) for c in cs] for cs in CANDS]
    assert all(len(t) == len(c) for row, cs in zip(res.token_logprobs, CANDS) for t, c in zip(row, cs))


def test_padding_and_batch_composition_change_nothing(tiny_llama):
    lm, _ = tiny_llama
    alone = lm.score_tokens(PROMPTS[2:], CANDS[2:], with_embedding=True)  # no padding at all
    mixed = lm.score_tokens(PROMPTS, CANDS, with_embedding=True)  # longer and shorter prompts around it
    np.testing.assert_allclose(alone.logprobs[0], mixed.logprobs[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone.embeddings[0], mixed.embeddings[2], rtol=1e-5, atol=1e-5)
    order = [2, 1, 0]  # other rows, other batch slots
    shuffled = lm.score_tokens([PROMPTS[i] for i in order], [CANDS[i] for i in order], with_embedding=True)
    for j, i in enumerate(order):
        np.testing.assert_allclose(shuffled.logprobs[j], mixed.logprobs[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(shuffled.embeddings[j], mixed.embeddings[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [1, 2, 3])
def test_candidate_blocks_equal_full_sequence(tiny_llama, block):
    """A prompt's candidates split over several blocks of ``candidate_block`` (a ScienceWorld state
    has hundreds) score exactly as the full sequences do, in the caller's order; a block never
    carries another prompt's candidates."""
    lm, _ = tiny_llama
    many = [[[i % 50 + 3, (7 * i) % 60 + 2][: 1 + i % 2] for i in range(11)]]  # 11 candidates, ragged
    prompts, cands = PROMPTS + [[1, 30, 31]], CANDS + many
    ref = reference_scores(lm.logits, prompts, cands)
    lm.candidate_block = block
    try:
        res = lm.score_tokens(prompts, cands)
        c_tok, _, c_row, blocks = lm._candidate_blocks(cands)
    finally:
        lm.candidate_block = 256
    for got, want in zip(res.logprobs, ref):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert c_tok.shape[1] <= block
    assert [sorted(set(c_row[b].tolist())) for b in blocks] == [[r] for r in range(len(cands))]
    assert sum(len(b) for b in blocks) == sum(-(-len(c) // c_tok.shape[1]) for c in cands)


def test_block_groups_cover_the_blocks_with_few_shapes(tiny_llama):
    """Block-count shapes of the candidate programs: full groups of a power of two, then the rest
    rounded up to a power of two (padding under half of the last group)."""
    from londi_jax.lm.engine import BLOCK_GROUP_SLOTS

    lm, _ = tiny_llama
    shapes = set()
    for K in (1, 6, 224, 256):
        cap = max(g for g in (1 << e for e in range(20)) if g * K <= max(BLOCK_GROUP_SLOTS, K))
        for n in range(1, 200):
            groups = lm._block_groups(n, K)
            assert sum(groups) >= n and all(g & (g - 1) == 0 for g in groups)
            assert all(g == cap for g in groups[:-1]) and groups[-1] <= cap
            assert sum(groups) - n < max(groups[-1] / 2, 1)
            shapes.update((K, g) for g in groups)
    assert len([s for s in shapes if s[0] == 256]) <= 5  # 1, 2, 4, 8, 16 blocks of 256


def test_embedding_is_masked_mean_of_final_hidden(tiny):
    import torch

    lm, ref_model = tiny
    res = lm.score_tokens(PROMPTS, CANDS, with_embedding=True)
    np.testing.assert_allclose(res.embeddings, lm.embed_tokens(PROMPTS), rtol=1e-5, atol=1e-5)
    base = ref_model.base_model
    for p, e in zip(PROMPTS, res.embeddings):
        with torch.no_grad():
            h = base(input_ids=torch.tensor([p])).last_hidden_state[0].numpy()
        np.testing.assert_allclose(e, h.mean(0), rtol=1e-4, atol=1e-5)
    for p, last in zip(PROMPTS, res.last_hidden):  # the last prompt token's state, from the same pass
        with torch.no_grad():
            h = base(input_ids=torch.tensor([p])).last_hidden_state[0].numpy()
        np.testing.assert_allclose(last, h[-1], rtol=1e-4, atol=1e-5)


def test_text_api_tokenizes_prompt_then_candidate_as_given(tiny_llama):
    lm, _ = tiny_llama
    prompts = ["you see a red ball. you", "the goal is to"]
    cands = [[" go forward", " turn left", " pick up the key"], [" open the door", " drop the box"]]
    res = lm.score(prompts, cands, with_embedding=True)
    tok = lm.tokenizer
    p_ids = [tok.encode(p, add_special_tokens=True) for p in prompts]
    c_ids = [[tok.encode(c, add_special_tokens=False) for c in cs] for cs in cands]
    ref = reference_scores(lm.logits, p_ids, c_ids)
    for a, b in zip(res.logprobs, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert res.best() == [int(np.argmax(r)) for r in ref]
    np.testing.assert_allclose(res.embeddings, lm.embed(prompts), rtol=1e-5, atol=1e-5)


def test_scoring_fills_the_context_window_exactly(tiny_llama):
    """Prompt + candidate of window + 1 tokens fit: the candidate's last token is scored, never an
    input (lm-eval's rolling windows score max_length + 1 tokens). Reference: full-sequence logits."""
    lm, _ = tiny_llama
    limit = lm.config.context_window
    prompt, cand = [1 + i % 7 for i in range(limit - 4)], [3, 4, 5, 6, 7]
    res = lm.score_tokens([prompt], [[cand]])
    seq = prompt + cand
    lg = lm.logits([seq[:-1]])[0].astype(np.float64)  # limit positions
    lsm = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lg.max(-1, keepdims=True)
    ref = [lsm[len(prompt) - 1 + j, t] for j, t in enumerate(cand)]
    np.testing.assert_allclose(res.token_logprobs[0][0], ref, atol=1e-4)
    assert bool(res.greedy[0][0]) == all(lg[len(prompt) - 1 + j].argmax() == t for j, t in enumerate(cand))


def test_scoring_errors(tiny_llama):
    lm, _ = tiny_llama
    with pytest.raises(LMInputError, match="empty candidate list"):
        lm.score(["go"], [[]])
    with pytest.raises(LMInputError, match="tokenizes to zero tokens"):
        lm.score(["go"], [["left", ""]])
    with pytest.raises(LMInputError, match="2 prompts but 1 candidate"):
        lm.score(["a", "b"], [["x"]])
    with pytest.raises(LMInputError, match="not one string"):
        lm.score("a prompt", [["x"]])
    limit = lm.config.context_window
    # a 5-token candidate reads 4 positions (its last token is scored, never input)
    with pytest.raises(ContextLengthError, match=rf"prompt 0 has {limit - 2} tokens.*longest candidate's inputs "
                                                 rf"\(4 tokens\).*{limit + 2} > the context window of {limit}"):
        lm.score_tokens([[1] * (limit - 2)], [[[3], [4, 5, 6, 7, 8]]])
    with pytest.raises(LMInputError, match="outside"):
        lm.score_tokens([[1, 10**6]], [[[3]]])
