"""BabyAI-Text env: TextEnv contract, seeding, rewards, step limits, prompt, errors."""

from __future__ import annotations

import numpy as np
import pytest

from londi_jax.envs.base import TextEnv
from londi_jax.envs.babyai_text import ACTIONS, BabyAITextWrapper, GlamHistory, build_glam_prompt, make_babyai_text
from londi_jax.envs.babyai_text.bot import expert_episode
from londi_jax.envs.babyai_text.levels import make_level
from londi_jax.utils.errors import LondiError


def test_actions_in_original_order():
    assert ACTIONS == ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")


def test_text_env_contract_and_info():
    env = make_babyai_text("BabyAI-GoToLocal-v0", seed=3)
    assert isinstance(env, TextEnv)
    first = env.reset()
    assert first.valid_actions == list(ACTIONS) == env.valid_actions()
    assert first.observation == ", ".join(first.info["descriptions"])
    assert first.info["mission"] == first.mission and first.info["success"] is False
    out = env.step("turn left")
    for key in ("descriptions", "mission", "success", "task_kind", "step_count", "max_steps"):
        assert key in out.info
    assert out.info["task_kind"] == "goto" and out.info["step_count"] == 1
    env.close()


def _random_trajectory(level, seed, n=30):
    env = make_babyai_text(level, seed=seed)
    first = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    traj = [(first.mission, first.info["descriptions"])]
    for _ in range(n):
        out = env.step(ACTIONS[int(rng.integers(6))])
        traj.append((out.info["descriptions"], out.reward, out.terminated, out.truncated))
        if out.done:
            break
    return traj


@pytest.mark.parametrize("level", ["BabyAI-MixedTrainLocal-v0", "BabyAI-PutNextLocal-v0"])
def test_same_seed_same_trajectory(level):
    assert _random_trajectory(level, 7) == _random_trajectory(level, 7)
    assert _random_trajectory(level, 7)[0] != _random_trajectory(level, 8)[0]


def test_constructor_seed_used_by_first_reset_then_stream_continues():
    a, b = make_babyai_text("GoToLocal", seed=11), make_babyai_text("GoToLocal")
    ra, rb = a.reset(), b.reset(seed=11)
    assert (ra.mission, ra.observation) == (rb.mission, rb.observation)
    assert (a.reset().observation, a.reset().observation) == (b.reset().observation, b.reset().observation)


@pytest.mark.parametrize("level,seed", [("GoToLocal", 0), ("PickupLoc", 1), ("MixedTrainLocal", 2), ("MixedTrainLocal", 3)])
def test_reward_formula_on_success(level, seed):
    ep = expert_episode(level, seed)
    assert ep.success and ep.terminated and not ep.truncated
    assert ep.reward == pytest.approx(1 - 0.9 * len(ep.steps) / ep.max_steps)
    assert all(s.reward == 0 for s in ep.steps[:-1])


def test_goto_success_means_facing_the_object():
    env = make_babyai_text("GoToLocal", seed=5)
    ep_env = expert_episode("GoToLocal", 5)
    # replay the bot's actions and check the success condition independently
    first = env.reset(seed=5)
    for step in ep_env.steps:
        out = env.step(step.action)
    base = env.unwrapped
    front = base.grid.get(*base.front_pos)
    desc = base.instrs.desc
    assert out.info["success"] and front is not None
    assert front.type == desc.type and (desc.color is None or front.color == desc.color)
    assert first.mission.endswith(f"{desc.color} {desc.type}")


@pytest.mark.parametrize("kind,limit", [("goto", 64), ("pickup", 64), ("putnext", 128), ("open", 128), ("pick up seq go to", 128)])
def test_step_limit_truncates_with_zero_reward(kind, limit):
    env = make_babyai_text("MixedTrainLocal", seed=0, kind=kind)
    first = env.reset(seed=0)
    assert first.info["max_steps"] == limit
    for t in range(1, limit + 1):
        out = env.step("drop")  # carrying nothing: a no-op that never completes any mission
        assert out.reward == 0 and not out.terminated
        assert out.truncated == (t == limit)
    with pytest.raises(LondiError, match="reset"):
        env.step("drop")


def test_fixed_max_steps_kwarg():
    env = make_babyai_text("GoToLocal", seed=0, max_steps=5)
    assert env.reset().info["max_steps"] == 5


def test_invalid_action_lists_the_six():
    env = make_babyai_text("GoToLocal", seed=0)
    env.reset()
    with pytest.raises(LondiError) as err:
        env.step("jump")
    for a in ACTIONS:
        assert a in str(err.value)
    with pytest.raises(LondiError):
        env.step(2)  # the index is not the string


def test_glam_history_follows_glams_deques_and_the_env_builds_no_prompt():
    env = make_babyai_text("GoToLocal", seed=0)
    first = env.reset(seed=0)
    assert "prompt" not in first.info  # prompts are the policy's business (agents.prompts)
    hist = GlamHistory()
    hist.reset(first.info["descriptions"])
    obs, acts = [first.info["descriptions"]], []
    assert hist.prompt(first.mission) == build_glam_prompt(first.mission, obs, acts)
    for a in ("go forward", "turn right", "turn left", "go forward"):
        out = env.step(a)
        assert "prompt" not in out.info
        hist.push(a, out.info["descriptions"])
        obs.append(out.info["descriptions"])
        acts.append(a)
        assert hist.prompt(first.mission) == build_glam_prompt(first.mission, obs, acts)
    # after four steps only the last 3 observations and the 2 actions between them remain
    text = hist.prompt(first.mission)
    assert "Observation 3" not in text and "Action 2: \n" not in text


def test_prompt_exact_format():
    prompt = build_glam_prompt("go to the red ball", [["You see a wall 1 step left", "You see a red ball 2 steps forward"], ["You see a red ball 1 step forward"]], ["go forward"])
    assert prompt == (
        "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle"
        " \n Goal of the agent: go to the red ball"
        " \n Observation 0: You see a wall 1 step left, You see a red ball 2 steps forward, "
        "\n Action 0: go forward"
        " \n Observation 1: You see a red ball 1 step forward, "
        "\n Action 1: "
    )
    # an env observation string gives the same prompt as its sentence list
    joined = build_glam_prompt("m", ["a, b", "c"], ["turn left"])
    assert joined == build_glam_prompt("m", [["a", "b"], ["c"]], ["turn left"])
    # older history is dropped (deques of 3 observations and 2 actions)
    long = build_glam_prompt("m", [["o0"], ["o1"], ["o2"], ["o3"]], ["a0", "a1", "a2"])
    assert long.endswith(" \n Observation 0: o1, \n Action 0: a1 \n Observation 1: o2, \n Action 1: a2 \n Observation 2: o3, \n Action 2: ")


def test_gym_wrapper_and_quiet_rejection_sampling(capsys):
    env = BabyAITextWrapper(make_level("BabyAI-PutNextLocal-v0"))
    for seed in range(30):  # PutNext rejection-samples often; minigrid prints each retry
        obs, info = env.reset(seed=seed)
        assert info["descriptions"] and info["mission"] == obs["mission"]
    assert "Sampling rejected" not in capsys.readouterr().out
    obs, reward, terminated, truncated, info = env.step(0)
    assert set(obs) >= {"image", "direction", "mission"} and "descriptions" in info and info["success"] is False
