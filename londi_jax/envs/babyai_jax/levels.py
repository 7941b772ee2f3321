"""Level generation in JAX: GLAM's BabyAI-Text task kinds, in distribution with minigrid's.

minigrid draws a layout with Python's random stream and rejection sampling; no JAX program can
follow that stream seed for seed, so this module draws from the same *distribution*, step by step
as ``envs.babyai_text.levels.GlamLevel`` (on ``RoomGrid``/``LevelGen``) builds a level:

* one ``room_size`` room, or for ``open`` two side by side with a locked door at a uniform place on
  the shared wall; the locked room is either one (50/50), the key and the distractors are in the
  other, placed before the agent and never next to the grid's centre (minigrid places them while
  its agent still stands there);
* single-room kinds place the agent first (uniform cell and direction), then the objects: each a
  uniform type (key, ball, box) and colour, on a uniform free cell not on or 4-next to the agent;
* ``open`` then places the agent uniformly in the unlocked room, facing an empty cell or a wall;
* the instruction: GoTo / Pickup one uniform object; PutNext(a, b) and the pick-up sequences with b
  redrawn until its description differs from a's when a's description matches a single object;
  Open the door, its colour named with probability ``name_open_color`` (train 1/2, test 1);
* rejection: every object reachable from the agent without moving another (doors pass), no
  excluded colour-noun pair in the mission (``phrase_filter``), and for PutNext two distinct
  descriptions with no moved object already next to a fixed one (``validate_instrs``);
* ``max_steps = navigations * room_size**2 * rooms`` (2 navigations for putnext and sequences).

``tests/envs/test_babyai_jax.py`` compares the statistics (kinds, object counts, types and
colours, article use, distances, filters) with minigrid's levels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from minigrid.core.constants import COLOR_TO_IDX

from londi_jax.envs.babyai_jax import core
from londi_jax.envs.babyai_jax import phrases as P
from londi_jax.envs.babyai_text import levels as py_levels
from londi_jax.utils.errors import UnknownNameError

KINDS: tuple[str, ...] = py_levels.GLAM_KINDS
"""Task kinds, indexed as ``EnvParams.kind_probs``: goto, pickup, open, putnext, pick up seq go to,
pick up then go to, go to after pick up, pick up seq pick up."""
FILTERS = ("none", "train", "test")
MAX_ATTEMPTS = 1000  # layouts drawn per reset before giving up (reported in ``attempts``)

_OBJ_TYPES = np.array([P.KEY, P.BALL, P.BOX], np.int32)


def _excluded_table(phrases: tuple[str, ...]) -> np.ndarray:
    table = np.zeros((len(P.COLORS), P.BOX + 1), bool)
    words = {w.strip(): t for t, w in P.TYPE_WORDS.items()}
    for ph in phrases:
        color, noun = ph.split()
        table[COLOR_TO_IDX[color], words[noun]] = True
    return table


EXCLUDED = np.stack([np.zeros((len(P.COLORS), P.BOX + 1), bool), _excluded_table(py_levels.TRAIN_EXCLUDED),
                     _excluded_table(py_levels.TEST_EXCLUDED)])  # [filter, colour, type]
DOOR_COLORS = np.zeros((3, len(P.COLORS)), bool)  # [filter, colour]: the locked door's colours
DOOR_COLORS[0, :] = True
DOOR_COLORS[1, [COLOR_TO_IDX[c] for c in py_levels.TRAIN_DOOR_COLORS]] = True
DOOR_COLORS[2, [COLOR_TO_IDX[c] for c in py_levels.TEST_DOOR_COLORS]] = True
NAME_OPEN_COLOR = np.array([0.5, 0.5, 1.0], np.float32)  # by filter (GLAM: "half" train, "always" test)


@struct.dataclass
class EnvParams:
    """Traced level parameters (sweeping them never recompiles).

    room_size: side of a room in cells, walls included (GLAM 8; must fit ``StaticConfig``).
    num_dists: distractors (GLAM 8); objects placed are num_dists + 1 (goto, pickup, open's key)
        or + 2 (putnext and the sequences).
    kind_probs: ``[len(KINDS)]`` probabilities of each task kind per episode.
    phrase_filter: 0 none, 1 train (MixedTrainLocal: reject the held-out colour-noun pairs),
        2 test (MixedTestLocal: only those pairs; red/grey doors, colour always named).
    max_steps: 0 for BabyAI's own limit, else this limit for every episode.
    """

    room_size: jax.Array
    num_dists: jax.Array
    kind_probs: jax.Array
    phrase_filter: jax.Array
    max_steps: jax.Array
    config: core.StaticConfig = struct.field(pytree_node=False, default=core.StaticConfig())
    """The static shapes these parameters were checked against (static under ``jit``)."""


def kind_index(kind: str) -> int:
    if kind not in KINDS:
        raise UnknownNameError("task kind", kind, KINDS)
    return KINDS.index(kind)


def make_params(kinds: tuple[str, ...] | str = py_levels.MIXED_KINDS, room_size: int = 8, num_dists: int = 8,
                phrase_filter: str = "train", max_steps: int = 0,
                config: core.StaticConfig = core.StaticConfig()) -> EnvParams:
    """Parameters for episodes of ``kinds`` (uniform over them), checked against ``config``.

    Raises ``UnknownNameError`` for an unknown kind or filter and ``LevelParamError`` when the
    rooms or objects do not fit (same limits as the Python levels) or the grid exceeds ``config``."""
    if isinstance(kinds, str):
        kinds = (kinds,)
    if not isinstance(kinds, (tuple, list)) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise py_levels.LevelParamError(f"kinds must be a task kind or a non-empty tuple of them, got {kinds!r}; "
                                        f"known kinds: {', '.join(KINDS)}")
    kinds = tuple(kinds)
    if len(set(kinds)) != len(kinds):
        raise py_levels.LevelParamError(f"kinds {kinds} repeats a kind; episodes draw the kinds given uniformly, "
                                        "so give each once")
    idx = [kind_index(k) for k in kinds]
    if phrase_filter not in FILTERS:
        raise UnknownNameError("phrase filter", phrase_filter, FILTERS)
    py_levels.check_level_params("babyai-jax", dict(room_size=room_size, num_dists=num_dists,
                                                    max_steps=max_steps or None), kinds)
    if max_steps >= 2**31:
        raise py_levels.LevelParamError(f"max_steps must be below 2**31, got {max_steps}")
    width = 2 * room_size - 1 if "open" in kinds else room_size
    if room_size > config.height or width > config.width:
        raise py_levels.LevelParamError(
            f"room_size={room_size} needs a {width}x{room_size} grid; StaticConfig has "
            f"{config.width}x{config.height}: use a larger StaticConfig or a smaller room_size")
    if num_dists + 3 > config.max_objects:
        raise py_levels.LevelParamError(f"num_dists={num_dists} needs max_objects >= {num_dists + 3}; "
                                        f"StaticConfig has {config.max_objects}")
    probs = np.zeros(len(KINDS), np.float32)
    probs[idx] = 1.0 / len(idx)
    return EnvParams(room_size=jnp.int32(room_size), num_dists=jnp.int32(num_dists), kind_probs=jnp.asarray(probs),
                     phrase_filter=jnp.int32(FILTERS.index(phrase_filter)), max_steps=jnp.int32(max_steps),
                     config=config)


def static_config(params: EnvParams, config: core.StaticConfig | None) -> core.StaticConfig:
    """The config to build with: ``params.config``; a different ``config`` is refused (the
    parameters were checked against theirs: a room may not fit another grid)."""
    if config is not None and config != params.config:
        raise py_levels.LevelParamError(
            f"these EnvParams were checked for {params.config}, not {config}: pass the same StaticConfig to "
            "make_params(config=...) (the functions then use the params' own)")
    return params.config


def _reachable(passable: jax.Array, start: jax.Array) -> jax.Array:
    """Cells reachable from ``start`` (x, y) moving through ``passable`` cells (a blocking cell is
    reached but not passed: ``check_objs_reachable``)."""
    H, W = passable.shape
    seen = jnp.zeros((H, W), bool).at[start[1], start[0]].set(True)

    def grow(c):
        seen, _ = c
        src = seen & passable
        pad = jnp.pad(src, 1)
        new = seen | pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:]
        return new, (new != seen).any()

    return jax.lax.while_loop(lambda c: c[1], grow, (seen, jnp.asarray(True)))[0]


def _pick(u: jax.Array, weights: jax.Array) -> jax.Array:
    """A uniform index among ``weights > 0`` from one uniform ``u`` in [0, 1): the k-th allowed
    index, k = floor(u * count) (0 when none is allowed)."""
    c = jnp.cumsum((weights > 0).astype(jnp.int32))
    k = jnp.minimum(jnp.floor(u * c[-1]).astype(jnp.int32), c[-1] - 1)
    return jnp.argmax(c > k).astype(jnp.int32)


class _Uniforms:
    """Slices of one uniform draw: a layout takes all its random numbers from a single
    ``jax.random.uniform`` call (each call is its own unrolled Threefry in the compiled program;
    one call instead of fourteen cuts the compile time)."""

    def __init__(self, key: jax.Array, sizes: dict[str, int]):
        self.offsets, off = {}, 0
        for name, n in sizes.items():
            self.offsets[name] = (off, n)
            off += n
        self.u = jax.random.uniform(key, (off,))

    def __call__(self, name: str, shape: tuple[int, ...] = ()) -> jax.Array:
        off, n = self.offsets[name]
        return self.u[off:off + n].reshape(shape)

    def int(self, name: str, lo, hi, shape: tuple[int, ...] = ()) -> jax.Array:
        """Uniform integers in [lo, hi)."""
        return jnp.minimum(lo + jnp.floor(self(name, shape) * (hi - lo)).astype(jnp.int32), hi - 1)


def _attempt(key: jax.Array, kind: jax.Array, params: EnvParams, config: core.StaticConfig
             ) -> tuple[core.EnvState, jax.Array]:
    H, W, M = config.height, config.width, config.max_objects
    C, HW = len(P.COLORS), H * W
    u = _Uniforms(key, {"door_y": 1, "locked_col": 1, "door_color": 1, "agent_x": 1, "agent_y": 1, "prio": HW,
                        "objects": M, "pair": 1, "dir": 1, "a": 1, "b": 1, "coin": 1, "named": 1})
    R = params.room_size
    is_open = kind == KINDS.index("open")
    two_objs = ~is_open & (kind != KINDS.index("goto")) & (kind != KINDS.index("pickup"))
    cols = jnp.where(is_open, 2, 1)
    gw, gh = (R - 1) * cols + 1, R
    ys, xs = jnp.meshgrid(jnp.arange(H), jnp.arange(W), indexing="ij")
    wall = ((xs >= gw - 1) | (ys >= gh - 1) | (xs == 0) | (ys == 0) | (is_open & (xs == R - 1)))
    cell = jnp.full((H, W), -1, jnp.int32)
    otype, ocolor = jnp.zeros(M, jnp.int32), jnp.zeros(M, jnp.int32)
    ostate = jnp.zeros(M, jnp.int32)

    # open: the locked door (slot 0) on the shared wall, its room, the key's colour
    filt = params.phrase_filter
    door_y = u.int("door_y", 1, R - 1)
    locked_col = u.int("locked_col", 0, 2)
    door_color = _pick(u("door_color"), jnp.asarray(DOOR_COLORS)[filt])
    wall = jnp.where(is_open & (xs == R - 1) & (ys == door_y), False, wall)
    cell = jnp.where(is_open & (xs == R - 1) & (ys == door_y), 0, cell)
    otype = otype.at[0].set(jnp.where(is_open, P.DOOR, 0))
    ocolor = ocolor.at[0].set(door_color)
    ostate = ostate.at[0].set(P.LOCKED)
    first_slot = jnp.where(is_open, 1, 0)

    # the room the objects go in, and the position they must keep away from
    room_x0 = jnp.where(is_open, (1 - locked_col) * (R - 1), 0)
    interior = (xs > room_x0) & (xs < room_x0 + R - 1) & (ys > 0) & (ys < R - 1)
    # single room: the agent comes first, on a uniform interior cell
    single_pos = jnp.stack([u.int("agent_x", 1, R - 1), u.int("agent_y", 1, R - 1)])
    centre = jnp.stack([(cols // 2) * (R - 1) + R // 2, R // 2])
    avoid = jnp.where(is_open, centre, single_pos)
    far = (jnp.abs(xs - avoid[0]) + jnp.abs(ys - avoid[1])) >= 2
    free = interior & far & ~wall & (cell < 0)
    n_objs = params.num_dists + jnp.where(two_objs, 2, 1)
    prio = jnp.where(free, u("prio", (H, W)), -1.0).reshape(-1)
    # the first M cells of a uniform random order of the free cells (top_k of iid uniform keys;
    # XLA's CPU top_k is ~3x cheaper than M argmax passes and ~8x cheaper than a full sort)
    order = jax.lax.top_k(prio, M)[1]
    enough = free.sum() >= n_objs
    kinds_colors = u.int("objects", 0, 3 * C, (M,))  # type and colour, independent and uniform
    types = jnp.asarray(_OBJ_TYPES)[kinds_colors // C]
    colors = kinds_colors % C
    slots = jnp.arange(M)
    placed = (slots >= first_slot) & (slots < first_slot + n_objs)
    key_slot = is_open & (slots == 1)  # open: the key to the door, first
    types = jnp.where(key_slot, P.KEY, types)
    colors = jnp.where(key_slot, door_color, colors)
    otype = jnp.where(placed, types, otype)
    ocolor = jnp.where(placed, colors, ocolor)
    ostate = jnp.where(placed, 0, ostate)
    where = order[jnp.clip(slots - first_slot, 0, M - 1)]
    flat = cell.reshape(-1).at[jnp.where(placed, where, H * W)].set(slots, mode="drop")
    cell = flat.reshape(H, W)

    # open: the agent after the objects, in the unlocked room, facing an empty cell or a wall
    # the cell in front for each direction (east, south, west, north) by shifting the grid (the
    # grid's border is walls, so the shifted-in edge is never read for an interior cell)
    ok = wall | (cell < 0)
    pad = jnp.pad(ok, 1, constant_values=True)
    front_ok = jnp.stack([pad[1:-1, 2:], pad[2:, 1:-1], pad[1:-1, :-2], pad[:-2, 1:-1]])  # [4, H, W]
    pairs = (interior & (cell < 0))[None] & front_ok
    pair = _pick(u("pair"), pairs.reshape(-1))
    open_dir, open_cell = pair // (H * W), pair % (H * W)
    agent_pos = jnp.where(is_open, jnp.stack([open_cell % W, open_cell // W]), single_pos).astype(jnp.int32)
    agent_dir = jnp.where(is_open, open_dir, u.int("dir", 0, 4)).astype(jnp.int32)
    placed_agent = jnp.where(is_open, pairs.any(), True)

    # every object reachable without moving another one (doors pass)
    reach = _reachable(~wall & ((cell < 0) | (otype[jnp.maximum(cell, 0)] == P.DOOR)), agent_pos)
    reachable = ~((cell >= 0) & ~reach).any()

    # the instruction
    movable = placed
    a = _pick(u("a"), movable)
    same_a = (otype == otype[a]) & (ocolor == ocolor[a]) & movable
    b_pool = jnp.where(same_a.sum() >= 2, movable, movable & ~same_a)
    b = _pick(u("b"), b_pool)
    coin = u("coin") < 0.5
    named = u("named") < jnp.asarray(NAME_OPEN_COLOR)[filt]
    k = {name: KINDS.index(name) for name in KINDS}
    # clause 0 / clause 1 as written in the mission; Before: "0, then 1"; After: "0 after you 1"
    seq_pick_goto = kind == k["pick up seq go to"]
    seq_pick_pick = kind == k["pick up seq pick up"]
    after = ((seq_pick_goto | seq_pick_pick) & coin) | (kind == k["go to after pick up"])
    is_seq = seq_pick_goto | seq_pick_pick | (kind == k["pick up then go to"]) | (kind == k["go to after pick up"])
    seq = jnp.where(is_seq, jnp.where(after, core.AFTER, core.BEFORE), core.SINGLE)
    second_kind = jnp.where(seq_pick_pick, core.PICKUP_I, core.GOTO)  # the clause on b
    single_kind = jnp.select([kind == k["goto"], kind == k["pickup"], is_open, kind == k["putnext"]],
                             [core.GOTO, core.PICKUP_I, core.OPEN_I, core.PUTNEXT], core.GOTO)
    # Before(Pickup a, X b); After(X b, Pickup a)
    c0_kind = jnp.where(is_seq, jnp.where(after, second_kind, core.PICKUP_I), single_kind)
    c1_kind = jnp.where(is_seq, jnp.where(after, core.PICKUP_I, second_kind), -1)
    c0_obj = jnp.where(is_seq & after, b, a)
    c1_obj = jnp.where(after, a, b)
    desc_obj = jnp.array([[0, 0], [0, 0]]).at[0, 0].set(c0_obj).at[0, 1].set(b).at[1, 0].set(c1_obj)
    d_type = otype[desc_obj]
    d_color = ocolor[desc_obj]
    d_type = d_type.at[0, 0].set(jnp.where(is_open, P.DOOR, d_type[0, 0]))
    d_color = d_color.at[0, 0].set(jnp.where(is_open, jnp.where(named, door_color, -1), d_color[0, 0]))
    used = jnp.array([[True, False], [False, False]]).at[0, 1].set(kind == k["putnext"]).at[1, 0].set(is_seq)
    match = ((otype[None, None, :] == d_type[..., None]) & ((d_color[..., None] < 0)
             | (ocolor[None, None, :] == d_color[..., None])) & (otype[None, None, :] > 0) & used[..., None])
    d_the = match.sum(-1) == 1
    excluded = jnp.asarray(EXCLUDED)[filt][jnp.maximum(d_color, 0), d_type] & (d_color >= 0) & used
    pos, on = core.object_positions(cell, M)
    # PutNext: distinct descriptions, no moved object already next to a fixed one
    adj = (jnp.abs(pos[:, None, :] - pos[None, :, :]).sum(-1) == 1) & on[:, None] & on[None, :]
    put_bad = (kind == k["putnext"]) & (((match[0, 0] & match[0, 1]).any())
                                        | (match[0, 0][:, None] & match[0, 1][None, :] & adj).any())
    valid = enough & placed_agent & reachable & ~excluded.any() & ~put_bad

    navs = jnp.where(two_objs, 2, 1)
    max_steps = jnp.where(params.max_steps > 0, params.max_steps, navs * R * R * cols)
    instr = core.Instr(seq=seq.astype(jnp.int32), sub_kind=jnp.stack([c0_kind, c1_kind]).astype(jnp.int32),
                       desc_type=d_type.astype(jnp.int32), desc_color=d_color.astype(jnp.int32),
                       desc_loc=jnp.full((2, 2), -1, jnp.int32), desc_the=d_the, desc_set=match)
    state = core.EnvState(
        wall=wall, cell=cell, obj_type=otype, obj_color=ocolor, obj_state=ostate, agent_pos=agent_pos,
        agent_dir=agent_dir, carry=jnp.int32(-1), step_count=jnp.int32(0), max_steps=max_steps.astype(jnp.int32),
        instr=instr, sub_done=jnp.zeros(2, bool), pre_carry=jnp.full(2, -1, jnp.int32),
        poss=jnp.broadcast_to(pos, (2, 2, M, 2)), poss_valid=match & on, mission=core.mission_pieces(
            instr, config.mission_pieces), kind=kind)
    return state, valid


def _tries(keys: jax.Array, kinds: jax.Array, params: EnvParams, config: core.StaticConfig
           ) -> tuple[core.EnvState, jax.Array, jax.Array]:
    """K layouts per env (``keys[m, K]``, ``kinds[m]``); each env keeps its first valid one
    (the same law as drawing them one after another): ``(states[m], ok[m], draws[m])``."""
    m, K = keys.shape[:2]
    att = jax.vmap(jax.vmap(_attempt, (0, None, None, None)), (0, 0, None, None))
    states, ok = att(keys, kinds, params, config)
    first = jnp.argmax(ok, axis=1)
    chosen = jax.tree.map(lambda x: x[jnp.arange(m), first], states)
    return chosen, ok.any(axis=1), jnp.where(ok.any(axis=1), first + 1, K)


def generate_batch(key: jax.Array, params: EnvParams, n: int, config: core.StaticConfig | None = None,
                   candidates: int = 4, retry_candidates: int = 16) -> tuple[core.EnvState, jax.Array]:
    """``n`` new episodes at once: ``(states[n], attempts[n])``, each with the law of
    ``generate``. Every env draws ``candidates`` layouts in parallel and keeps its first valid
    one; those that drew none are redrawn, up to ``n // 8`` envs at a time with
    ``retry_candidates`` layouts each, in a loop over the batch (not a ``vmap``-ed loop, in which
    every env would wait for the unluckiest) until each has a layout or ``MAX_ATTEMPTS`` draws.
    ``n`` must be an int >= 1 (``LevelParamError``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise py_levels.LevelParamError(f"the number of envs must be an int >= 1, got {n!r}")
    config = static_config(params, config)
    k_kind, k_first, k_more = jax.random.split(key, 3)
    kinds = jax.random.categorical(k_kind, jnp.log(params.kind_probs), shape=(n,)).astype(jnp.int32)
    states, ok, draws = _tries(jax.random.split(k_first, (n, candidates)), kinds, params, config)
    R, K = max(1, n // 8), retry_candidates

    def pending(ok, draws):
        return ~ok & (draws < MAX_ATTEMPTS)

    def body(c):
        key, states, ok, draws = c
        key, sub = jax.random.split(key)
        idx = jnp.nonzero(pending(ok, draws), size=R, fill_value=n)[0]
        real = idx < n
        new, new_ok, new_draws = _tries(jax.random.split(sub, (R, K)), kinds[jnp.minimum(idx, n - 1)], params, config)
        take = jnp.where(real & new_ok, idx, n)
        states = jax.tree.map(lambda s, x: s.at[take].set(x, mode="drop"), states, new)
        draws = draws.at[jnp.where(real, idx, n)].add(new_draws, mode="drop")
        return key, states, ok.at[take].set(True, mode="drop"), draws

    _, states, ok, draws = jax.lax.while_loop(lambda c: pending(c[2], c[3]).any(), body, (k_more, states, ok, draws))
    return states, jnp.where(ok, draws, MAX_ATTEMPTS + 1)


def generate(key: jax.Array, params: EnvParams, config: core.StaticConfig | None = None
             ) -> tuple[core.EnvState, jax.Array]:
    """A new episode's state by rejection sampling (see module doc): ``(state, attempts)``;
    ``attempts > MAX_ATTEMPTS`` means no valid layout was found (the last draw is returned).

    The task kind is drawn once, before the layouts (as a Mixed level keeps its kind while it
    resamples), so rejection does not bias the kind mixture."""
    config = static_config(params, config)
    key, k_kind, sub = jax.random.split(key, 3)
    kind = jax.random.categorical(k_kind, jnp.log(params.kind_probs)).astype(jnp.int32)

    def body(c):
        key, _, n, _ = c
        key, sub = jax.random.split(key)
        state, ok = _attempt(sub, kind, params, config)
        return key, state, n + 1, ok

    state, ok = _attempt(sub, kind, params, config)
    _, state, n, ok = jax.lax.while_loop(lambda c: ~c[3] & (c[2] <= MAX_ATTEMPTS), body, (key, state, jnp.int32(1), ok))
    return state, jnp.where(ok, n, MAX_ATTEMPTS + 1)
