"""The two ways an LM policy picks among valid actions: scoring every candidate (GLAM) and
generating an action mapped to the nearest valid one (SwiftSage), and where each may be used."""

from __future__ import annotations

import difflib

import numpy as np
import pytest

from londi_jax.agents.londi import LondiController, SwitchDataCollector
from londi_jax.agents.policy import LMPolicy, nearest_action
from londi_jax.agents.routers import ConfidenceRouter, QuickOnly, SwiftSageRouter
from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.hf_loader import init_model
from londi_jax.lm.tokenizer import train_word_tokenizer
from londi_jax.utils.errors import LondiError, UnknownNameError

ACTIONS = ("open door to kitchen", "look around", "pick up apple", "focus on apple", "move apple to table",
           "teleport to kitchen", "inventory")


def brute_nearest(text, cands):
    """Independent reference: the first candidate of highest ``difflib`` ratio."""
    want = text.strip().lower()
    ratios = [difflib.SequenceMatcher(None, c.strip().lower(), want, autojunk=False).ratio() for c in cands]
    return int(np.argmax(ratios)), max(ratios)


def test_nearest_action_exact_close_and_ties():
    assert nearest_action("look around", ACTIONS) == (1, 1.0)
    assert nearest_action("  Look Around ", ACTIONS) == (1, 1.0)  # case and outer spaces do not count
    assert nearest_action("pick up teh aple", ACTIONS)[0] == 2
    assert nearest_action("focus on the apple please", ACTIONS)[0] == 3
    assert nearest_action("xyz", ("ab", "ab"))[0] == 0  # ties: the earlier candidate
    k, sim = nearest_action("", ACTIONS)
    assert 0 <= k < len(ACTIONS) and sim == 0.0


def test_nearest_action_equals_brute_force_argmax():
    rng = np.random.default_rng(0)
    words = "open close door kitchen apple table move to on focus pick up look around red blue".split()
    for _ in range(200):
        cands = tuple(" ".join(rng.choice(words, rng.integers(1, 5))) for _ in range(rng.integers(1, 12)))
        text = " ".join(rng.choice(words, rng.integers(0, 6)))
        k, sim = nearest_action(text, cands)
        bk, bsim = brute_nearest(text, cands)
        assert sim == pytest.approx(bsim)
        assert k == bk or cands[k].strip().lower() == cands[bk].strip().lower()


@pytest.fixture(scope="module")
def tiny_lm():
    texts = ["Task: find the apple. Time: 1; Score: 0;"] + list(ACTIONS)
    tok = train_word_tokenizer(texts, vocab_size=64)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=16, num_layers=1, num_heads=1,
                      num_kv_heads=1, head_dim=16, intermediate_size=32, tie_embeddings=True,
                      max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    return LanguageModel(cfg, init_model(cfg, 3), tok, name="tiny")


def test_generate_mode_maps_the_generated_text_to_the_nearest_candidate(tiny_lm):
    pol = LMPolicy(tiny_lm, name="sage", mode="generate")
    prompts = ["Task: find the apple. Time: 1; Score: 0;", "Task: find the apple. Time: 2; Score: 0; look around"]
    cands = [ACTIONS, ACTIONS[:3]]
    out = pol.generate(prompts, cands)
    longest = max(len(tiny_lm.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in ACTIONS)
    texts = tiny_lm.generate(prompts, longest).texts  # greedy: the same continuation
    chosen = out.action_strings(out.actions())
    for i in range(2):
        k, sim = nearest_action(texts[i], cands[i])
        assert chosen[i] == cands[i][k]
        assert pol.generated[i] == (texts[i], cands[i][k], sim)
        assert np.isfinite(out.logprobs[i]).sum() == 1 and out.logprobs[i, k] == 0.0
        assert np.isneginf(out.logprobs[i, len(cands[i]):]).all()
    assert not out.embedding.any() and out.embedding.shape == (2, pol.embedding_dim)
    assert out.seconds > 0 and out.flops > 0 and (pol.calls, pol.prompts) == (1, 2)


def test_mode_errors_and_where_a_generating_quick_may_act(tiny_lm):
    with pytest.raises(UnknownNameError, match="generate, score"):
        LMPolicy(tiny_lm, mode="beam")
    gen, sc = LMPolicy(tiny_lm, mode="generate"), LMPolicy(tiny_lm)
    kw = {"budget": None, "sample_actions": False, "seed": 0, "encoder": None}
    with pytest.raises(LondiError, match="reads QUICK's candidate scores.*mode='score'"):
        LondiController(gen, sc, ConfidenceRouter(0.5), **kw)
    LondiController(gen, sc, QuickOnly(), **kw)  # acting alone needs no scores
    LondiController(gen, sc, SwiftSageRouter(), **kw)  # SwiftSage reads QUICK's top action only
    LondiController(sc, gen, ConfidenceRouter(0.5), **kw)  # a generating DEEPTHINK is fine
    with pytest.raises(LondiError, match="switch data reads QUICK's"):
        SwitchDataCollector(gen, sc, (0.5,), 0, False, None)
    SwitchDataCollector(sc, gen, (0.5,), 0, False, None)
