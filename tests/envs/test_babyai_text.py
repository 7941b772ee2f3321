"""BabyAI-Text sentences: hand-built grids with hand-written expectations, GLAM's golden
prompts, and a cross-check against a plain re-statement of the fork's algorithm."""

from __future__ import annotations

import re

import numpy as np
import pytest
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Box, Door, Key
from minigrid.minigrid_env import MiniGridEnv

from londi_jax.envs.babyai_text import all_sentences, describe, make_babyai_text


class HandGrid(MiniGridEnv):
    """A room of ``size`` with outer walls, hand-placed objects and a fixed agent pose."""

    def __init__(self, size, agent, direction, objects=()):
        self._spec = (agent, direction, list(objects))
        super().__init__(mission_space=MissionSpace(lambda: "test"), grid_size=size, max_steps=10, see_through_walls=False)

    def _gen_grid(self, width, height):
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        agent, direction, objects = self._spec
        for (x, y), obj in objects:
            self.grid.set(x, y, obj)
        self.agent_pos, self.agent_dir = np.array(agent), direction
        self.mission = "test"


def sentences(size, agent, direction, objects=(), carrying=None):
    env = HandGrid(size, agent, direction, objects)
    env.reset(seed=0)
    env.carrying = carrying
    return describe(env.gen_obs()["image"])


# Agent at (1, 3) facing right (+x) in a 7x7 room: forward is +x, left is -y, right is +y.
def test_three_wall_rays_only_and_plural():
    # Diagonal walls are visible too but never described.
    assert sentences(7, (1, 3), 0) == [
        "You see a wall 5 steps forward",
        "You see a wall 3 steps left",
        "You see a wall 3 steps right",
    ]


def test_wall_one_step_singular():
    # At (5, 1) facing right: walls right ahead and right beside; the right ray (y = 2..4)
    # ends before the bottom wall, so it says nothing.
    assert sentences(7, (5, 1), 0) == ["You see a wall 1 step forward", "You see a wall 1 step left"]


def test_objects_hide_walls_on_rays_and_order_left_to_right():
    objs = [((3, 3), Ball("red")), ((1, 2), Key("green")), ((1, 5), Door("blue", is_locked=True))]
    assert sentences(7, (1, 3), 0, objs) == [
        # no forward/left/right wall: the ball, the key and the door end the three rays
        "You see a green key 1 step left",
        "You see a red ball 2 steps forward",
        "You see a locked blue door 2 steps right",
    ]


def test_door_states_and_open_door_quirk():
    objs = [
        ((2, 1), Door("green", is_open=True)),  # i=1 (2 left), j=5 (1 forward)
        ((4, 2), Door("purple")),  # closed: i=2, j=3
        ((3, 4), Door("yellow", is_locked=True)),  # i=4, j=4
    ]
    assert sentences(7, (1, 3), 0, objs) == [
        "You see a wall 5 steps forward",
        "You see a wall 3 steps left",
        "You see a wall 3 steps right",
        "You see a open green door 2 steps left and 1 step forward",
        "You see a closed purple door 1 step left and 3 steps forward",
        "You see a locked yellow door 1 step right and 2 steps forward",
    ]


def test_lateral_before_forward_and_far_before_near_in_a_column():
    objs = [((3, 2), Ball("grey")), ((5, 2), Box("red")), ((2, 5), Key("purple"))]
    assert sentences(7, (1, 3), 0, objs)[3:] == [
        "You see a red box 1 step left and 4 steps forward",  # same column i=2: far first
        "You see a grey ball 1 step left and 2 steps forward",
        "You see a purple key 2 steps right and 1 step forward",
    ]


def test_carried_object_first_and_not_listed_again():
    out = sentences(7, (1, 3), 0, [((2, 3), Box("yellow"))], carrying=Key("red"))
    assert out == [
        "You carry a red key",
        "You see a wall 3 steps left",  # no forward wall: the box ends that ray
        "You see a wall 3 steps right",
        "You see a yellow box 1 step forward",
    ]


def test_objects_at_the_edges_of_the_view():
    # 11x11 room, agent at (1, 5) facing right: view x = 1..7, y = 2..8.
    objs = [((7, 2), Ball("blue")), ((7, 8), Box("green")), ((1, 2), Key("grey")), ((1, 8), Ball("purple"))]
    assert sentences(11, (1, 5), 0, objs) == [
        "You see a blue ball 3 steps left and 6 steps forward",  # i=0, j=0
        "You see a grey key 3 steps left",  # i=0, j=6 (ends the left ray: no left wall)
        "You see a green box 3 steps right and 6 steps forward",  # i=6, j=0
        "You see a purple ball 3 steps right",  # i=6, j=6
    ]


def test_other_direction_facing_down():
    # Facing +y: forward is +y, left is +x, right is -x. Agent at (3, 1) in a 7x7 room.
    objs = [((4, 2), Ball("red")), ((3, 4), Key("blue"))]
    assert sentences(7, (3, 1), 1, objs) == [
        "You see a wall 3 steps left",  # no forward wall: the key ends that ray
        "You see a wall 3 steps right",
        "You see a red ball 1 step left and 1 step forward",
        "You see a blue key 3 steps forward",
    ]


