"""BabyAI bot expert: success rates on the levels used later, subgoal text, demo files."""

from __future__ import annotations

import json

import pytest

from londi_jax.envs.babyai_text import ACTIONS, build_glam_prompt
from londi_jax.envs.babyai_text.bot import expert_episode
from londi_jax.envs.babyai_text.demos import DemoDirError, read_demos, write_demos

N_SEEDS = 200


@pytest.mark.parametrize(
    "level",
    [
        "BabyAI-GoToLocal-v0",
        "BabyAI-PickupLoc-v0",
        "BabyAI-PutNextLocal-v0",
        "BabyAI-OpenDoor-v0",
        "BabyAI-MixedTrainLocal-v0",
        "BabyAI-MixedTestLocal-v0",
    ],
)
def test_bot_success_rate(level):
    episodes = [expert_episode(level, seed) for seed in range(N_SEEDS)]
    wins = sum(ep.success for ep in episodes)
    assert wins >= 0.99 * N_SEEDS, [(ep.seed, ep.error) for ep in episodes if not ep.success][:5]
    if level.startswith("BabyAI-Mixed"):
        assert {ep.task_kind for ep in episodes} == {"goto", "pickup", "open", "putnext", "pick up seq go to"}


def test_subgoal_text_matches_the_mission():
    ep = expert_episode("BabyAI-PickupLoc-v0", 4)
    target = ep.mission.removeprefix("pick up ").split(" ", 1)[1]  # "red ball" from "pick up the red ball"
    pick = [s for s in ep.steps if s.action == "pick up"]
    assert pick and pick[-1].subgoal == "pick up" and ep.steps[-1] is pick[-1]
    assert any(s.subgoal == f"go next to the {target}" for s in ep.steps)
    ep = expert_episode("BabyAI-MixedTrainLocal-v0", 1, kind="open")
    subgoals = [s.subgoal for s in ep.steps]
    assert ep.success and "open the door" in subgoals and "pick up" in subgoals  # fetch the key, unlock
    assert ep.steps[-1].action == "toggle" and ep.steps[-1].subgoal == "open the door"


def test_expert_steps_carry_prompt_and_observation():
    ep = expert_episode("BabyAI-GoToLocal-v0", 0)
    obs, acts = [], []
    for step in ep.steps:
        obs.append(step.descriptions)
        assert step.observation == ", ".join(step.descriptions)
        assert step.prompt == build_glam_prompt(ep.mission, obs, acts)
        assert step.action in ACTIONS
        acts.append(step.action)


def test_demos_write_resume_and_refuse(tmp_path):
    one = tmp_path / "one"
    meta = write_demos(one, "GoToLocal", 6, seed=10, progress=False)
    assert meta["episodes_written"] == 6 and meta["level"] == "BabyAI-GoToLocal-v0"
    # resume: 3 then 6 gives the same file as 6 at once
    two = tmp_path / "two"
    write_demos(two, "GoToLocal", 3, seed=10, progress=False)
    with open(two / "episodes.jsonl", "a") as f:
        f.write('{"episode": 3, "torn')  # a crash mid-line
    write_demos(two, "GoToLocal", 6, seed=10, progress=False)
    assert (one / "episodes.jsonl").read_text() == (two / "episodes.jsonl").read_text()
    meta, eps = read_demos(two)
    assert [e["episode"] for e in eps] == list(range(6)) and [e["seed"] for e in eps] == list(range(10, 16))
    assert meta["n_success"] == sum(e["success"] for e in eps) and meta["episodes_written"] == 6
    step = eps[0]["steps"][0]
    assert set(step) == {"prompt", "observation", "descriptions", "action", "subgoal", "reward"}
    assert json.loads((two / "meta.json").read_text())["format"] == "londi-jax/babyai-text-demos"
    # never overwrite other demos silently
    with pytest.raises(DemoDirError, match="--overwrite"):
        write_demos(two, "PickupLoc", 2, seed=10, progress=False)
    with pytest.raises(DemoDirError, match="--overwrite"):
        write_demos(two, "GoToLocal", 2, seed=99, progress=False)
    write_demos(two, "PickupLoc", 2, seed=10, overwrite=True, progress=False)
    meta, eps = read_demos(two)
    assert meta["level"] == "BabyAI-PickupLoc-v0" and len(eps) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DemoDirError):
        write_demos(other, "GoToLocal", 1, progress=False)


def test_the_advising_bot_follows_any_agent():
    """``expert_action()``: followed at every step it is the bot's own episode, action for action;
    after random detours it still leads to the goal (minigrid's bot replans around the actions it
    is told of); outside an episode it raises."""
    import numpy as np

    from londi_jax.envs.babyai_text.env import make_babyai_text
    from londi_jax.utils.errors import LondiError

    level = "BabyAI-MixedTrainLocal-v0"
    for seed in range(12):
        env = make_babyai_text(level, seed=seed)
        env.reset(seed=seed)
        taken = []
        while (a := env.expert_action()) is not None:
            assert env.expert_action() == a  # asking twice in one state does not replan twice
            taken.append(a)
            if env.step(a).done:
                break
        assert taken == [s.action for s in expert_episode(level, seed).steps]
        rng = np.random.default_rng(seed)
        env.reset(seed=seed)
        for k in range(200):  # 4 random actions, then the bot's advice
            a = env.expert_action()
            out = env.step(ACTIONS[int(rng.integers(len(ACTIONS)))] if k < 4 else a)
            if out.done:
                break
        assert out.terminated and out.info["success"], seed
        with pytest.raises(LondiError, match="call reset"):
            env.expert_action()
