"""BabyAI dynamics, observation and instruction verifier as pure JAX functions.

The rules are minigrid 3.2.0's (``MiniGridEnv.step``, ``Grid.process_vis``, ``gen_obs_grid``,
``RoomGridLevel.step`` and the verifier in ``minigrid.envs.babyai.core.verifier``), rewritten on
arrays so that ``step`` is ``jit``- and ``vmap``-able; ``tests/envs/test_babyai_jax.py`` checks
them against minigrid itself on converted states (``convert.from_minigrid``).

State layout (static sizes in :class:`StaticConfig`):

* the grid is ``wall[H, W]`` plus ``cell[H, W]``: the index of the object in the cell (-1 empty);
  cells outside the level's own grid are walls (minigrid's ``Grid.slice`` shows them as walls);
* objects (keys, balls, boxes, doors) live in slots ``0..M-1``: ``obj_type``, ``obj_color``,
  ``obj_state`` (doors: 0 open, 1 closed, 2 locked); type 0 marks an unused slot;
* the instruction is at most two action clauses ``sub`` (goto, pickup, open, putnext) joined by
  ``seq`` (single / Before "A, then B" / After "A after you B"), each with one or two object
  descriptions whose matching sets are fixed at reset (``desc_set``), as the verifier's
  ``obj_set`` is; the verifier's ``obj_poss`` (positions of the tracked objects that were on the
  grid at reset or at the last ``drop``, ``RoomGridLevel.update_objs_poss``) is ``poss[2, 2, M]``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from londi_jax.envs.babyai_jax import phrases as P

# minigrid's DIR_TO_VEC: 0 east (+x), 1 south (+y), 2 west, 3 north
DIR_TO_VEC = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.int32)
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = range(6)
N_ACTIONS = 6

# Instruction clauses and sequencing
GOTO, PICKUP_I, OPEN_I, PUTNEXT = 0, 1, 2, 3
SINGLE, BEFORE, AFTER = 0, 1, 2
SUB_NAMES = ("goto", "pickup", "open", "putnext")


@dataclasses.dataclass(frozen=True)
class StaticConfig:
    """Static shapes: ``height`` x ``width`` grid cells (the largest level's grid; GLAM's two-room
    ``open`` with 8x8 rooms needs 8 x 15), ``max_objects`` object slots (doors included)."""

    height: int = 8
    width: int = 15
    max_objects: int = 16
    mission_pieces: int = 16

    def __post_init__(self) -> None:
        from londi_jax.envs.babyai_text.levels import LevelParamError

        for name in ("height", "width", "max_objects", "mission_pieces"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise LevelParamError(f"StaticConfig.{name} must be an int >= 1, got {v!r}")
        if self.height < 3 or self.width < 3:
            raise LevelParamError(f"StaticConfig needs a grid of at least 3x3 cells, got {self.width}x{self.height}")
        if self.max_objects > self.height * self.width:
            raise LevelParamError(f"StaticConfig.max_objects={self.max_objects} exceeds the grid's "
                                  f"{self.height * self.width} cells")


@struct.dataclass
class Instr:
    """A BabyAI instruction as arrays (see module doc). Shapes: ``sub_kind[2]`` (-1 unused),
    ``desc_type/color/loc/the[2, 2]`` (clause, description: 0 = object, 1 = putnext's fixed one;
    colour/loc -1 when not named), ``desc_set[2, 2, M]``."""

    seq: jax.Array
    sub_kind: jax.Array
    desc_type: jax.Array
    desc_color: jax.Array
    desc_loc: jax.Array
    desc_the: jax.Array
    desc_set: jax.Array


@struct.dataclass
class EnvState:
    wall: jax.Array          # [H, W] bool
    cell: jax.Array          # [H, W] int32, object slot or -1
    obj_type: jax.Array      # [M] int32 (0: unused slot)
    obj_color: jax.Array     # [M] int32
    obj_state: jax.Array     # [M] int32
    agent_pos: jax.Array     # [2] int32 (x, y)
    agent_dir: jax.Array     # int32
    carry: jax.Array         # int32 object slot or -1
    step_count: jax.Array    # int32
    max_steps: jax.Array     # int32
    instr: Instr
    sub_done: jax.Array      # [2] bool: the clause has succeeded (Before/After bookkeeping)
    pre_carry: jax.Array     # [2] int32: the verifier's preCarrying per clause (-1: None)
    poss: jax.Array          # [2, 2, M, 2] int32: each description's obj_poss (padded)
    poss_valid: jax.Array    # [2, 2, M] bool: which entries of ``poss`` are used
    mission: jax.Array       # [mission_pieces] int32 piece ids
    kind: jax.Array          # int32 index into levels.KINDS (-1 when converted from another level)


@struct.dataclass
class Obs:
    """What the agent sees: minigrid's encoded view ``image[7, 7, 3]`` (lateral i, depth j), the
    direction, the sentence piece slots ``slots[53]`` (carry, 3 wall rays, 49 cells; 0 = none) and
    the mission pieces."""

    image: jax.Array
    direction: jax.Array
    slots: jax.Array
    mission: jax.Array


# --------------------------------------------------------------------------------------------
# grid queries


def cell_encoding(state: EnvState, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """minigrid's ``(type, colour, state)`` encoding of world cells (x, y) (any shape); cells
    outside the grid are walls, as ``Grid.slice`` makes them."""
    H, W = state.wall.shape
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    xc, yc = jnp.clip(x, 0, W - 1), jnp.clip(y, 0, H - 1)
    wall = state.wall[yc, xc] | ~inside
    o = state.cell[yc, xc]
    has = (o >= 0) & ~wall
    oc = jnp.maximum(o, 0)
    t = jnp.where(wall, P.WALL, jnp.where(has, state.obj_type[oc], P.EMPTY))
    c = jnp.where(wall, P.GREY, jnp.where(has, state.obj_color[oc], 0))
    s = jnp.where(has & (t == P.DOOR), state.obj_state[oc], 0)
    return t, c, s


def front_pos(state: EnvState) -> jax.Array:
    return state.agent_pos + jnp.asarray(DIR_TO_VEC)[state.agent_dir]


def object_positions(cell: jax.Array, num_objects: int) -> tuple[jax.Array, jax.Array]:
    """Where each object slot is on the grid ``cell[H, W]``: ``(pos[M, 2], on_grid[M])`` (carried
    or removed objects are not on the grid)."""
    W = cell.shape[1]
    M = num_objects
    flat = cell.reshape(-1)
    hit = flat[None, :] == jnp.arange(M)[:, None]  # [M, H*W]
    on = hit.any(axis=1)
    k = jnp.argmax(hit, axis=1)
    return jnp.stack([k % W, k // W], axis=-1).astype(jnp.int32), on


# --------------------------------------------------------------------------------------------
# observation


def view_world_coords(pos: jax.Array, direction: jax.Array) -> tuple[jax.Array, jax.Array]:
    """World (x, y) of every egocentric view cell ``[i, j]`` (i lateral left->right, j depth
    far->near, agent at (3, 6)): the same cells ``gen_obs_grid`` slices and rotates."""
    f = jnp.asarray(DIR_TO_VEC)[direction]
    r = jnp.asarray(DIR_TO_VEC)[(direction + 1) % 4]
    i = jnp.arange(P.VIEW)[:, None] - P.AGENT_CELL // P.VIEW
    d = (P.VIEW - 1) - jnp.arange(P.VIEW)[None, :]
    return pos[0] + i * r[0] + d * f[0], pos[1] + i * r[1] + d * f[1]


def _shift(x: jax.Array, k: int, fill) -> jax.Array:
    """``out[i] = x[i - k]`` along the last axis (``fill`` shifted in)."""
    pad = jnp.full(x.shape[:-1] + (k,), fill, x.dtype)
    return jnp.concatenate([pad, x[..., :-k]], axis=-1)


def _sweep(m: jax.Array, sb: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One left-to-right pass of ``process_vis`` over a row: cell i+1 is lit when cell i is lit
    and can be seen through. Returns (the row after the pass, ``go[i]``: lit and see-through).

    A prefix scan by doubling (spans 1, 2, 4 cover the 7 cells): a few whole-row operations."""
    # lit[i] = m[i] | (sb[i-1] & lit[i-1]): a linear OR/AND recurrence, scanned by doubling
    a, b = m, _shift(sb, 1, False)
    for k in (1, 2, 4):
        a = a | (b & _shift(a, k, False))
        b = b & _shift(b, k, False)
    lit = a
    return lit, lit & sb


