"""The switcher's state encoders: they read the structured episode state (never a parsed prompt)."""

from __future__ import annotations

import numpy as np
import pytest

from londi_jax.agents.policy import PolicyOutput, SwitchEncoder, confidence_features, feature_dim, switch_features
from londi_jax.agents.prompts import EpisodeState, GlamFormat, Observation
from londi_jax.envs.babyai_text.prompt import ACTIONS
from londi_jax.lm.tokenizer import train_word_tokenizer

OBS = [["You see a wall 2 steps forward", "You see a red ball 1 step left"],
       ["You see a red ball 1 step forward"],
       ["You see a wall 1 step forward", "You see a blue key 2 steps right"]]


def state(mission, n_obs, max_steps=10):
    obs = tuple(Observation(", ".join(o), {"descriptions": o}) for o in OBS[:n_obs])
    return EpisodeState(mission, obs, tuple(["turn left", "go forward"][:n_obs - 1]), tuple(ACTIONS), max_steps)


def test_bag_of_words_marks_exactly_the_tokens_present():
    states = [state("go to the red ball", 2, 10), state("pick up the blue key", 3, 20)]
    prompts = [GlamFormat().prompt(s) for s in states]
    tok = train_word_tokenizer(prompts + list(ACTIONS), vocab_size=80)
    H = 3
    rng = np.random.default_rng(0)
    out = PolicyOutput(rng.normal(size=(2, 6)), rng.normal(size=(2, 2 * H)).astype(np.float32), 0.0, 0.0)
    step, max_steps = np.array([1, 2]), np.array([10, 20])
    plain = SwitchEncoder("quick", H)
    assert plain.dim == feature_dim(H) == 2 * H + 5
    np.testing.assert_array_equal(plain(out, states), switch_features(out, step, max_steps))
    enc = SwitchEncoder("quick+bow", H, tok)
    feats = enc(out, states)
    assert feats.shape == (2, enc.dim) and enc.dim == 2 * H + 5 + 2 * len(tok)
    np.testing.assert_array_equal(feats[:, :2 * H + 5], switch_features(out, step, max_steps))
    np.testing.assert_allclose(feats[:, 2 * H:2 * H + 4], confidence_features(out.logprobs))
    V = len(tok)
    for i, st in enumerate(states):
        mission, newest = st.mission, ", ".join(OBS[st.step])
        for part, text in ((0, mission), (1, newest)):
            bag = feats[i, 2 * H + 5 + part * V: 2 * H + 5 + (part + 1) * V]
            expect = np.zeros(V)
            expect[tok(text, add_special_tokens=False)["input_ids"]] = 1
            np.testing.assert_array_equal(bag, expect)
    assert feats[0, 2 * H + 5:2 * H + 5 + V].sum() != feats[1, 2 * H + 5:2 * H + 5 + V].sum() or \
        not np.array_equal(feats[0], feats[1])


def test_encoder_errors():
    with pytest.raises(Exception, match="known"):
        SwitchEncoder("sentence-bert", 4)
    with pytest.raises(Exception, match="tokenizer"):
        SwitchEncoder("quick+bow", 4)


def _ngrams(words, max_n):
    return {" ".join(words[i:i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)}


def test_match_features_are_hashed_ngrams_of_the_goal_marked_observation():
    import zlib

    from londi_jax.agents.policy import match_ngram_features

    mission, obs = "pick up the red ball", "You see a red ball 1 step forward, You see a wall 2 steps left, "
    f = match_ngram_features(mission, obs, mission_buckets=64, obs_buckets=256, max_n=3)
    # independent recomputation: the goal's content words become <m> item by item
    goal_grams = _ngrams(mission.split(), 2)
    items = [["<m>" if w in ("red", "ball") else w for w in it.lower().split()] for it in obs.split(",")]
    obs_grams = set().union(*(_ngrams(it, 3) for it in items))
    expect = np.zeros(64 + 256, np.float32)
    for g in goal_grams:
        expect[zlib.crc32(g.encode()) % 64] = 1
    for g in obs_grams:
        expect[64 + zlib.crc32(g.encode()) % 256] = 1
    np.testing.assert_array_equal(f, expect)
    assert "<m> 1 step" in obs_grams and "a <m> <m>" in obs_grams and "a red" not in obs_grams
    # relation, not words: the same n-gram fires for any goal object seen 1 step forward,
    # and not for a goal object seen elsewhere
    key = 64 + zlib.crc32(b"<m> 1 step") % 256
    other = match_ngram_features("go to the blue key", "You see a blue key 1 step forward",
                                 mission_buckets=64, obs_buckets=256, max_n=3)
    elsewhere = match_ngram_features("go to the blue key", "You see a blue key 3 steps right",
                                     mission_buckets=64, obs_buckets=256, max_n=3)
    assert other[key] == 1 and elsewhere[key] == 0


def test_match_encoder_appends_match_features():
    from londi_jax.agents.policy import MATCH_FEATURES, match_ngram_features

    states = [state("pick up the blue key", 3)]
    H = 2
    out = PolicyOutput(np.zeros((1, 6)), np.ones((1, 2 * H), np.float32), 0.0, 0.0)
    enc = SwitchEncoder("quick+match", H)
    feats = enc(out, states)
    assert enc.dim == feats.shape[1] == 2 * H + 5 + MATCH_FEATURES
    np.testing.assert_array_equal(feats[0, 2 * H + 5:], match_ngram_features("pick up the blue key", ", ".join(OBS[2])))
    # the GLAM prompt's rendering of the newest observation (trailing ", ") gives the same features
    np.testing.assert_array_equal(feats[0, 2 * H + 5:],
                                  match_ngram_features("pick up the blue key", "".join(f"{x}, " for x in OBS[2])))
    empty = PolicyOutput(np.zeros((0, 6)), np.zeros((0, 2 * H), np.float32), 0.0, 0.0)
    assert enc(empty, []).shape == (0, enc.dim)


def test_match_features_refuse_empty_hash_spaces():
    from londi_jax.agents.policy import match_ngram_features

    with pytest.raises(Exception, match="obs_buckets"):
        match_ngram_features("go to the red ball", "You see a red ball 1 step forward", obs_buckets=0)
