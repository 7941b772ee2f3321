"""GLAM levels: task kinds, layouts, phrase filters, door colours, step limits."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import gymnasium as gym
import pytest
from minigrid.envs.babyai.core.verifier import AfterInstr, BeforeInstr, GoToInstr, OpenInstr, PickupInstr, PutNextInstr

from londi_jax.envs.babyai_text import MIXED_KINDS, make_babyai_text
from londi_jax.envs.babyai_text.levels import (
    TEST_DOOR_COLORS,
    TRAIN_DOOR_COLORS,
    TRAIN_EXCLUDED,
    make_level,
    register_gym_levels,
)
from londi_jax.utils.errors import LondiError, UnknownNameError

COLOURS = ("red", "green", "blue", "purple", "yellow", "grey")
PAIR = re.compile(rf"\b({'|'.join(COLOURS)}) (key|ball|box|door)\b")
HELD_OUT = set(TRAIN_EXCLUDED)
EXPECTED_INSTR = {"goto": GoToInstr, "pickup": PickupInstr, "open": OpenInstr, "putnext": PutNextInstr}


def _reset(level, seed, **kw):
    env = make_babyai_text(level, seed=seed, **kw)
    return env, env.reset(seed=seed)


def test_seeded_kind_draw_covers_every_kind_and_is_reproducible():
    kinds = {seed: _reset("MixedTrainLocal", seed)[1].info["task_kind"] for seed in range(30)}
    assert set(kinds.values()) == set(MIXED_KINDS)
    assert all(_reset("MixedTrainLocal", s)[1].info["task_kind"] == k for s, k in list(kinds.items())[:5])


def test_unseeded_mixed_env_takes_its_kind_from_the_first_reset_seed():
    for seed in range(8):
        late = make_babyai_text("MixedTrainLocal")
        first = late.reset(seed=seed)
        early = _reset("MixedTrainLocal", seed)[1]
        assert (first.info["task_kind"], first.mission, first.observation) == (early.info["task_kind"], early.mission, early.observation)


@pytest.mark.parametrize("level", ["MixedTrainLocal", "MixedTestLocal"])
@pytest.mark.parametrize("kind", MIXED_KINDS)
def test_mixed_kind_layout_and_instruction(level, kind):
    for seed in range(4):
        env, first = _reset(level, seed, kind=kind)
        base = env.unwrapped
        assert first.info["task_kind"] == kind
        instr = base.instrs
        objs = [c for c in base.grid.grid if c is not None and c.type in ("key", "ball", "box")]
        if kind == "open":
            assert (base.width, base.height) == (15, 8) and first.info["max_steps"] == 128
            assert isinstance(instr, OpenInstr)
            doors = [c for c in base.grid.grid if c is not None and c.type == "door"]
            assert len(doors) == 1 and doors[0].is_locked
            allowed = TRAIN_DOOR_COLORS if level == "MixedTrainLocal" else TEST_DOOR_COLORS
            assert doors[0].color in allowed
            # the key is in the agent's room, and the locked room holds nothing
            key = [o for o in objs if o.type == "key" and o.color == doors[0].color]
            agent_room = base.room_from_pos(*base.agent_pos)
            assert any(agent_room.pos_inside(*k.cur_pos) for k in key)
            assert all(not base.locked_room.pos_inside(*o.cur_pos) for o in objs)
            assert len(objs) == 9  # 8 distractors + the key
        else:
            assert (base.width, base.height) == (8, 8)
            assert len(objs) == (9 if kind in ("goto", "pickup") else 10)
            if kind == "pick up seq go to":
                assert isinstance(instr, (BeforeInstr, AfterInstr))
                first_i, then = (instr.instr_a, instr.instr_b) if isinstance(instr, BeforeInstr) else (instr.instr_b, instr.instr_a)
                assert isinstance(first_i, PickupInstr) and isinstance(then, GoToInstr)
            else:
                assert type(instr) is EXPECTED_INSTR[kind]
            assert first.info["max_steps"] == (64 if kind in ("goto", "pickup") else 128)
        assert base.check_objs_reachable(raise_exc=False)


def test_train_missions_avoid_held_out_pairs():
    seen_uncoloured_open = seen_coloured_open = 0
    for kind in MIXED_KINDS:
        for seed in range(25):
            mission = _reset("MixedTrainLocal", seed, kind=kind)[1].mission
            assert not any(p in mission for p in TRAIN_EXCLUDED), mission
            if kind == "open":
                seen_uncoloured_open += mission == "open the door"
                seen_coloured_open += mission != "open the door"
    assert seen_uncoloured_open > 3 and seen_coloured_open > 3  # colour named about half the time


def test_test_missions_use_only_held_out_pairs():
    for kind in MIXED_KINDS:
        for seed in range(25):
            mission = _reset("MixedTestLocal", seed, kind=kind)[1].mission
            pairs = {" ".join(m) for m in PAIR.findall(mission)}
            assert pairs and pairs <= HELD_OUT, mission
            if kind == "open":
                assert mission in ("open the red door", "open the grey door")


def test_sequence_levels_surface_forms():
    forms = {"then": 0, "after": 0}
    for seed in range(20):
        m = _reset("PickUpThenGoToLocal", seed)[1].mission
        assert re.fullmatch(r"pick up (the|a) \w+ \w+, then go to (the|a) \w+ \w+", m), m
        m = _reset("GoToAfterPickUpLocal", seed)[1].mission
        assert re.fullmatch(r"go to (the|a) \w+ \w+ after you pick up (the|a) \w+ \w+", m), m
        m = _reset("PickUpSeqPickUpLocal", seed)[1].mission
        assert re.fullmatch(r"(pick up .+, then pick up .+)|(pick up .+ after you pick up .+)", m), m
        m = _reset("PickUpSeqGoToLocal", seed)[1].mission
        forms["then" if ", then go to" in m else "after"] += 1
        assert not any(p in m for p in TRAIN_EXCLUDED)
    assert forms["then"] > 3 and forms["after"] > 3


def test_bad_kind_and_level_errors():
    with pytest.raises(UnknownNameError, match="goto"):
        make_babyai_text("MixedTrainLocal", kind="fly")
    with pytest.raises(UnknownNameError, match="BabyAI-GoToLocal-v0"):
        make_babyai_text("BabyAI-NoSuchLevel-v0")
    with pytest.raises(LondiError, match="Mixed"):
        make_level("GoToLocal", kind="goto")


def test_gymnasium_registration():
    env = gym.make("BabyAI-MixedTrainLocal-v0", kind="putnext", disable_env_checker=True)
    obs, _ = env.reset(seed=1)
    assert obs["mission"].startswith("put ")


def _gym_missions_in_new_process(level: str, seeds: list[int]) -> list[str]:
    code = ("import gymnasium as gym, json, sys\n"
            "from londi_jax.envs.babyai_text.levels import register_gym_levels\n"
            "register_gym_levels()\n"
            f"env = gym.make({level!r}, disable_env_checker=True)\n"
            f"out = [env.reset(seed=s)[0]['mission'] for s in {seeds!r}]\n"
            "out.append(env.reset()[0]['mission'])\n"
            "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_gym_mixed_level_reproducible_from_reset_seed_alone():
    # The kind used to be drawn unseeded when gym.make built the env: each process saw another mission.
    seeds = [100, 3, 100, 7]
    a = _gym_missions_in_new_process("BabyAI-MixedTrainLocal-v0", seeds)
    b = _gym_missions_in_new_process("BabyAI-MixedTrainLocal-v0", seeds)
    assert a == b
    assert a[0] == a[2]  # the same seed again in the same env gives the same episode
    # reset(seed=s) through Gymnasium = make_babyai_text(level, seed=s).reset(seed=s) (same kind and layout)
    for s, m in zip(seeds, a):
        env = make_babyai_text("MixedTrainLocal", seed=s)
        assert env.reset(seed=s).mission == m
    # every kind is reachable through seeds, and a kind change rebuilds the grid (open has two rooms)
    register_gym_levels()
    env = gym.make("BabyAI-MixedTestLocal-v0", disable_env_checker=True)
    widths = {}
    for s in range(40):
        env.reset(seed=s)
        widths[env.unwrapped.kind] = env.unwrapped.width
    assert set(widths) == set(MIXED_KINDS)
    assert widths["open"] > widths["goto"]