def visibility(see_behind: jax.Array) -> jax.Array:
    """``Grid.process_vis`` for the agent at view cell (3, 6): ``see_behind[7, 7]`` -> mask.

    The same sweep as minigrid: rows from near to far; in each row a left-to-right then a
    right-to-left pass in which every lit see-through cell lights its neighbour in the pass's
    direction and the two cells ahead of it in the next row (``_sweep`` vectorises a pass)."""
    V = P.VIEW
    rows = [jnp.zeros(V, bool) for _ in range(V)]  # rows[j][i]
    rows[V - 1] = rows[V - 1].at[V // 2].set(True)
    for j in reversed(range(V)):
        sb = see_behind[:, j]
        lit, go = _sweep(rows[j], sb)                    # left to right: go[i] lights i+1
        nxt = jnp.zeros(V, bool)
        nxt = nxt | jnp.concatenate([jnp.zeros(1, bool), go[:-1]]) | jnp.concatenate([go[:-1], jnp.zeros(1, bool)])
        lit_r, go_r = _sweep(lit[::-1], sb[::-1])        # right to left, as a reversed left-to-right
        lit_r, go_r = lit_r[::-1], go_r[::-1]            # go_r[i] lights i-1 (i >= 1)
        nxt = nxt | jnp.concatenate([go_r[1:], jnp.zeros(1, bool)]) | jnp.concatenate([jnp.zeros(1, bool), go_r[1:]])
        rows[j] = lit_r
        if j > 0:
            rows[j - 1] = rows[j - 1] | nxt
    return jnp.stack(rows, axis=1)


def observe_image(state: EnvState) -> jax.Array:
    """minigrid's ``obs["image"]``: the encoded 7x7 view with occlusion, carried object in the
    agent's cell. int32 ``[7, 7, 3]``.

    The grid is encoded once as one packed int per cell (``t * 64 + c * 4 + s``) inside a border
    of walls 6 cells wide, so the view is one gather of 49 cells (no bounds clipping)."""
    H, W = state.wall.shape
    ys, xs = jnp.meshgrid(jnp.arange(H), jnp.arange(W), indexing="ij")
    gt, gc, gs = cell_encoding(state, xs, ys)
    B = P.VIEW - 1
    packed = jnp.pad(gt * 64 + gc * 4 + gs, B, constant_values=P.WALL * 64 + P.GREY * 4)
    x, y = view_world_coords(state.agent_pos, state.agent_dir)
    v = packed[y + B, x + B]
    t, c, s = v // 64, (v // 4) % 16, v % 4
    see_behind = (t != P.WALL) & ((t != P.DOOR) | (s == P.OPEN))
    vis = visibility(see_behind)
    img = jnp.stack([t, c, s], axis=-1) * vis[..., None]
    has_carry = state.carry >= 0
    k = jnp.maximum(state.carry, 0)
    agent = jnp.where(has_carry, jnp.stack([state.obj_type[k], state.obj_color[k], 0 * k]),
                      jnp.array([P.EMPTY, 0, 0]))
    return img.at[P.VIEW // 2, P.VIEW - 1].set(agent.astype(img.dtype)).astype(jnp.int32)


def describe_slots(image: jax.Array) -> jax.Array:
    """The BabyAI-Text sentences of an encoded view as piece ids ``[53]`` (0 = no sentence), in
    the fork's order (``envs.babyai_text.text.describe``): carry, walls forward/left/right, then
    the cells by ``i`` then ``j``."""
    flat = image.reshape(P.N_CELLS, 3)
    t, c, s = flat[:, 0], flat[:, 1], flat[:, 2]
    at, ac = t[P.AGENT_CELL], c[P.AGENT_CELL]
    carry = jnp.where(at > P.WALL, jnp.asarray(P.CARRY_SENTENCE)[jnp.clip(at * P.N_COLORS + ac, 0,
                                                                          len(P.CARRY_SENTENCE) - 1)], 0)
    rays = []
    for r in range(3):
        cells = jnp.asarray(P.RAY_CELLS[r])
        valid = jnp.arange(P.VIEW - 1) < int(P.RAY_LENGTHS[r])
        stop = (t[cells] > P.EMPTY) & valid
        first = jnp.argmax(stop)
        is_wall = stop.any() & (t[cells][first] == P.WALL)
        rays.append(jnp.where(is_wall, jnp.asarray(P.WALL_SENTENCE)[r, first + 1], 0))
    k = jnp.arange(P.N_CELLS)
    tt = jnp.clip(t, 0, P.N_TYPES - 1)
    piece = (P.SENTENCE_START + jnp.asarray(P.OBJ_TYPE_OFFSET)[tt]
             + (c * jnp.asarray(P.OBJ_TYPE_STATES)[tt] + s) * (P.N_CELLS - 1) + k - (k > P.AGENT_CELL))
    objs = jnp.where((t > P.WALL) & (t <= P.BOX) & (k != P.AGENT_CELL), piece, 0)
    return jnp.concatenate([carry[None], jnp.stack(rays), objs]).astype(jnp.int32)


def observe(state: EnvState) -> Obs:
    image = observe_image(state)
    return Obs(image=image, direction=state.agent_dir, slots=describe_slots(image), mission=state.mission)


# --------------------------------------------------------------------------------------------
# dynamics


def _move(state: EnvState, action: jax.Array) -> EnvState:
    """``MiniGridEnv.step``'s effect on the world (no reward, no verifier)."""
    fwd = front_pos(state)
    t, _, s = cell_encoding(state, fwd[0], fwd[1])
    H, W = state.wall.shape
    fx, fy = jnp.clip(fwd[0], 0, W - 1), jnp.clip(fwd[1], 0, H - 1)
    f_obj = jnp.where(t > P.WALL, state.cell[fy, fx], -1)
    carrying = state.carry >= 0
    k = jnp.maximum(state.carry, 0)

    new_dir = jnp.where(action == LEFT, (state.agent_dir + 3) % 4,
                        jnp.where(action == RIGHT, (state.agent_dir + 1) % 4, state.agent_dir))
    can_move = (action == FORWARD) & ((t == P.EMPTY) | ((t == P.DOOR) & (s == P.OPEN)))
    new_pos = jnp.where(can_move, fwd, state.agent_pos)

    can_pick = (action == PICKUP) & ((t == P.KEY) | (t == P.BALL) | (t == P.BOX)) & ~carrying
    can_drop = (action == DROP) & (t == P.EMPTY) & carrying
    toggle = action == TOGGLE
    unlock = (toggle & (t == P.DOOR) & (s == P.LOCKED) & carrying & (state.obj_type[k] == P.KEY)
              & (state.obj_color[k] == state.obj_color[jnp.maximum(f_obj, 0)]))
    flip = toggle & (t == P.DOOR) & (s != P.LOCKED)
    open_box = toggle & (t == P.BOX)  # Box.toggle replaces the box by its contents (none in BabyAI)

    cell_val = jnp.where(can_pick | open_box, -1, jnp.where(can_drop, state.carry, state.cell[fy, fx]))
    cell = state.cell.at[fy, fx].set(cell_val)
    door = jnp.maximum(f_obj, 0)
    door_state = jnp.where(unlock, P.OPEN, jnp.where(flip, 1 - s, state.obj_state[door]))
    obj_state = state.obj_state.at[door].set(jnp.where(f_obj >= 0, door_state, state.obj_state[door]))
    carry = jnp.where(can_pick, f_obj, jnp.where(can_drop, -1, state.carry))
    return state.replace(cell=cell, obj_state=obj_state, carry=carry, agent_pos=new_pos, agent_dir=new_dir)


def _verify_clause(state: EnvState, sub: int, action: jax.Array, fwd: jax.Array, open_door: jax.Array,
                   pos: jax.Array, on: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One action clause's ``verify_action`` after the world moved: ``(success, preCarrying')``.
    ``fwd``: the front cell; ``open_door``: the slot of the open door there (-1: none); ``pos``,
    ``on``: ``object_positions`` now (shared by both clauses, computed once per step)."""
    kind = state.instr.sub_kind[sub]
    objs = state.instr.desc_set[sub, 0]
    # GoTo: facing one of the description's obj_poss
    goto_ok = ((state.poss[sub, 0] == fwd[None, :]).all(-1) & state.poss_valid[sub, 0]).any()
    # Open: toggled, and the door in front is a tracked one and now open
    open_ok = (action == TOGGLE) & (open_door >= 0) & objs[jnp.maximum(open_door, 0)]
    # Pickup / PutNext keep what was carried when they were last verified
    pre = state.pre_carry[sub]
    carry = state.carry
    pick_ok = (action == PICKUP) & (pre < 0) & (carry >= 0) & objs[jnp.maximum(carry, 0)]
    p = jnp.maximum(pre, 0)
    next_to = (jnp.abs(state.poss[sub, 1] - pos[p][None, :]).sum(-1) == 1) & state.poss_valid[sub, 1]
    put_ok = (action == DROP) & (pre >= 0) & objs[p] & on[p] & next_to.any()
    ok = jnp.select([kind == GOTO, kind == PICKUP_I, kind == OPEN_I, kind == PUTNEXT],
                    [goto_ok, pick_ok, open_ok, put_ok], False)
    new_pre = jnp.where((kind == PICKUP_I) | (kind == PUTNEXT), carry, pre)
    return ok, new_pre


def step_world(state: EnvState, action: jax.Array) -> tuple[EnvState, jax.Array, jax.Array, jax.Array]:
    """One BabyAI step without auto-reset: ``(state', reward, terminated, truncated)``.

    Reward ``1 - 0.9 * step_count / max_steps`` on success (``RoomGridLevel._reward``), else 0;
    ``truncated`` when ``step_count >= max_steps`` (minigrid sets it before the verifier, so a
    success on the last step is both)."""
    action = jnp.asarray(action, jnp.int32)
    state = _move(state, action).replace(step_count=state.step_count + 1)
    pos, on = object_positions(state.cell, state.obj_type.shape[0])
    is_drop = action == DROP
    poss = jnp.where(is_drop, jnp.broadcast_to(pos, state.poss.shape), state.poss)
    poss_valid = jnp.where(is_drop, state.instr.desc_set & on, state.poss_valid)
    state = state.replace(poss=poss, poss_valid=poss_valid)

    seq = state.instr.seq
    # Which clause runs first: Before -> clause 0 ("A, then B"), After -> clause 1 ("A after you B").
    first = jnp.where(seq == AFTER, 1, 0)
    second = 1 - first
    fwd = front_pos(state)
    t, _, s = cell_encoding(state, fwd[0], fwd[1])
    H, W = state.wall.shape
    open_door = jnp.where((t == P.DOOR) & (s == P.OPEN),
                          state.cell[jnp.clip(fwd[1], 0, H - 1), jnp.clip(fwd[0], 0, W - 1)], -1)
    ok = [None, None]
    new_pre = [None, None]
    for sub in (0, 1):
        ok[sub], new_pre[sub] = _verify_clause(state, sub, action, fwd, open_door, pos, on)
    ok = jnp.stack(ok)
    new_pre = jnp.stack(new_pre)
    first_done = state.sub_done[first]
    run_first = ~first_done
    first_ok = run_first & ok[first]
    run_second = (seq != SINGLE) & (first_done | first_ok)
    success = jnp.where(seq == SINGLE, ok[0], run_second & ok[second])
    called = jnp.zeros(2, bool).at[first].set(run_first).at[second].set(run_second)
    pre_carry = jnp.where(called, new_pre, state.pre_carry)
    sub_done = state.sub_done.at[first].set(first_done | first_ok)

    reward = jnp.where(success, 1.0 - 0.9 * state.step_count / state.max_steps, 0.0).astype(jnp.float32)
    truncated = state.step_count >= state.max_steps
    state = state.replace(pre_carry=pre_carry, sub_done=sub_done)
    return state, reward, success, truncated


# --------------------------------------------------------------------------------------------
# mission text


def compact(pieces: jax.Array, valid: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Move the valid entries of ``pieces[N]`` to the front of a ``[size]`` buffer (order kept,
    the rest 0): ``(buffer, count)``; entries past ``size`` are dropped (the count says so)."""
    pos = jnp.cumsum(valid) - 1
    idx = jnp.where(valid, pos, size)
    out = jnp.zeros(size, pieces.dtype).at[idx].set(pieces, mode="drop")
    return out, valid.sum()


def _desc_pieces(instr: Instr, sub: int, d: int) -> list[tuple[jax.Array, jax.Array]]:
    t, c = instr.desc_type[sub, d], instr.desc_color[sub, d]
    loc, the = instr.desc_loc[sub, d], instr.desc_the[sub, d]
    types = np.zeros(P.BOX + 1, np.int32)
    for ty, word in P.TYPE_WORDS.items():
        types[ty] = P.piece(word)
    colors = jnp.asarray([P.piece(w) for w in P.COLOR_WORDS])
    locs = jnp.asarray([P.piece(w) for w in P.LOC_WORDS])
    arts = jnp.asarray([P.piece(w) for w in P.ARTICLES])
    on = jnp.asarray(True)
    return [(arts[the.astype(jnp.int32)], on), (colors[jnp.maximum(c, 0)], c >= 0),
            (jnp.asarray(types)[jnp.clip(t, 0, P.BOX)], on), (locs[jnp.maximum(loc, 0)], loc >= 0)]


def _clause_pieces(instr: Instr, sub: int) -> list[tuple[jax.Array, jax.Array]]:
    kind = instr.sub_kind[sub]
    used = kind >= 0
    verbs = jnp.asarray([P.piece(P.VERBS[k]) for k in SUB_NAMES])
    out = [(verbs[jnp.maximum(kind, 0)], used)]
    out += [(p, v & used) for p, v in _desc_pieces(instr, sub, 0)]
    put = kind == PUTNEXT
    out.append((jnp.asarray(P.piece(P.LINKS["next to"])), put))
    out += [(p, v & put) for p, v in _desc_pieces(instr, sub, 1)]
    return out


def mission_pieces(instr: Instr, size: int) -> jax.Array:
    """The mission's piece ids ``[size]``, as the verifier's ``surface`` writes it: "go to X",
    "pick up X", "open X", "put X next to Y"; "A, then B" (Before), "A after you B" (After); X =
    "the"/"a" (exactly one / several matching objects), the colour if named, the type, the
    location phrase if any."""
    seq = instr.seq
    first = _clause_pieces(instr, 0)
    p0 = jnp.stack([jnp.asarray(p, jnp.int32) for p, _ in first])
    v0 = jnp.stack([jnp.asarray(v) for _, v in first])
    # Before: "A, then B", the comma glued to A's last word (phrases.COMMA_VARIANT)
    last = v0 & (jnp.cumsum(v0[::-1])[::-1] == 1)
    p0 = jnp.where(last & (seq == BEFORE), jnp.asarray(P.COMMA_VARIANT)[p0], p0)
    link = [(jnp.asarray(P.piece(P.LINKS["then"])), seq == BEFORE),
            (jnp.asarray(P.piece(P.LINKS["after you"])), seq == AFTER)]
    rest = link + [(p, v & (seq != SINGLE)) for p, v in _clause_pieces(instr, 1)]
    pieces = jnp.concatenate([p0, jnp.stack([jnp.asarray(p, jnp.int32) for p, _ in rest])])
    valid = jnp.concatenate([v0, jnp.stack([jnp.asarray(v) for _, v in rest])])
    return compact(pieces, valid, size)[0]


def mission_text(mission) -> str:
    """Host-side mission string from its pieces (the leading space of the first piece dropped)."""
    return P.render_pieces(mission)[1:]