def test_unseen_cells_are_skipped_on_a_ray():
    image = np.zeros((7, 7, 3), dtype=np.uint8)
    image[:, :, 0] = 0  # all unseen
    image[3, 6] = (1, 0, 0)
    image[3, 5] = (1, 0, 0)
    image[3, 3] = (2, 5, 0)  # wall 3 ahead, unseen cell at j=4 in between
    image[0, 6] = (2, 5, 0)  # wall 3 left
    image[5, 6] = (6, 0, 0)  # red ball on the right ray before a wall
    image[6, 6] = (2, 5, 0)
    assert describe(image) == ["You see a wall 3 steps forward", "You see a wall 3 steps left", "You see a red ball 2 steps right"]


def test_bad_shape_rejected():
    with pytest.raises(ValueError, match=r"\(7, 7, 3\)"):
        describe(np.zeros((5, 5, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="integer"):
        describe(np.zeros((7, 7, 3), dtype=np.float32))


def test_phrase_set_size():
    phrases = all_sentences()
    assert len(phrases) == 1728 + 12 + 18
    assert len(set(phrases)) == len(phrases)


# -- GLAM golden check ---------------------------------------------------------------------
# GLAM's experiments/train_language_agent.py (get_test_prompts, template 1) hard-codes these
# observations for BabyAI-GoToLocal-v0 seed 0, in an older phrasing ("A ..." and "2 step").
GLAM_OBS = [
    "A wall 2 step left, A purple key 1 step left and 2 steps forward, A yellow key 1 step left and 1 step forward, A green ball 3 steps forward, A grey ball 1 step right and 5 steps forward, A green key 1 step right and 2 steps forward, A grey ball 1 step right and 1 step forward, A green key 2 steps right and 4 steps forward, A red box 2 steps right and 2 steps forward",
    "A purple key 1 step left and 1 step forward, A yellow key 1 step left, A green ball 2 steps forward, A grey ball 1 step right and 4 steps forward, A green key 1 step right and 1 step forward, A grey ball 1 step right, A green key 2 steps right and 3 steps forward, A red box 2 steps right and 1 step forward",
    "A wall 2 step right, A green key 3 steps left and 2 steps forward, A green ball 2 steps left, A red box 1 step left and 2 steps forward, A green key 1 step left and 1 step forward, A grey ball 1 step forward",
]


def _normalise(sentence: str) -> str:
    s = re.sub(r"^(You see a|A) ", "", sentence.strip())
    return s.replace("steps", "step")


def test_golden_glam_goto_local_seed0():
    env = make_babyai_text("BabyAI-GoToLocal-v0")
    first = env.reset(seed=0)
    assert first.mission == "go to the green ball"
    got = [first.info["descriptions"]]
    for action in ("go forward", "turn right"):  # GLAM's test prompt 2 continues this way
        got.append(env.step(action).info["descriptions"])
    for mine, glam in zip(got, GLAM_OBS, strict=True):
        assert [_normalise(s) for s in mine] == [_normalise(s) for s in glam.split(", ")]


# -- cross-check against a plain loop version of the fork's gen_graph ------------------------
def reference_describe(image, carrying):
    """Independent, deliberately naive re-statement of the fork's gen_graph."""
    names = {4: "door", 5: "key", 6: "ball", 7: "box", 3: "floor", 8: "goal", 9: "lava"}
    colours = ["red", "green", "blue", "purple", "yellow", "grey"]
    states = ["open", "closed", "locked"]
    out = []
    if carrying is not None:
        out.append(f"You carry a {carrying.color} {carrying.type}")

    def plural(n):
        return "step" if n == 1 else "steps"

    ax, ay = 3, 6
    for name, cells in (
        ("forward", [(ax, j) for j in range(ay - 1, -1, -1)]),
        ("left", [(i, ay) for i in range(ax - 1, -1, -1)]),
        ("right", [(i, ay) for i in range(ax + 1, 7)]),
    ):
        for i, j in cells:
            t = image[i][j][0]
            if t in (0, 1):
                continue
            if t == 2:
                d = abs(i - ax) + abs(j - ay)
                out.append(f"You see a wall {d} {plural(d)} {name}")
            break
    for i in range(7):
        for j in range(7):
            t, c, st = (int(v) for v in image[i][j])
            if t in (0, 1, 2) or (i, j) == (ax, ay):
                continue
            head = f"You see a {states[st]} {colours[c]} door" if t == 4 else f"You see a {colours[c]} {names[t]}"
            dx, dy = i - ax, ay - j
            if dx == 0:
                pos = f"{dy} {plural(dy)} forward"
            else:
                side = "right" if dx > 0 else "left"
                pos = f"{abs(dx)} {plural(abs(dx))} {side}"
                if dy:
                    pos += f" and {dy} {plural(dy)} forward"
            out.append(f"{head} {pos}")
    return out


@pytest.mark.parametrize("level", ["BabyAI-MixedTrainLocal-v0", "BabyAI-PutNextLocal-v0", "BabyAI-UnlockLocal-v0"])
def test_matches_reference_on_random_walks(level):
    rng = np.random.default_rng(0)
    checked = 0
    for seed in range(6):
        env = make_babyai_text(level, seed=seed)
        env.reset(seed=seed)
        base = env.unwrapped
        for _ in range(40):
            image = base.gen_obs()["image"]
            assert describe(image) == reference_describe(image, base.carrying)
            checked += 1
            out = env.step(env.actions[int(rng.integers(6))])
            if out.done:
                env.reset()
    assert checked == 240
