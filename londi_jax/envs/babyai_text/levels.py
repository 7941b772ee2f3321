"""BabyAI levels for BabyAI-Text: minigrid's registered ones plus GLAM's Mixed and sequence levels.

GLAM (``babyai-text/babyai_text/levels``) adds levels that minigrid 3.2.0 does not ship. They
are rebuilt here on ``minigrid.envs.babyai.core.levelgen.LevelGen`` following the original's
construction (room layout, distractor counts, per-kind rejection sampling, excluded colour-noun
phrases, locked-door colours). Differences from the original, on purpose:

* **Task kind**: the original ``Level_MixedTrainLocal.__init__`` draws the kind once per
  instance from an *unseeded* RNG, so ``seed`` never controls it. Here the kind is a
  constructor argument (``kind=``); when omitted it is drawn once per instance from
  ``numpy.random.default_rng(kind_seed)`` (``make_babyai_text`` passes its ``seed``), so the
  same seed gives the same kind. The instance keeps its kind for life, as in the original
  (the grid width depends on it: two rooms for ``open``).
* **Grid regeneration**: the fork's ``_regen_grid`` clears the grid in place; here
  ``RoomGrid._gen_grid`` rebuilds it, which draws the same random numbers (door positions).
* **add_locked_room**: minigrid's has no colour argument; ``_add_locked_room`` re-implements
  the fork's colour-aware version.
* **PickUpSeqPickUpLocal**: GLAM's result files name it but the public code has no
  definition. It is reconstructed as the sequence levels are built, with two Pickups
  (``pick up A, then pick up B`` / ``pick up B after you pick up A``, 50/50).
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from minigrid.core.roomgrid import RoomGrid
from minigrid.envs.babyai.core.levelgen import LevelGen
from minigrid.envs.babyai.core.verifier import (
    ActionInstr,
    AfterInstr,
    AndInstr,
    BeforeInstr,
    GoToInstr,
    ObjDesc,
    OpenInstr,
    PickupInstr,
    PutNextInstr,
)

from londi_jax.utils.errors import LondiError, UnknownNameError

# Task kinds, named as in the original's ``action_kinds``.
GOTO, PICKUP, OPEN, PUTNEXT, PICKUP_SEQ_GOTO = "goto", "pickup", "open", "putnext", "pick up seq go to"
PICKUP_THEN_GOTO, GOTO_AFTER_PICKUP = "pick up then go to", "go to after pick up"
PICKUP_SEQ_PICKUP = "pick up seq pick up"
MIXED_KINDS: tuple[str, ...] = (GOTO, PICKUP, OPEN, PUTNEXT, PICKUP_SEQ_GOTO)  # original order
GLAM_KINDS: tuple[str, ...] = (*MIXED_KINDS, PICKUP_THEN_GOTO, GOTO_AFTER_PICKUP, PICKUP_SEQ_PICKUP)

# Held-out colour-noun pairs: train levels reject them, MixedTestLocal rejects every other pair.
TRAIN_EXCLUDED: tuple[str, ...] = ("yellow box", "red key", "red door", "green ball", "grey door")
TEST_EXCLUDED: tuple[str, ...] = (
    "yellow key", "yellow ball", "yellow door",
    "red box", "red ball",
    "green box", "green key", "green door",
    "grey box", "grey key", "grey ball",
    "blue box", "blue key", "blue ball", "blue door",
    "purple box", "purple key", "purple ball", "purple door",
)  # fmt: skip
TRAIN_DOOR_COLORS = ("yellow", "green", "blue", "purple")  # red and grey held out
TEST_DOOR_COLORS = ("red", "grey")


MAX_GEN_ATTEMPTS = 3000  # layouts drawn per reset before giving up (see GlamLevel.gen_mission)


class LevelParamError(LondiError, ValueError):
    """A level parameter (room size, distractor count, step limit, seed, ...) that is out of
    range or unknown to the level; the message names it and the accepted values."""


def _glam_objects(kind: str, num_dists: int) -> int:
    """Objects placed in the agent's room by ``GlamLevel._gen_one`` for ``kind``."""
    if kind == OPEN:
        return num_dists + 1  # distractors + the key (the locked room stays empty)
    return num_dists + (1 if kind in (GOTO, PICKUP) else 2)


