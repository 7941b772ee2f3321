"""The switcher's state encoders: GLAM prompt parsing and the bag-of-words extension."""

from __future__ import annotations

import numpy as np
import pytest

from londi_jax.agents.policy import PolicyOutput, SwitchEncoder, confidence_features, feature_dim, switch_features
from londi_jax.envs.babyai_text.prompt import ACTIONS, build_glam_prompt, parse_glam_prompt
from londi_jax.lm.tokenizer import train_word_tokenizer

OBS = [["You see a wall 2 steps forward", "You see a red ball 1 step left"],
       ["You see a red ball 1 step forward"],
       ["You see a wall 1 step forward", "You see a blue key 2 steps right"]]


@pytest.mark.parametrize("n_obs", [1, 2, 3])
def test_parse_recovers_mission_and_newest_observation(n_obs):
    prompt = build_glam_prompt("pick up the red ball", OBS[:n_obs], ["turn left", "go forward"][:n_obs - 1])
    mission, newest = parse_glam_prompt(prompt)
    assert mission == "pick up the red ball"
    assert newest == "".join(f"{s}, " for s in OBS[n_obs - 1])
    with pytest.raises(ValueError, match="not a GLAM prompt"):
        parse_glam_prompt("hello")


def test_bag_of_words_marks_exactly_the_tokens_present():
    prompts = [build_glam_prompt("go to the red ball", OBS[:2], ["turn left"]),
               build_glam_prompt("pick up the blue key", OBS, ["turn left", "go forward"])]
    tok = train_word_tokenizer(prompts + list(ACTIONS), vocab_size=80)
    H = 3
    rng = np.random.default_rng(0)
    out = PolicyOutput(rng.normal(size=(2, 6)), rng.normal(size=(2, 2 * H)).astype(np.float32), 0.0, 0.0)
    step, max_steps = np.array([1, 2]), np.array([10, 20])
    plain = SwitchEncoder("quick", H)
    assert plain.dim == feature_dim(H) == 2 * H + 5
    np.testing.assert_array_equal(plain(out, prompts, step, max_steps), switch_features(out, step, max_steps))
    enc = SwitchEncoder("quick+bow", H, tok)
    feats = enc(out, prompts, step, max_steps)
    assert feats.shape == (2, enc.dim) and enc.dim == 2 * H + 5 + 2 * len(tok)
    np.testing.assert_array_equal(feats[:, :2 * H + 5], switch_features(out, step, max_steps))
    np.testing.assert_allclose(feats[:, 2 * H:2 * H + 4], confidence_features(out.logprobs))
    V = len(tok)
    for i, p in enumerate(prompts):
        mission, newest = parse_glam_prompt(p)
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
