"""``ScienceWorldTextEnv``: one ScienceWorld task as a ``TextEnv`` (semantics in the package docstring)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from py4j.protocol import Py4JError, Py4JJavaError

from londi_jax.envs.base import TextReset, TextStep
from londi_jax.envs.scienceworld.jvm import _Simulator
from londi_jax.envs.scienceworld.tasks import (
    SPLITS,
    ScienceWorldError,
    SimulatorDiedError,
    _check_simplifications,
    resolve_task,
)
from londi_jax.utils.errors import UnknownNameError
from londi_jax.utils.text import nearest_action

_AMBIGUOUS = "Ambiguous request"

class ScienceWorldTextEnv:
    """One ScienceWorld task as a ``TextEnv`` (see the module docstring for the semantics).

    task: id ("1-1"), name ("boil") or alphabetical index. variation: fixed variation index
    (must lie in ``split``), or None to let ``reset(seed)`` choose within ``split``.
    simplifications: comma-separated (``SIMPLIFICATIONS``); "easy" is SwiftSage's setting.
    step_limit: ``step`` calls per episode before truncation. call_timeout: seconds any single
    simulator call may take before the JVM counts as hung. gold_path: let the simulator also
    compute the gold action sequence on reset (``gold_actions()``).
    with_look_inventory: add ``info['look']`` and ``info['inventory']`` to every step (< 1 ms).
    """

    # a step waits on this env's own JVMs (socket calls, GIL released): the rollout loop may step
    # several envs from threads at once (``agents.rollout.run_episodes``' ``parallel``)
    parallel_steps = True

    def __init__(
        self,
        task: str | int,
        variation: int | None = None,
        split: str = "train",
        simplifications: str | Sequence[str] = "easy",
        step_limit: int = 100,
        call_timeout: float = 60.0,
        gold_path: bool = False,
        with_look_inventory: bool = False,
        java_opts: Sequence[str] = (),
    ):
        self.task = resolve_task(task)
        if split not in SPLITS:
            raise UnknownNameError("split", str(split), SPLITS)
        self.split = split
        self.simplifications = _check_simplifications(simplifications, self.task)
        if isinstance(step_limit, bool) or not isinstance(step_limit, int) or step_limit < 1:
            raise ScienceWorldError(f"step_limit must be a positive int, got {step_limit!r}")
        self.step_limit = step_limit
        self.call_timeout = float(call_timeout)
        self.gold_path = bool(gold_path)
        self.with_look_inventory = bool(with_look_inventory)
        self._java_opts = tuple(java_opts)
        self._sim: _Simulator | None = None
        self._sim = _Simulator(self.call_timeout, self._java_opts)
        self.jvm_starts = 1
        self.variation: int | None = None  # of the current episode
        try:
            self.variations = self._split_variations()
            self.fixed_variation = None if variation is None else self.check_variation(variation)
        except BaseException:
            self.close()  # do not leave the JVM to the garbage collector
            raise
        self._cursor = -1  # position in self.variations for reset() without a seed
        self._done = True
        self._score = 0
        self._steps = 0
        self._history: list[str] = []  # actions of the current episode (replayed by ``branch``)
        self._shadow: ScienceWorldTextEnv | None = None  # the JVM ``branch`` replays in (lazy)
        self._gold: list[str] | None = None  # the episode's gold path (reset with gold_path=True)
        self._gold_at: int | None = None  # next gold action while the episode follows the path, else None
        self._valid_now: frozenset[str] | None = None  # valid actions of the current state, where listed

    def set_task(self, task: str | int) -> None:
        """Switch this env (and its JVM) to another task; the split, simplifications and step
        limit stay, a fixed variation is dropped. Call ``reset`` next."""
        info = resolve_task(task)
        _check_simplifications(self.simplifications, info)
        if info == self.task:
            return
        self.task, self.fixed_variation, self.variation, self._cursor, self._done = info, None, None, -1, True
        self.variations = self._split_variations()

    # -- helpers -------------------------------------------------------------------------------
    def _split_variations(self) -> list[int]:
        out = self.variations_of(self.task.id, self.split)
        self.max_variations = int(self._sim.get_max_variations(self.task.name))  # all splits together
        return out

    def variations_of(self, task: str | int, split: str) -> list[int]:
        """The variation indices of any ``task`` in ``split`` (sorted), asked of this env's JVM.
        It loads that task, so an episode in progress ends: call ``reset`` before stepping again."""
        info = resolve_task(task)
        if split not in SPLITS:
            raise UnknownNameError("split", str(split), SPLITS)
        sim = self._sim
        if sim is None:
            raise ScienceWorldError("this ScienceWorld env is closed; create a new one")
        self._done = True
        with sim.slow_calls():
            sim.load(info.name, 0, "", False)
        getter = {"train": sim.get_variations_train, "dev": sim.get_variations_dev, "test": sim.get_variations_test}
        return sorted(int(v) for v in getter[split]())

    def split_range(self) -> tuple[int, int]:
        """First and last variation index of this env's split (splits are contiguous)."""
        return self.variations[0], self.variations[-1]

    def check_variation(self, variation: int) -> int:
        """``variation`` if it lies in this env's split, else a ScienceWorldError naming the range."""
        if isinstance(variation, bool) or not isinstance(variation, numbers.Integral) or variation not in self.variations:
            lo, hi = self.split_range()
            raise ScienceWorldError(
                f"variation {variation!r} is not in the {self.split} split of task {self.task.id} ({self.task.name}): "
                f"use {lo}..{hi}, or the split that holds it (the task has {self.max_variations} variations, "
                f"0..{self.max_variations - 1}, split into train/dev/test)"
            )
        return int(variation)

    @property
    def jvm_pid(self) -> int | None:
        """PID of the simulator JVM (None after close)."""
        return None if self._sim is None else self._sim.pid

    def _restart(self) -> None:
        if self._sim is not None:
            self._sim.close()
        self._sim = None
        self._sim = _Simulator(self.call_timeout, self._java_opts)
        self.jvm_starts += 1

    def _valid(self) -> list[str]:
        # The plain list is about 3x cheaper than the JSON-with-templates call once the JIT is warm.
        # Sorted and de-duplicated: the simulator's order follows hash sets.
        return sorted(set(self._sim.get_valid_action_object_combinations()))

    def _extras(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.with_look_inventory:
            info["look"] = self._sim.look()
            info["inventory"] = self._sim.inventory()
        return info

    def _base_info(self) -> dict[str, Any]:
        return {"task": self.task.id, "task_name": self.task.name, "variation": self.variation, "split": self.split,
                "simplifications": self.simplifications}

    # -- TextEnv ---------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, *, with_valid: bool = True, variation: int | None = None,
              gold_path: bool | None = None) -> TextReset:
        """Start an episode (variation choice: see the module docstring; ``variation=`` overrides).

        ``with_valid=False`` skips listing the valid actions (``valid_actions`` is then empty and
        ``info['valid_actions_skipped']`` is True). ``gold_path`` overrides the constructor's
        choice for this episode (generating it takes seconds)."""
        if self._sim is None:
            raise ScienceWorldError("this ScienceWorld env is closed; create a new one")
        if variation is not None:
            var = self.check_variation(variation)
        elif self.fixed_variation is not None:
            var = self.fixed_variation
        else:
            if seed is not None:
                if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
                    raise ScienceWorldError(f"seed must be a non-negative int, got {seed!r}")
                self._cursor = int(seed) % len(self.variations)
            else:
                self._cursor = (self._cursor + 1) % len(self.variations)
            var = self.variations[self._cursor]
        for attempt in range(2):
            try:
                return self._reset(var, with_valid, self.gold_path if gold_path is None else bool(gold_path))
            except Py4JJavaError as err:
                raise ScienceWorldError(f"ScienceWorld could not load task {self.task.id} variation {var}: {err.java_exception}") from err
            except Py4JError as err:  # JVM died or hung: one fresh JVM, then give up
                if attempt == 1:
                    raise SimulatorDiedError(f"the ScienceWorld JVM failed twice while resetting: {err}") from err
                self._restart()
        raise AssertionError("unreachable")

    def _reset(self, var: int, with_valid: bool, gold: bool) -> TextReset:
        sim = self._sim
        # task and simplifications were validated in __init__: skip the package's per-load checks
        with sim.slow_calls():
            sim.server.load(self.task.name, var, self.simplifications, gold)
        sim.goldPathGenerated = gold
        sim.server.reset()
        self.variation = var
        obs = sim.server.step("look around")  # what the package's reset does; not a move
        self._score = int(round(100 * sim.server.getScore()))
        self._steps = 0
        self._history = []
        self._done = False
        self._gold = [str(a) for a in sim.server.getGoldActionSequence()] if gold else None
        self._gold_at = 0
        info = self._base_info() | {"score": self._score, "moves": int(sim.server.getNumMoves()), "success": False,
                                    "task_description": sim.get_task_description()}
        if not with_valid:
            info["valid_actions_skipped"] = True
        valid = self._valid() if with_valid else []
        self._valid_now = frozenset(valid) if with_valid else None
        return TextReset(observation=obs, mission=info["task_description"], valid_actions=valid, info=self._extras(info))

    def step(self, action: str, *, with_valid: bool = False) -> TextStep:
        """Send one action string; ``with_valid`` adds ``info['valid_actions']`` (costly)."""
        if not isinstance(action, str):
            raise ScienceWorldError(f"a ScienceWorld action is a string such as 'look around', got {type(action).__name__} {action!r}")
        if self._sim is None:
            raise ScienceWorldError("this ScienceWorld env is closed; create a new one")
        if self._done:
            raise ScienceWorldError("the ScienceWorld episode is over (or never started): call reset() before step()")
        info = self._base_info()
        if self._gold is not None and self._gold_at is not None:  # does the episode still follow the gold path?
            p, want = self._gold_next()
            self._gold_at = p + 1 if want is not None and action == want else None
        self._valid_now = None
        try:
            server = self._sim.server
            try:
                obs = server.step(action)
                if obs.startswith(_AMBIGUOUS):
                    info["disambiguated"] = obs
                    obs = server.step("0")
            except Py4JJavaError as err:  # a simulator exception (e.g. issue #25): the JVM is fine
                obs = f"(ScienceWorld error: {str(err.java_exception).splitlines()[0]})"
                info["java_error"] = str(err.java_exception)
            score = int(round(100 * server.getScore()))
            completed = bool(server.getCompleted())
            info["moves"] = int(server.getNumMoves())
            if with_valid:
                info["valid_actions"] = self._valid()
                self._valid_now = frozenset(info["valid_actions"])
            self._extras(info)
        except Py4JError as err:  # the JVM died or hung: this episode is lost
            return self._lost(info, err)
        self._steps += 1
        self._history.append(action)
        reward = float(score - self._score)
        self._score = score
        terminated = completed or score < 0
        truncated = not terminated and self._steps >= self.step_limit
        self._done = terminated or truncated
        info.update(score=score, success=completed and score >= 0, steps=self._steps, failed=score < 0)
        return TextStep(observation=obs, reward=reward, terminated=terminated, truncated=truncated, info=info)

    def _lost(self, info: dict[str, Any], err: BaseException) -> TextStep:
        self._done = True
        self._restart()
        info.update(success=False, episode_lost=True, jvm_restarted=True, error=f"{type(err).__name__}: {err}",
                    score=self._score, steps=self._steps)
        return TextStep(observation="", reward=0.0, terminated=False, truncated=True, info=info)

    def branch(self, action: str, *, with_valid: bool = False) -> TextStep:
        """What ``step(action)`` would return now, without changing this episode (the rollout
        loop's counterfactual branch).

        A JVM cannot be copied, so a second env (its own JVM, started on first use and kept)
        loads the same variation and replays this episode's actions, then takes ``action``
        (about 40 ms to load plus 1-10 ms per replayed step). ScienceWorld 1.2.3 is deterministic
        on replay except for order-dependent heat transfer (thermal tasks); a replay that does not
        reach this episode's score raises ``ScienceWorldError`` rather than return a wrong branch.
        """
        if self._done or self.variation is None:
            raise ScienceWorldError("branch() needs an episode in progress: call reset() first")
        if self._shadow is None or self._shadow.jvm_pid is None:
            self._shadow = ScienceWorldTextEnv(self.task.id, split=self.split, simplifications=self.simplifications,
                                               step_limit=self.step_limit, call_timeout=self.call_timeout,
                                               java_opts=self._java_opts)
        shadow = self._shadow
        try:
            shadow.set_task(self.task.id)
            shadow.step_limit, shadow.with_look_inventory = self.step_limit, False
            shadow.reset(variation=self.variation, with_valid=False)
            lost = None
            for a in self._history:
                out = shadow.step(a)
                if out.info.get("episode_lost"):
                    lost = out
                    break
        except (Py4JError, SimulatorDiedError) as err:  # the replay JVM died: this branch is lost, not the run
            shadow.close()
            return self._lost_branch(f"{type(err).__name__}: {err}")
        if lost is not None:
            return self._lost_branch(lost.info.get("error", "the replay JVM died"))
        if shadow.score != self._score:
            raise ScienceWorldError(f"replaying task {self.task.id} variation {self.variation} ({len(self._history)} "
                                    f"actions) reached score {shadow.score}, not {self._score}: the simulator is not "
                                    f"deterministic here, so this state cannot be branched")
        shadow.with_look_inventory = self.with_look_inventory
        return shadow.step(action, with_valid=with_valid)

    def _lost_branch(self, error: str) -> TextStep:
        info = self._base_info() | {"success": False, "episode_lost": True, "error": error, "score": self._score,
                                    "steps": self._steps + 1}
        return TextStep(observation="", reward=0.0, terminated=False, truncated=True, info=info)

    def valid_actions(self) -> list[str]:
        """Valid action strings now (about 30-60 ms: the simulator enumerates all combinations)."""
        if self._sim is None or self.variation is None:
            raise ScienceWorldError("call reset() before valid_actions()")
        try:
            return self._valid()
        except Py4JError as err:
            self._done = True
            self._restart()
            raise SimulatorDiedError(f"the ScienceWorld JVM died; the episode is lost, call reset(): {err}") from err

    def gold_actions(self) -> list[str]:
        """The simulator's gold action sequence for the current episode (needs a gold path)."""
        if self.variation is None:
            raise ScienceWorldError("call reset() before gold_actions()")
        if self._gold is None:
            raise ScienceWorldError("no gold path for this episode: reset(..., gold_path=True) or create the env with gold_path=True")
        return list(self._gold)

    def _gold_next(self) -> tuple[int, str | None]:
        """The next gold action to take as a valid action of the current state, and its index in
        the gold path. The path is written in the simulator's own object names, not always the
        valid actions' ("move egg turtle egg in inventory to orange box" where the valid action
        is "move egg turtle to orange box"), so an action that is not valid maps to the nearest
        valid one (``utils.text.nearest_action``); an "open door" that is not valid is skipped,
        as the "easy" simplifications open every door and the step is a no-op. Where the valid
        actions were not listed the gold string is given as it is."""
        p = self._gold_at
        while p < len(self._gold):
            gold = self._gold[p]
            if self._valid_now is None or gold in self._valid_now:
                return p, gold
            if not gold.startswith("open door"):
                options = sorted(self._valid_now)
                return p, options[nearest_action(gold, options)[0]]
            p += 1
        return p, None

    def expert_action(self) -> str | None:
        """The gold path's next action (as a valid action: ``_gold_next``) while this episode has
        followed the path exactly, None once it left the path or the path is done: the gold path
        says nothing about other states. Needs a gold path (``reset(..., gold_path=True)``,
        ``ScienceWorldEpisode(..., gold_path=True)``); without one, or outside an episode, raises
        ``ScienceWorldError``."""
        if self._done or self.variation is None:
            raise ScienceWorldError("expert_action() needs an episode in progress: call reset() first")
        if self._gold is None:
            raise ScienceWorldError("no gold path for this episode, so no expert: reset(..., gold_path=True) or "
                                    "ScienceWorldEpisode(..., gold_path=True)")
        return None if self._gold_at is None else self._gold_next()[1]

    def look(self) -> str:
        """The room description (free: takes no time in the simulator)."""
        return self._sim.look()

    def inventory(self) -> str:
        """The inventory text (free)."""
        return self._sim.inventory()

    def goal_progress(self) -> str:
        """The simulator's sub-goal checklist (for debugging)."""
        return self._sim.get_goal_progress()

    @property
    def score(self) -> int:
        """Score of the current episode so far (0..100, or -100 after failure)."""
        return self._score

    def close(self) -> None:
        """Stop the JVM (idempotent)."""
        sim, self._sim = getattr(self, "_sim", None), None
        if sim is not None:
            sim.close()
        shadow, self._shadow = getattr(self, "_shadow", None), None
        if shadow is not None:
            shadow.close()

    def __enter__(self) -> ScienceWorldTextEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


make_scienceworld = ScienceWorldTextEnv