def check_level_params(name: str, params: dict, kinds: tuple[str, ...] = ()) -> None:
    """Raise ``LevelParamError`` for a level parameter that cannot build a level.

    Ranges (minigrid's own limits, which it only asserts): ``room_size`` an int >= 3 (walls
    around at least one free cell), ``num_dists`` an int >= 0, ``max_steps`` None or an int
    >= 1, ``num_rows`` / ``num_cols`` ints >= 1, ``kind_seed`` None or an int >= 0. For the GLAM
    levels (``kinds``: the task kinds the level may draw) the objects must also fit the room:
    minigrid never places an object on or next to the agent (``reject_next_to``), so a room with
    ``k = room_size - 2`` free cells per side holds at most ``k * k - 3`` objects (agent in a
    corner); with more, level generation would retry forever.
    """
    rules = {"room_size": 3, "num_dists": 0, "max_steps": 1, "num_rows": 1, "num_cols": 1, "kind_seed": 0}
    for key, lo in rules.items():
        if key not in params or (params[key] is None and key in ("max_steps", "kind_seed")):
            continue
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            extra = " or None" if key in ("max_steps", "kind_seed") else ""
            raise LevelParamError(f"{name}: {key} must be an int >= {lo}{extra}, got {v!r}")
    if kinds:
        k = int(params.get("room_size", 8)) - 2
        n_d = int(params.get("num_dists", 8))
        for kind in kinds:
            objs = _glam_objects(kind, n_d)
            room = k * k if kind == OPEN else k * k - 3  # open places the agent after the objects
            if objs > room:
                need = next(r for r in range(k + 2, 10 ** 4)
                            if _glam_objects(kind, n_d) <= ((r - 2) ** 2 if kind == OPEN else (r - 2) ** 2 - 3))
                raise LevelParamError(
                    f"{name}: a room_size={k + 2} room cannot hold the {objs} objects of a {kind!r} task "
                    f"with num_dists={n_d} (at most {max(room, 0)} fit); use room_size >= {need} or fewer num_dists")


class LevelGenerationError(LondiError, RuntimeError):
    """Level generation gave up: no valid layout in ``MAX_GEN_ATTEMPTS`` draws."""


