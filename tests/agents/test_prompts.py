"""Prompt formats render what a model reads from structured episode states."""

from __future__ import annotations

from collections import deque

import pytest

from londi_jax.agents.prompts import EpisodeState, GlamFormat, Observation, SwiftSageFormat, get_format
from londi_jax.agents.rollout import first_state
from londi_jax.envs.babyai_text import make_babyai_text
from londi_jax.envs.babyai_text.prompt import ACTIONS
from londi_jax.utils.errors import LondiError, UnknownNameError


def _glam_by_hand(mission, obs_deque, act_deque):
    """GLAM's generate_prompt, written out independently (deques of 3 observations, 2 actions)."""
    head = "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle"
    text = f"{head} \n Goal of the agent: {mission}"
    for k, sentences in enumerate(obs_deque):
        text += f" \n Observation {k}: " + "".join(f"{s}, " for s in sentences) + f"\n Action {k}: "
        if k < len(act_deque):
            text += act_deque[k]
    return text


@pytest.mark.parametrize("seed", [0, 5])
def test_glam_format_equals_glams_prompt_along_a_real_episode(seed):
    env = make_babyai_text("BabyAI-MixedTrainLocal-v0", seed=seed, room_size=6, num_dists=2)
    first = env.reset(seed=seed)
    state, fmt = first_state(first), GlamFormat()
    obs_q, act_q = deque([first.info["descriptions"]], maxlen=3), deque(maxlen=2)
    for t in range(9):
        assert fmt.prompt(state) == _glam_by_hand(first.mission, obs_q, act_q)
        assert tuple(fmt.candidates(state)) == ACTIONS and state.step == t
        action = ACTIONS[(seed + t) % 3]
        out = env.step(action)
        state = state.then(action, Observation(out.observation, out.info, out.reward))
        obs_q.append(out.info["descriptions"])
        act_q.append(action)
        if out.done:
            break


def test_swiftsage_format_by_hand():
    look1 = "This room is called the kitchen. In it, you see:\n\ta door to the hallway (that is open)"
    look2 = "This room is called the hallway. In it, you see:\n\ta box (containing nothing)"
    s = EpisodeState("Your task is to boil water.", (
        Observation("You are in the kitchen.", {"look": look1, "inventory": "In your inventory, you see:\n\tan orange", "score": 0}),
    ), valid_actions=("look around", "go to hallway"), max_steps=30)
    s = s.then("go to hallway", Observation("You move to the hallway.", {"look": look2, "inventory": "nothing", "score": 8},
                                            reward=8.0), ("look around", "go to kitchen"))
    want = (" </s> ".join([
        "Your task is to boil water.", "Time: 1; Score: 8;",
        "Action history: Action 0: go to hallway (+8) --> You move to the hallway.",
        "Current environment: This room is called the hallway. In it, you see: |  | a box",
        "Current inventory: nothing", "Visited rooms: kitchen, hallway", "What action should you do next?"]))
    assert SwiftSageFormat().prompt(s) == want
    assert SwiftSageFormat(t5_sentinels=True).prompt(s).count("<extra_id_10> go to hallway") == 1
    assert tuple(SwiftSageFormat().candidates(s)) == ("look around", "go to kitchen")
    # only the last `history` triples are kept
    for k in range(12):
        s = s.then(f"wait{k}", Observation(f"tick {k}", {"look": look2, "score": 8}), ("wait",))
    p = SwiftSageFormat(history=10).prompt(s)
    assert "go to hallway (+8)" not in p and "Action 3: wait2" in p and "Action 12: wait11 (+0) --> tick 11" in p
    with pytest.raises(LondiError, match="valid actions"):
        SwiftSageFormat().candidates(EpisodeState("t", (Observation("o"),)))


def test_episode_state_rules_and_format_names():
    with pytest.raises(LondiError, match="one action fewer"):
        EpisodeState("m", (Observation("a"),), ("x",))
    assert isinstance(get_format("glam"), GlamFormat)
    with pytest.raises(UnknownNameError, match="swiftsage"):
        get_format("react")
