"""The one batched episode loop: every text environment, every controller (evaluation, switch-data
collection, benchmarks).

``run_episodes(specs, controller, num_envs)`` plays each episode spec once in ``num_envs`` env
slots stepped in lockstep: slot ``i`` plays specs ``i, i + N, i + 2N, ...`` as its episodes end,
so every controller is evaluated on exactly the same episodes whatever their lengths. Each step:

1. the loop hands the controller a :class:`StepBatch` (the active slots and their structured
   :class:`~londi_jax.agents.prompts.EpisodeState`);
2. the controller returns a :class:`Decision`: one action per slot, which model calls it made
   (each call's measured cost comes back with its result and is charged to the episodes it served)
   and, optionally, *branches*: alternative actions to try on a copy of a slot's env (the
   counterfactual outcome switch-data collection needs);
3. the loop steps every env, extends each episode state, and gives the controller the outcomes.

Episodes and their cost are recorded in :class:`EpisodeRecord`; nothing is parsed back out of
prompts (policies render them from the states, ``agents.prompts``).
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import inspect
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from londi_jax.agents.prompts import EpisodeState, Observation
from londi_jax.envs.base import TextEnv, TextReset, TextStep
from londi_jax.utils.errors import LondiError

__all__ = ["EpisodeSource", "EpisodeRecord", "RolloutResult", "StepBatch", "ModelCall", "Decision", "StepOutcome",
           "Controller", "EnvPool", "run_episodes", "first_state", "mean_score", "MODELS"]

MODELS = ("quick", "deep")  # the models a call may be charged to


@runtime_checkable
class EpisodeSource(Protocol):
    """One episode to play: its seed, an optional task-kind label, and how to start it.

    ``make()`` gives a fresh env and its first observation (closed when the episode ends). A spec
    may also have ``start(env)``: begin the episode in the slot's previous env when it can (e.g.
    one ScienceWorld JVM per slot for the whole run), else close it and make a new one. A spec
    with ``with_valid = True`` is stepped with ``with_valid=True`` (the valid actions in every
    state, ``EpisodeState.valid_actions``)."""

    seed: int

    def make(self) -> tuple[TextEnv, TextReset]:
        ...


@dataclasses.dataclass
class EpisodeRecord:
    """Outcome and cost of one episode (seconds and FLOPs of batched calls are split evenly over
    the episodes each call served)."""

    kind: str
    seed: int
    success: bool
    ret: float
    length: int
    quick_calls: int = 0
    deep_calls: int = 0
    quick_flops: float = 0.0
    deep_flops: float = 0.0
    quick_seconds: float = 0.0
    deep_seconds: float = 0.0
    budget: int | None = None
    score: float | None = None  # the env's own score at the end, where it keeps one (ScienceWorld)
    lost: bool = False  # cut short by a simulator failure (ScienceWorld's JVM died), not by the agent

    @property
    def violated(self) -> bool:
        return self.budget is not None and self.deep_calls > self.budget

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["return"] = d.pop("ret")
        d["violated"] = self.violated
        return d


@dataclasses.dataclass
class RolloutResult:
    """All episodes of a rollout (in spec order), with totals."""

    episodes: list[EpisodeRecord]
    env_steps: int
    wall_seconds: float
    model_calls: dict[str, int]

    def summary(self) -> dict[str, float]:
        eps = self.episodes
        steps = max(sum(e.length for e in eps), 1)
        return {
            "episodes": len(eps),
            "success_rate": float(np.mean([e.success for e in eps])) if eps else 0.0,
            "mean_return": float(np.mean([e.ret for e in eps])) if eps else 0.0,
            "call_rate": sum(e.deep_calls for e in eps) / steps,
            "flops_per_episode": float(np.mean([e.quick_flops + e.deep_flops for e in eps])) if eps else 0.0,
            "violations": sum(e.violated for e in eps),
            "env_steps_per_second": self.env_steps / max(self.wall_seconds, 1e-9),
            **({"mean_score": mean_score(eps), "lost": sum(e.lost for e in eps)}
               if eps and all(e.score is not None for e in eps) else {}),
        }


def mean_score(episodes: Sequence[EpisodeRecord]) -> float:
    """Mean final score with failed episodes (score -100) counted as 0, as ScienceWorld papers
    report it (SwiftSage's ``show_results``)."""
    return float(np.mean([max(e.score or 0.0, 0.0) for e in episodes])) if episodes else 0.0


@dataclasses.dataclass
class StepBatch:
    """The active slots at one step (row ``j`` is slot ``slots[j]``, playing spec ``owners[j]``)."""

    slots: np.ndarray  # int (n,)
    owners: np.ndarray  # int (n,) index of the spec each row is playing
    states: list[EpisodeState]
    new_episode: np.ndarray  # bool (n,) first step of the slot's current episode
    # the env's expert action per row (None where no expert applies), filled only for a controller
    # with ``wants_expert = True`` (the oracle switch): ``TextEnv.expert_action()``
    experts: list[str | None] | None = None

    @property
    def n(self) -> int:
        return len(self.states)

    @property
    def step(self) -> np.ndarray:
        return np.array([s.step for s in self.states], np.int64)

    @property
    def max_steps(self) -> np.ndarray:
        return np.array([s.max_steps for s in self.states], np.int64)


@dataclasses.dataclass(frozen=True)
class ModelCall:
    """One batched model call: which rows it served, for which model, what it cost."""

    model: str  # 'quick' | 'deep'
    rows: Sequence[int]
    seconds: float
    flops: float


@dataclasses.dataclass
class Decision:
    """A controller's choice for one step: ``actions[j]`` for row j, the calls it made,
    ``deep[j]`` whether DEEPTHINK chose row j's action, and ``branch[j] = action``: also try
    ``action`` from row j's state without changing its episode (the env's ``branch(action)``
    where it has one, else a step of a ``copy.deepcopy`` of the env)."""

    actions: list[str]
    calls: list[ModelCall]
    deep: np.ndarray
    branch: dict[int, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StepOutcome:
    """What the step did: the env results, the next states (the real next observation also at
    episode ends) and, for branched rows, ``branches[j] = (TextStep, next state)``."""

    steps: list[TextStep]
    next_states: list[EpisodeState]
    branches: dict[int, tuple[TextStep, EpisodeState]]

    @property
    def rewards(self) -> np.ndarray:
        return np.array([s.reward for s in self.steps], np.float64)

    @property
    def dones(self) -> np.ndarray:
        return np.array([s.done for s in self.steps], bool)


class Controller(Protocol):
    """Chooses actions for a batch of episode states (and learns or logs from the outcomes).
    A controller with ``wants_expert = True`` gets each state's expert action in
    ``StepBatch.experts`` (its envs must have ``expert_action()``)."""

    def start(self, num_slots: int) -> None: ...

    def act(self, batch: StepBatch) -> Decision: ...

    def observe(self, batch: StepBatch, decision: Decision, outcome: StepOutcome) -> None: ...


def _observation(text: str, info: dict[str, Any], reward: float = 0.0) -> Observation:
    return Observation(text=text, info=dict(info), reward=float(reward))


def first_state(first: TextReset) -> EpisodeState:
    """The episode state at a reset (``max_steps`` and ``task_kind`` from the env's info)."""
    return EpisodeState(mission=first.mission, observations=(_observation(first.observation, first.info),),
                        valid_actions=tuple(first.valid_actions), max_steps=int(first.info.get("max_steps", 0)),
                        task_kind=str(first.info.get("task_kind") or ""))


def _next_state(state: EpisodeState, action: str, step: TextStep) -> EpisodeState:
    return state.then(action, _observation(step.observation, step.info, step.reward),
                      step.info.get("valid_actions", ()))


def _expert(env: Any) -> str | None:
    fn = getattr(env, "expert_action", None)
    if fn is None:
        raise LondiError(f"this controller reads an expert's action, and a {type(env).__name__} has no expert "
                         "(expert_action()); BabyAI-Text (the bot) and ScienceWorld (gold paths) have one")
    return fn()


def _takes_with_valid(env: Any) -> bool:
    try:
        return "with_valid" in inspect.signature(env.step).parameters
    except (TypeError, ValueError):
        return False


class _Slot:
    def __init__(self, spec: Any, index: int, budget: int | None, env: Any = None):
        if hasattr(spec, "start"):
            self.env, first = spec.start(env)
        else:
            if env is not None:
                env.close()
            self.env, first = spec.make()
        self.with_valid = bool(getattr(spec, "with_valid", False)) and _takes_with_valid(self.env)
        self.index = index
        self.state = first_state(first)
        kind = self.state.task_kind or str(getattr(spec, "kind", None) or "")
        self.record = EpisodeRecord(kind=kind, seed=int(spec.seed), success=False, ret=0.0, length=0, budget=budget)
        self.new = True


def _branch(env: Any, action: str, with_valid: bool) -> TextStep:
    """The outcome of ``action`` from ``env``'s current state, leaving ``env`` as it is: the env's
    own ``branch`` where it has one (ScienceWorld replays in a second JVM), else a step of a
    ``copy.deepcopy`` of it (BabyAI-Text)."""
    if hasattr(env, "branch"):
        return env.branch(action, with_valid=True) if with_valid else env.branch(action)
    try:
        other = copy.deepcopy(env)
    except Exception as err:  # noqa: BLE001 - e.g. a simulator in another process
        raise LondiError(f"cannot copy a {type(env).__name__} to branch a rollout ({type(err).__name__}: {err}); "
                         "branches need envs with a branch(action) method or that support copy.deepcopy") from err
    try:
        return other.step(action, with_valid=True) if with_valid else other.step(action)
    finally:
        getattr(other, "close", lambda: None)()


class EnvPool:
    """Envs kept from one rollout to the next, one per slot: with specs that can start an episode
    in a previous env (``start(env)``), a ScienceWorld JVM starts once per pool instead of once
    per slot and run (seconds each, plus its JIT warm-up). Close it when done (``with EnvPool()
    as pool``); envs of a rollout that raised are closed, not kept."""

    def __init__(self) -> None:
        self._envs: dict[int, Any] = {}

    def take(self, slot: int) -> Any:
        return self._envs.pop(slot, None)

    def give(self, slot: int, env: Any) -> None:
        old = self._envs.pop(slot, None)
        if old is not None and old is not env:
            old.close()
        self._envs[slot] = env

    def close(self) -> None:
        envs, self._envs = list(self._envs.values()), {}
        for env in envs:
            env.close()

    def __len__(self) -> int:
        return len(self._envs)

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _step_threads(parallel: bool | None, envs: Sequence[Any], num_slots: int
                  ) -> concurrent.futures.ThreadPoolExecutor | bool:
    """A thread per slot where the envs step in other processes (``parallel_steps = True``:
    ScienceWorld's JVMs, whose calls wait on sockets with the GIL released), else False."""
    use = all(getattr(e, "parallel_steps", False) for e in envs) if parallel is None else parallel
    if not use or num_slots < 2:
        return False
    return concurrent.futures.ThreadPoolExecutor(num_slots, thread_name_prefix="londi-env")


def run_episodes(specs: Sequence[Any], controller: Controller, num_envs: int = 32, *, budget: int | None = None,
                 progress: bool = True, desc: str = "rollout", pool: EnvPool | None = None,
                 parallel: bool | None = None) -> RolloutResult:
    """Play every spec once with ``controller`` in ``min(num_envs, len(specs))`` slots.

    ``budget`` is only recorded (``EpisodeRecord.budget``, violations); enforcing it is the
    controller's business. ``pool``: take the slots' envs from it and give them back at the end
    (see :class:`EnvPool`). ``parallel``: step the slots' envs (and their branches) from one
    thread each, at the same time; ``None`` (default) does so when every env says its steps run
    in another process (``parallel_steps = True``, e.g. ScienceWorld's JVMs: four JVMs then
    compute at once while the loop waits), since in-process Python envs gain nothing from
    threads. Results are the same either way (each env is stepped by one thread at a time, in
    the same order). Returns the records in spec order. Raises ``LondiError`` for no specs,
    ``num_envs < 1`` or a decision of the wrong length.
    """
    if not specs:
        raise LondiError("no episodes to run; give at least one episode spec")
    if num_envs < 1:
        raise LondiError(f"num_envs must be >= 1, got {num_envs}")
    queue = list(range(len(specs)))
    slots: list[_Slot | None] = [None] * min(num_envs, len(specs))
    for i in range(len(slots)):
        k = queue.pop(0)
        slots[i] = _Slot(specs[k], k, budget, pool.take(i) if pool is not None else None)
    controller.start(len(slots))
    wants_expert = bool(getattr(controller, "wants_expert", False))
    records: list[EpisodeRecord | None] = [None] * len(specs)
    calls = dict.fromkeys(MODELS, 0)
    env_steps, t0 = 0, time.perf_counter()
    threads: concurrent.futures.ThreadPoolExecutor | None | bool = None  # decided at the first step
    bar = tqdm(total=len(specs), desc=desc, unit="ep", disable=not progress, leave=False)
    try:
        while any(s is not None for s in slots):
            active = [i for i, s in enumerate(slots) if s is not None]
            act = [slots[i] for i in active]
            batch = StepBatch(np.array(active, np.int64), np.array([s.index for s in act], np.int64),
                              [s.state for s in act], np.array([s.new for s in act], bool),
                              [_expert(s.env) for s in act] if wants_expert else None)
            dec = controller.act(batch)
            if len(dec.actions) != batch.n:
                raise LondiError(f"the controller returned {len(dec.actions)} actions for {batch.n} envs")
            for call in dec.calls:
                calls[call.model] += 1
                share_s, share_f = call.seconds / max(len(call.rows), 1), call.flops / max(len(call.rows), 1)
                for j in call.rows:
                    rec = act[j].record
                    setattr(rec, f"{call.model}_calls", getattr(rec, f"{call.model}_calls") + 1)
                    setattr(rec, f"{call.model}_flops", getattr(rec, f"{call.model}_flops") + share_f)
                    setattr(rec, f"{call.model}_seconds", getattr(rec, f"{call.model}_seconds") + share_s)
            def advance(j: int) -> tuple[TextStep | None, TextStep]:
                s = act[j]
                # before stepping: the action not taken, from the same state
                alt = _branch(s.env, dec.branch[j], s.with_valid) if j in dec.branch else None
                return alt, (s.env.step(dec.actions[j], with_valid=True) if s.with_valid
                             else s.env.step(dec.actions[j]))

            if threads is None:
                threads = _step_threads(parallel, [s.env for s in act], len(slots))
            done_steps = list(threads.map(advance, range(len(act)))) if threads else \
                [advance(j) for j in range(len(act))]
            steps = [st for _, st in done_steps]
            branches: dict[int, tuple[TextStep, EpisodeState]] = {
                j: (alt, _next_state(act[j].state, dec.branch[j], alt))
                for j, (alt, _) in enumerate(done_steps) if alt is not None}
            outcome = StepOutcome(steps, [_next_state(s.state, a, o) for s, a, o in zip(act, dec.actions, steps)],
                                  branches)
            env_steps += len(act)
            for j, s in enumerate(act):
                out = steps[j]
                s.new = False
                s.record.length += 1
                s.record.ret += out.reward
                s.state = outcome.next_states[j]
                if "score" in out.info:  # environments with a running score (ScienceWorld: -100 or 0..100)
                    s.record.score = float(out.info["score"])
                if out.done:
                    s.record.success = bool(out.info.get("success", out.terminated and out.reward > 0))
                    s.record.lost = bool(out.info.get("episode_lost", False))
            controller.observe(batch, dec, outcome)
            for j, i in enumerate(active):
                if steps[j].done:
                    s = slots[i]
                    records[s.index] = s.record
                    if queue:  # the slot's env goes to its next episode (reused where the spec can)
                        slots[i] = _Slot(specs[queue[0]], queue.pop(0), budget, s.env)
                    else:
                        if pool is not None:
                            pool.give(i, s.env)
                        else:
                            s.env.close()
                        slots[i] = None
                    bar.update(1)
    finally:
        bar.close()
        if threads:
            threads.shutdown()
        for s in slots:
            if s is not None:
                s.env.close()
    return RolloutResult([r for r in records if r is not None], env_steps, time.perf_counter() - t0, calls)