class GlamLevel(LevelGen):
    """One GLAM BabyAI-Text level of a fixed task kind (see module doc).

    kind: one of ``GLAM_KINDS``.
    excluded: mission substrings that make the generator resample (the phrase filter).
    door_colors: colours of the locked door for ``open``.
    name_open_color: ``"half"`` (train: the door colour is named with probability 1/2)
        or ``"always"`` (test).
    """

    def __init__(
        self,
        kind: str,
        excluded: tuple[str, ...] = TRAIN_EXCLUDED,
        door_colors: tuple[str, ...] = TRAIN_DOOR_COLORS,
        name_open_color: str = "half",
        room_size: int = 8,
        num_dists: int = 8,
        max_steps: int | None = None,
        **kwargs,
    ):
        if kind not in GLAM_KINDS:
            raise UnknownNameError("task kind", kind, GLAM_KINDS)
        check_level_params(type(self).__name__, dict(room_size=room_size, num_dists=num_dists,
                                                     max_steps=max_steps), (kind,))
        self.kind = kind
        self._gen_attempts = 0
        self.excluded = tuple(excluded)
        self.door_colors = tuple(door_colors)
        self.name_open_color = name_open_color
        super().__init__(
            room_size=room_size,
            num_rows=1,
            num_cols=2 if kind == OPEN else 1,
            num_dists=num_dists,
            action_kinds=[kind],
            instr_kinds=["action", "seq1"],
            locations=False,
            unblocking=False,
            implicit_unlock=False,
            max_steps=max_steps,
            **kwargs,
        )

    # -- construction -------------------------------------------------------------------
    def _regen_grid(self) -> None:
        RoomGrid._gen_grid(self, self.width, self.height)

    def _add_locked_room(self, color: str) -> None:
        """minigrid's ``add_locked_room`` with the door colour chosen by the caller."""
        while True:
            i, j = self._rand_int(0, self.num_cols), self._rand_int(0, self.num_rows)
            door_idx = self._rand_int(0, 4)
            self.locked_room = self.get_room(i, j)
            if self.locked_room.neighbors[door_idx] is None:  # no locked door in an outer wall
                continue
            door, _ = self.add_door(i, j, door_idx, color=color, locked=True)
            break
        while True:  # the key goes in any other room
            i, j = self._rand_int(0, self.num_cols), self._rand_int(0, self.num_rows)
            if self.get_room(i, j) is self.locked_room:
                continue
            self.add_object(i, j, "key", door.color)
            break

    def _mission_excluded(self) -> bool:
        surface = self.instrs.surface(self)
        return any(s in surface for s in self.excluded)

    def _distinct_second(self, objs, first):
        """Draw the second object; it must differ from ``first``'s description unless that
        description matches at least two objects (the original's rule)."""
        second = self._rand_elem(objs)
        if (first.type, first.color) == (second.type, second.color):
            matches, _ = ObjDesc(first.type, first.color).find_matching_objs(self)
            if len(matches) < 2:
                while (first.type, first.color) == (second.type, second.color):
                    second = self._rand_elem(objs)
        return second

    def _gen_open(self):
        self._regen_grid()
        color = self._rand_elem(list(self.door_colors))
        self._add_locked_room(color)
        self.connect_all()
        for j in range(self.num_rows):
            for i in range(self.num_cols):
                if self.get_room(i, j) is not self.locked_room:
                    self.add_distractors(i, j, num_distractors=self.num_dists, all_unique=False)
        while True:  # objects first, then the agent, never in the locked room
            self.place_agent()
            if self.room_from_pos(*self.agent_pos) is not self.locked_room:
                break
        reachable = self.check_objs_reachable(raise_exc=False)
        named = self._rand_elem([None, color]) if self.name_open_color == "half" else color
        return OpenInstr(ObjDesc("door", named)), reachable

    def _gen_single_room(self, n_objs: int):
        self._regen_grid()
        self.place_agent()
        objs = self.add_distractors(num_distractors=n_objs, all_unique=False)
        return objs, self.check_objs_reachable(raise_exc=False)

    def _gen_one(self):
        kind = self.kind
        if kind == OPEN:
            return self._gen_open()
        if kind in (GOTO, PICKUP):
            objs, reachable = self._gen_single_room(self.num_dists + 1)
            obj = self._rand_elem(objs)
            cls = GoToInstr if kind == GOTO else PickupInstr
            return cls(ObjDesc(obj.type, obj.color)), reachable
        # Two-object kinds: 10 objects in one room.
        objs, reachable = self._gen_single_room(self.num_dists + 2)
        a = self._rand_elem(objs)
        b = self._distinct_second(objs, a)
        da, db = ObjDesc(a.type, a.color), ObjDesc(b.type, b.color)
        if kind == PUTNEXT:
            return PutNextInstr(da, db), reachable
        second = PickupInstr(db) if kind == PICKUP_SEQ_PICKUP else GoToInstr(db)
        if kind in (PICKUP_SEQ_GOTO, PICKUP_SEQ_PICKUP):
            order = self._rand_elem(["Before", "After"])
        else:
            order = "Before" if kind == PICKUP_THEN_GOTO else "After"
        if order == "Before":
            return BeforeInstr(PickupInstr(da), second), reachable
        return AfterInstr(second, PickupInstr(da)), reachable

    def reset(self, *args, **kwargs):
        self._gen_attempts = 0  # layouts drawn for this episode (gen_mission's bound)
        return super().reset(*args, **kwargs)

    def gen_mission(self) -> None:
        """Resample layout + instruction until all objects are reachable and the mission
        contains no excluded phrase (the original's per-kind ``while`` loops).

        Bounded: after ``MAX_GEN_ATTEMPTS`` draws in one reset (counting the ones minigrid
        retries after a failed object placement) it raises ``LevelGenerationError`` instead of
        looping forever on a room too crowded to generate. Valid settings need far fewer (the
        hardest measured, MixedTestLocal putnext, 93 on average; the chance of needing 3000 is
        about e^-32).
        """
        self.locked_room = None
        while True:
            self._gen_attempts += 1
            if self._gen_attempts > MAX_GEN_ATTEMPTS:
                raise LevelGenerationError(
                    f"could not generate a {self.kind!r} level with room_size={self.room_size}, "
                    f"num_dists={self.num_dists} in {MAX_GEN_ATTEMPTS} attempts: the room is too crowded "
                    "for all objects to be placed and reachable; use a larger room_size or fewer num_dists")
            self.instrs, reachable = self._gen_one()
            if reachable and not self._mission_excluded():
                return


def _kind_from_seed(kind: str | None, kind_seed: int | np.random.Generator | None, kinds: tuple[str, ...]) -> str:
    """``kind`` if given, else one draw from ``default_rng(kind_seed)`` (a Generator is used as is)."""
    if kind is not None:
        return kind
    # Seeded replacement for the original's unseeded per-instance draw.
    return kinds[int(np.random.default_rng(kind_seed).integers(len(kinds)))]


