"""Convert a running minigrid BabyAI env (or a BabyAI-Text env) into the JAX env's state.

``from_minigrid(env)`` reads the grid, the agent, what it carries, the step counter and the
instruction's verifier state (matching object sets, tracked positions, preCarrying, which clause
of a sequence is done) so that stepping the JAX state gives what stepping the Python env gives
(``tests/envs/test_babyai_jax.py``). It works mid-episode.
(The state's arrays are NumPy: stack many with ``jax.tree.map(np.stack, ...)`` before a
``vmap``.)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.envs.babyai.core.verifier import (
    AfterInstr,
    BeforeInstr,
    GoToInstr,
    OpenInstr,
    PickupInstr,
    PutNextInstr,
)

from londi_jax.envs.babyai_jax import core
from londi_jax.envs.babyai_jax import phrases as P
from londi_jax.utils.errors import LondiError

_CLAUSES = {GoToInstr: core.GOTO, PickupInstr: core.PICKUP_I, OpenInstr: core.OPEN_I, PutNextInstr: core.PUTNEXT}


class ConversionError(LondiError, ValueError):
    """A minigrid state the JAX env cannot hold (too large, an unsupported object or instruction)."""


def from_minigrid(env: Any, config: core.StaticConfig = core.StaticConfig()) -> core.EnvState:
    """The JAX state of a minigrid BabyAI level (a ``RoomGridLevel``, any gymnasium wrapper of one,
    or a ``BabyAITextEnv``) after ``reset`` and any number of steps.

    Raises ``ConversionError`` for a grid larger than ``config``, more objects than its slots, an
    object other than a wall, door, key, ball or box, or an instruction other than the action
    clauses (go to, pick up, open, put next to) and Before/After of two of them."""
    base = getattr(env, "unwrapped", env)
    if not hasattr(base, "grid") or not hasattr(base, "instrs"):
        raise ConversionError(f"from_minigrid needs a BabyAI level after reset(), got {type(env).__name__}")
    if base.step_count >= base.max_steps:
        raise ConversionError(f"the episode is over (step {base.step_count} of {base.max_steps}); "
                              "convert during an episode, e.g. after reset()")
    H, W, M = config.height, config.width, config.max_objects
    gw, gh = base.grid.width, base.grid.height
    if gw > W or gh > H:
        raise ConversionError(f"grid {gw}x{gh} does not fit StaticConfig(width={W}, height={H}); "
                              "use a larger StaticConfig (Python API: convert.from_minigrid(env, StaticConfig(...)))")
    wall = np.ones((H, W), bool)
    cell = np.full((H, W), -1, np.int32)
    otype, ocolor, ostate = np.zeros(M, np.int32), np.zeros(M, np.int32), np.zeros(M, np.int32)
    slot: dict[int, int] = {}

    def add(obj: Any) -> int:
        if obj.type not in ("door", "key", "ball", "box"):
            raise ConversionError(f"the JAX env has no {obj.type!r} objects (BabyAI's doors, keys, balls, boxes only)")
        if len(slot) >= M:
            raise ConversionError(f"more than max_objects={M} objects; use a larger StaticConfig")
        k = len(slot)
        slot[id(obj)] = k
        otype[k], ocolor[k] = OBJECT_TO_IDX[obj.type], COLOR_TO_IDX[obj.color]
        if obj.type == "door":
            ostate[k] = P.OPEN if obj.is_open else (P.LOCKED if obj.is_locked else P.CLOSED)
        return k

    for x in range(gw):
        for y in range(gh):
            obj = base.grid.get(x, y)
            if obj is None:
                wall[y, x] = False
            elif obj.type == "wall":
                continue
            else:
                wall[y, x] = False
                cell[y, x] = add(obj)
    carry = add(base.carrying) if base.carrying is not None else -1

    instr = base.instrs
    if isinstance(instr, (BeforeInstr, AfterInstr)):
        seq = core.BEFORE if isinstance(instr, BeforeInstr) else core.AFTER
        clauses = [instr.instr_a, instr.instr_b]
        first_done = (instr.a_done if seq == core.BEFORE else instr.b_done) == "success"
    elif type(instr) in _CLAUSES:
        seq, clauses, first_done = core.SINGLE, [instr], False
    else:
        raise ConversionError(f"unsupported instruction {type(instr).__name__}; the JAX env has "
                              "GoTo/Pickup/Open/PutNext and Before/After of two of them")
    sub_kind = np.full(2, -1, np.int32)
    d_type, d_color = np.zeros((2, 2), np.int32), np.full((2, 2), -1, np.int32)
    d_loc, d_the = np.full((2, 2), -1, np.int32), np.zeros((2, 2), bool)
    d_set = np.zeros((2, 2, M), bool)
    poss, poss_valid = np.zeros((2, 2, M, 2), np.int32), np.zeros((2, 2, M), bool)
    pre_carry = np.full(2, -1, np.int32)
    sub_done = np.zeros(2, bool)
    for s, clause in enumerate(clauses):
        if type(clause) not in _CLAUSES:
            raise ConversionError(f"unsupported clause {type(clause).__name__} in a sequence")
        sub_kind[s] = _CLAUSES[type(clause)]
        descs = [clause.desc_move, clause.desc_fixed] if isinstance(clause, PutNextInstr) else [clause.desc]
        for d, desc in enumerate(descs):
            if desc.type is None:
                raise ConversionError("descriptions without an object type are not supported")
            d_type[s, d] = OBJECT_TO_IDX[desc.type]
            d_color[s, d] = -1 if desc.color is None else COLOR_TO_IDX[desc.color]
            d_loc[s, d] = -1 if desc.loc is None else P.LOC_NAMES.index(desc.loc)
            d_the[s, d] = len(desc.obj_set) == 1
            for obj in desc.obj_set:
                if id(obj) in slot:  # an opened box is gone from the world
                    d_set[s, d, slot[id(obj)]] = True
            for n, pos in enumerate(desc.obj_poss):
                poss[s, d, n] = pos
                poss_valid[s, d, n] = True
        pre = getattr(clause, "preCarrying", None)
        if pre is not None:
            pre_carry[s] = slot[id(pre)] if id(pre) in slot else add(pre)
    if seq != core.SINGLE:
        sub_done[0 if seq == core.BEFORE else 1] = first_done
    i32 = np.int32
    ins = core.Instr(seq=i32(seq), sub_kind=sub_kind, desc_type=d_type, desc_color=d_color, desc_loc=d_loc,
                     desc_the=d_the, desc_set=d_set)
    # the mission laid out with room to spare, so a config too small for it is an error, not a cut
    mission = np.asarray(_mission_pieces(ins, _MISSION_ROOM))
    if (mission > 0).sum() > config.mission_pieces:
        raise ConversionError(f"the mission {base.mission!r} needs {(mission > 0).sum()} pieces; StaticConfig has "
                              f"mission_pieces={config.mission_pieces}: use a larger StaticConfig")
    if config.mission_pieces > _MISSION_ROOM:
        mission = np.pad(mission, (0, config.mission_pieces - _MISSION_ROOM))
    return core.EnvState(
        wall=wall, cell=cell, obj_type=otype, obj_color=ocolor, obj_state=ostate,
        agent_pos=np.asarray(base.agent_pos, i32), agent_dir=i32(base.agent_dir), carry=i32(carry),
        step_count=i32(base.step_count), max_steps=i32(base.max_steps), instr=ins, sub_done=sub_done,
        pre_carry=pre_carry, poss=poss, poss_valid=poss_valid,
        mission=mission[:config.mission_pieces], kind=i32(-1))


_mission_pieces = jax.jit(core.mission_pieces, static_argnums=1)
_MISSION_ROOM = 32  # more than any mission needs (two putnext clauses and a link: 21 pieces)