class MixedTrainLocal(GlamLevel):
    """GLAM's training level: one of the five Mixed kinds, held-out phrases rejected."""

    def __init__(self, kind: str | None = None, kind_seed: int | None = None, **kwargs):
        if kind is None:  # any Mixed kind may be drawn: every one must fit the room
            check_level_params(type(self).__name__, kwargs, MIXED_KINDS)
        kind = _kind_from_seed(kind, kind_seed, MIXED_KINDS)
        if kind not in MIXED_KINDS:
            raise UnknownNameError("Mixed task kind", kind, MIXED_KINDS)
        super().__init__(kind, TRAIN_EXCLUDED, TRAIN_DOOR_COLORS, "half", **kwargs)


class MixedTestLocal(GlamLevel):
    """GLAM's test level: the five Mixed kinds, only held-out colour-noun pairs, red/grey doors."""

    def __init__(self, kind: str | None = None, kind_seed: int | None = None, **kwargs):
        if kind is None:  # any Mixed kind may be drawn: every one must fit the room
            check_level_params(type(self).__name__, kwargs, MIXED_KINDS)
        kind = _kind_from_seed(kind, kind_seed, MIXED_KINDS)
        if kind not in MIXED_KINDS:
            raise UnknownNameError("Mixed task kind", kind, MIXED_KINDS)
        super().__init__(kind, TEST_EXCLUDED, TEST_DOOR_COLORS, "always", **kwargs)


def _fixed_kind_level(kind: str):
    """Factory for the sequence levels (train phrase filter, one 8x8 room, 10 objects)."""

    def make(**kwargs) -> GlamLevel:
        kwargs.pop("kind_seed", None)
        return GlamLevel(kind, TRAIN_EXCLUDED, TRAIN_DOOR_COLORS, "half", **kwargs)

    return make


GLAM_LEVELS: dict[str, object] = {
    "BabyAI-MixedTrainLocal-v0": MixedTrainLocal,
    "BabyAI-MixedTestLocal-v0": MixedTestLocal,
    "BabyAI-PickUpSeqGoToLocal-v0": _fixed_kind_level(PICKUP_SEQ_GOTO),
    "BabyAI-PickUpThenGoToLocal-v0": _fixed_kind_level(PICKUP_THEN_GOTO),
    "BabyAI-GoToAfterPickUpLocal-v0": _fixed_kind_level(GOTO_AFTER_PICKUP),
    "BabyAI-PickUpSeqPickUpLocal-v0": _fixed_kind_level(PICKUP_SEQ_PICKUP),
}
MIXED_LEVELS = ("BabyAI-MixedTrainLocal-v0", "BabyAI-MixedTestLocal-v0")

# The single-room ("local") levels minigrid registers, used by the experiments.
LOCAL_LEVELS: tuple[str, ...] = (
    "BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0", "BabyAI-PutNextLocal-v0", "BabyAI-OpenDoor-v0",
    "BabyAI-Open-v0", "BabyAI-UnlockLocal-v0",
)  # fmt: skip


class SeededMixedLevel(gym.Wrapper):
    """A Mixed level for Gymnasium whose task kind follows ``reset(seed=...)``.

    ``gym.make`` builds an env before any seed is known, so a kind drawn at construction (as the
    original does, unseeded) makes ``reset(seed=s)`` differ between processes. Here every
    ``reset(seed=s)`` draws the kind from ``s`` exactly as ``make_babyai_text(level, seed=s)``
    does (so both give the same episode) and rebuilds the level when the kind changes (the grid
    width depends on it). An unseeded ``reset()`` draws the next kind from a generator seeded by
    the last seeded reset, so a whole seeded run is reproducible. ``kind=`` fixes the kind.
    """

    def __init__(self, level_cls: type, **kwargs):
        self._cls, self._kwargs = level_cls, dict(kwargs)
        self._kwargs.pop("kind_seed", None)
        if self._kwargs.get("kind") is None:
            self._kwargs.pop("kind", None)
        self._kind_rng = np.random.default_rng()
        super().__init__(level_cls(**self._kwargs))

    def reset(self, *, seed: int | None = None, options=None):
        if self._kwargs.get("kind") is not None:
            return self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._kind_rng = np.random.default_rng(seed)
        kind = _kind_from_seed(None, self._kind_rng, MIXED_KINDS)
        if kind != self.env.unwrapped.kind:
            self.env.close()
            self.env = self._cls(kind=kind, **self._kwargs)
            if seed is None:  # a fresh level has an unseeded generator: seed it from the run's
                seed = int(self._kind_rng.integers(2**31 - 1))
        return self.env.reset(seed=seed, options=options)


def _gym_entry(name: str):
    factory = GLAM_LEVELS[name]
    if name in MIXED_LEVELS:
        return functools.partial(SeededMixedLevel, factory)
    return factory


def register_gym_levels() -> None:
    """Register the GLAM levels with Gymnasium (``gym.make("BabyAI-MixedTrainLocal-v0")``).

    The Mixed levels are wrapped in :class:`SeededMixedLevel`: ``reset(seed=s)`` alone fixes the
    episode (kind, layout, mission) in every process.
    """
    for name in GLAM_LEVELS:
        if name not in gym.registry:
            gym.register(id=name, entry_point=_gym_entry(name))


@functools.cache
def minigrid_levels() -> tuple[str, ...]:
    """Every ``BabyAI-*`` level that minigrid registers with Gymnasium."""
    import minigrid  # noqa: F401  (registers the envs)

    return tuple(k for k in gym.registry if k.startswith("BabyAI-") and k not in GLAM_LEVELS)


def known_levels() -> tuple[str, ...]:
    """All level names ``make_babyai_text`` accepts (GLAM levels first)."""
    return (*GLAM_LEVELS, *minigrid_levels())


def resolve_level(level: str) -> str:
    """Canonical id of a level; accepts ``GoToLocal`` for ``BabyAI-GoToLocal-v0``."""
    known = known_levels()
    if level in known:
        return level
    guess = level if level.startswith("BabyAI-") else f"BabyAI-{level}"
    if not guess.rsplit("-", 1)[-1].startswith("v"):
        guess += "-v0"
    if guess in known:
        return guess
    raise UnknownNameError("level", level, known, hint="see `londi-jax env levels`")


def make_level(level: str, seed: int | None = None, **kwargs):
    """Build the raw minigrid env (no wrappers) for a level name; GLAM levels get ``kind_seed``.

    Raises ``UnknownNameError`` (level, kind) and ``LevelParamError`` for a parameter out of
    range (see ``check_level_params``), a negative seed, or one the level does not take.
    """
    name = resolve_level(level)
    if "kind" in kwargs and name not in MIXED_LEVELS:
        raise LondiError(f"kind= only applies to the Mixed levels ({', '.join(MIXED_LEVELS)}), not {name}")
    check_level_params(name, {"kind_seed": seed, **kwargs})
    try:
        if name in GLAM_LEVELS:
            if name in MIXED_LEVELS:
                kwargs.setdefault("kind_seed", seed)
            return GLAM_LEVELS[name](**kwargs)
        spec = gym.spec(name)
        creator = gym.envs.registration.load_env_creator(spec.entry_point)
        env = creator(**{**spec.kwargs, **kwargs})
    except TypeError as err:  # a keyword the level's constructor does not take, or sets itself
        msg = str(err)
        if "unexpected keyword argument" in msg:
            raise LevelParamError(f"{name} does not take that parameter ({msg}); "
                                  "BabyAI levels take e.g. room_size, num_dists, max_steps") from None
        if "multiple values for keyword argument" in msg:
            raise LevelParamError(f"{name} sets that parameter itself ({msg}); drop it") from None
        raise
    # minigrid's levels: the distractors must fit their rooms (same rule as check_level_params)
    k, n_d = getattr(env, "room_size", 3) - 2, getattr(env, "num_dists", 0)
    rooms = getattr(env, "num_rows", 1) * getattr(env, "num_cols", 1)
    if isinstance(n_d, int) and n_d > rooms * max(k * k - 3, 0):
        raise LevelParamError(f"{name}: {rooms} room(s) of room_size={k + 2} cannot hold num_dists={n_d} "
                              f"objects (at most {rooms * max(k * k - 3, 0)} fit); use a larger room_size or "
                              "fewer num_dists")
    return env


def instr_kind(instr) -> str:
    """Task kind of a BabyAI instruction, in the original's vocabulary when it has a name."""
    if isinstance(instr, GoToInstr):
        return GOTO
    if isinstance(instr, PickupInstr):
        return PICKUP
    if isinstance(instr, OpenInstr):
        return OPEN
    if isinstance(instr, PutNextInstr):
        return PUTNEXT
    if isinstance(instr, (BeforeInstr, AfterInstr)):
        first, then = (instr.instr_a, instr.instr_b) if isinstance(instr, BeforeInstr) else (instr.instr_b, instr.instr_a)
        if isinstance(first, PickupInstr) and isinstance(then, GoToInstr):
            return PICKUP_SEQ_GOTO
        if isinstance(first, PickupInstr) and isinstance(then, PickupInstr):
            return PICKUP_SEQ_PICKUP
        return "seq"
    if isinstance(instr, AndInstr):
        return "and"
    if isinstance(instr, ActionInstr):
        return type(instr).__name__.removesuffix("Instr").lower()
    return "other"
