"""Switch routers: who acts at each step, QUICK (small LM) or DEEPTHINK (large LM).

The LONDI agent steps N envs in lockstep. At each step it shows a router a :class:`RouteInput`
for the active envs, gets a boolean per env (True = DEEPTHINK acts), masks calls where no budget
is left, steps the envs and reports back through ``observe``. Every LONDI baseline is a router:

* :class:`QuickOnly` / :class:`DeepthinkOnly`: g = 0 / g = 1 everywhere.
* :class:`RandomRouter`: Bernoulli(p) per step (p matched to another method's call rate).
* :class:`ConfidenceRouter`: DEEPTHINK when QUICK's confidence is below a threshold (RouteLLM's
  idea of a thresholded router calibrated to a target share of strong-model calls).
* :class:`SwiftSageRouter`: SwiftSage's hand-written fast/slow switching rules.
* :class:`SwitcherRouter`: the learned LONDI / LONDI-B switch, acting greedily.
* :class:`OracleRouter`: DEEPTHINK exactly where the expert says QUICK is wrong and DEEPTHINK
  right (the upper reference for every learned switch).

Routers are deterministic given ``reset(num_slots, seed)``. Attributes the agent reads:
``name``; ``respects_budget`` (a router that promises never to ask for DEEPTHINK with no budget
left, so that asking is a bug the agent reports); ``needs_quick`` (False when the decision does
not read QUICK's output, so the agent runs QUICK only where it acts); ``reads_scores`` (True
when the decision reads QUICK's candidate scores or embedding, which a generating QUICK,
``LMPolicy(mode="generate")``, does not have; its top action alone, as SwiftSage reads, is fine);
``peeks_deep`` (True when the decision reads DEEPTHINK's action in every state: the agent runs
DEEPTHINK on all of them first and charges it only where it acts); ``reads_expert`` (True when
the decision reads the env's expert action, ``RouteInput.expert_actions``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from londi_jax.switcher.config import SwitcherConfig
from londi_jax.switcher.core import greedy_switch
from londi_jax.switcher.network import graphdef
from londi_jax.utils.errors import LondiError, UnknownNameError
from londi_jax.utils.programs import program_cache

__all__ = [
    "RouteInput", "Router", "RouterError", "QuickOnly", "DeepthinkOnly", "RandomRouter",
    "ConfidenceRouter", "ClassifierRouter", "SwiftSageRouter", "SwitcherRouter", "OracleRouter", "MEASURES",
    "confidence",
    "calibrate_threshold",
]

MEASURES = ("margin", "max_prob", "entropy")
_NEVER = 1 << 30  # "no DEEPTHINK call yet" in the steps-since counter


class RouterError(LondiError):
    """Bad router settings or inputs."""


@dataclasses.dataclass
class RouteInput:
    """What a router sees for the n active envs at one step (row i is env slot slots[i])."""

    slots: np.ndarray           # int (n,) env slot ids; routers keep per-slot state keyed by these
    quick_logprobs: np.ndarray  # float (n, K) QUICK's action scores (summed token log-probs)
    features: np.ndarray        # float32 (n, F) switcher features (no budget feature)
    step: np.ndarray            # int (n,) steps already taken in the current episode (0 at its start)
    max_steps: np.ndarray       # int (n,)
    budget_left: np.ndarray     # int (n,) DEEPTHINK calls left this episode (a large int when unbudgeted)
    budget: np.ndarray          # int (n,) the episode's budget n (large int when unbudgeted)
    new_episode: np.ndarray     # bool (n,) first step of a new episode in that slot (reset slot state)
    quick_actions: list[str] | None = None  # QUICK's top action string per row (text-reading routers)
    missions: list[str] | None = None  # each row's task text
    deep_actions: list[str] | None = None  # DEEPTHINK's top action per row (routers that peek: ``peeks_deep``)
    expert_actions: list[str | None] | None = None  # the env's expert action per row, None where none applies

    def __post_init__(self) -> None:
        self.slots = np.asarray(self.slots, np.int64).reshape(-1)
        n = self.slots.shape[0]
        self.quick_logprobs = np.asarray(self.quick_logprobs, np.float64)
        self.features = np.asarray(self.features, np.float32)
        for name in ("quick_logprobs", "features"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != n:
                raise RouterError(f"RouteInput.{name} must have shape (n, .) with n = {n} slots, "
                                  f"got {arr.shape}")
        for name in ("quick_actions", "missions", "deep_actions", "expert_actions"):
            val = getattr(self, name)
            if val is not None and len(val) != n:
                raise RouterError(f"RouteInput.{name} must have one entry per slot ({n}), got {len(val)}")
        for name in ("step", "max_steps", "budget_left", "budget", "new_episode"):
            arr = np.asarray(getattr(self, name)).reshape(-1)
            if arr.shape[0] != n:
                raise RouterError(f"RouteInput.{name} must have one entry per slot ({n}), got {arr.shape[0]}")
            setattr(self, name, arr.astype(bool) if name == "new_episode" else arr.astype(np.int64))

    @property
    def n(self) -> int:
        return int(self.slots.shape[0])


@runtime_checkable
class Router(Protocol):
    """A per-step switch between QUICK and DEEPTHINK."""

    name: str
    respects_budget: bool

    def reset(self, num_slots: int, seed: int) -> None: ...

    def decide(self, inp: RouteInput) -> np.ndarray: ...

    def observe(self, slots: np.ndarray, deep: np.ndarray, actions: np.ndarray,
                rewards: np.ndarray, dones: np.ndarray) -> None: ...


class _Stateless:
    """Shared no-op ``reset`` / ``observe`` for routers without per-slot history."""

    reads_scores = False
    respects_budget = False
    needs_quick = True
    peeks_deep = False
    reads_expert = False

    def reset(self, num_slots: int, seed: int) -> None:
        _check_slots(num_slots)

    def observe(self, slots, deep, actions, rewards, dones) -> None:
        return None


def _check_slots(num_slots: int) -> int:
    if int(num_slots) < 1:
        raise RouterError(f"num_slots must be >= 1, got {num_slots}")
    return int(num_slots)


class QuickOnly(_Stateless):
    """QUICK everywhere (0% DEEPTHINK calls)."""

    name = "quick-only"

    def decide(self, inp: RouteInput) -> np.ndarray:
        return np.zeros(inp.n, bool)


class DeepthinkOnly(_Stateless):
    """DEEPTHINK everywhere (100% calls, or as many as the budget allows: the agent masks)."""

    name = "deepthink-only"
    needs_quick = False

    def decide(self, inp: RouteInput) -> np.ndarray:
        return np.ones(inp.n, bool)


class RandomRouter(_Stateless):
    """DEEPTHINK with probability ``p`` at every step, independently (numpy Generator seeded in
    ``reset``); used with ``p`` matched to another method's call rate."""

    needs_quick = False

    def __init__(self, p: float, name: str | None = None):
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise RouterError(f"RandomRouter needs a call probability p in [0, 1], got {p}")
        self.p = p
        self.name = name or f"random-{p:g}"
        self._rng: np.random.Generator | None = None

    def reset(self, num_slots: int, seed: int) -> None:
        _check_slots(num_slots)
        self._rng = np.random.default_rng(seed)

    def decide(self, inp: RouteInput) -> np.ndarray:
        if self._rng is None:
            raise RouterError("RandomRouter.decide called before reset(num_slots, seed)")
        return self._rng.random(inp.n) < self.p


# ----------------------------------------------------------------------------- confidence


def confidence(quick_logprobs: np.ndarray, measure: str = "margin") -> np.ndarray:
    """QUICK's confidence per row, ``(n,)`` in [0, 1], higher = more confident.

    The K action scores are turned into QUICK's policy p = softmax(scores). ``"margin"``:
    p_top1 - p_top2; ``"max_prob"``: p_top1; ``"entropy"``: 1 - H(p) / log K (so that, like
    the others, a flatter distribution gives a lower value). Rows may be ragged (ScienceWorld's
    valid actions): ``-inf`` entries are padding, not candidates, and K is the row's own count
    (a row with one candidate is fully confident).
    """
    if measure not in MEASURES:
        raise UnknownNameError("confidence measure", measure, MEASURES)
    lp = np.asarray(quick_logprobs, np.float64)
    if lp.ndim != 2 or lp.shape[1] < 1:
        raise RouterError(f"quick_logprobs must be (n, K) with K >= 1 actions, got shape {lp.shape}")
    real = np.isfinite(lp)
    if np.any(np.isnan(lp)) or np.any(lp == np.inf) or not np.all(real.any(axis=1)):
        raise RouterError("quick_logprobs contain NaN, +inf or a row without a finite score; QUICK's scores must be "
                          "finite (-inf only marks padding past a row's candidates)")
    z = np.where(real, np.exp(lp - np.max(np.where(real, lp, -np.inf), axis=1, keepdims=True)), 0.0)
    p = z / z.sum(axis=1, keepdims=True)
    if measure == "max_prob":
        return p.max(axis=1)
    if measure == "margin":
        top2 = np.sort(np.pad(p, ((0, 0), (1, 0))), axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
    ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    k = real.sum(axis=1)
    return np.where(k > 1, 1.0 - ent / np.log(np.maximum(k, 2)), 1.0)


def calibrate_threshold(confidences: np.ndarray, target_rate: float, measure: str = "margin") -> float:
    """Threshold t for :class:`ConfidenceRouter` (DEEPTHINK iff confidence < t) whose share of
    the given states sent to DEEPTHINK is closest to ``target_rate``.

    The achievable shares are 0, and #{conf <= u}/N for each distinct value u: tied states
    are always routed together, so with ties a target may fall between achievable shares; the
    nearest one is taken, and of two equally near the lower (fewer expensive calls). The
    threshold is the midpoint between consecutive distinct values (robust on new states);
    share 0 gives ``-inf`` (never call) and share 1 gives ``+inf`` (always call).
    ``measure`` only labels the values in messages (they must come from :func:`confidence`).
    """
    if measure not in MEASURES:
        raise UnknownNameError("confidence measure", measure, MEASURES)
    rate = float(target_rate)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise RouterError(f"target_rate must be a call rate in [0, 1], got {target_rate}")
    conf = np.asarray(confidences, np.float64).reshape(-1)
    if conf.size == 0:
        raise RouterError("calibrate_threshold needs at least one confidence value")
    if not np.all(np.isfinite(conf)):
        raise RouterError(f"{measure} confidences contain NaN or inf")
    values, counts = np.unique(conf, return_counts=True)
    shares = np.concatenate([[0.0], np.cumsum(counts) / conf.size])  # share for t just above values[j-1]
    k = int(np.argmin(np.abs(shares - rate)))  # argmin takes the first, i.e. the lower share, on ties
    if k == 0:
        return float("-inf")
    if k == len(values):
        return float("inf")
    return float(0.5 * (values[k - 1] + values[k]))


class ConfidenceRouter(_Stateless):
    """DEEPTHINK where QUICK's confidence (see :func:`confidence`) is below ``threshold``.

    The thresholded-router idea of RouteLLM with QUICK's own scores as the router; pick the
    threshold for a target call rate with :func:`calibrate_threshold`.
    """

    reads_scores = True

    def __init__(self, threshold: float, measure: str = "margin", name: str | None = None):
        if measure not in MEASURES:
            raise UnknownNameError("confidence measure", measure, MEASURES)
        if np.isnan(threshold):
            raise RouterError("ConfidenceRouter threshold is NaN; pass a number (see calibrate_threshold)")
        self.threshold = float(threshold)
        self.measure = measure
        self.name = name or f"confidence-{measure}"

    def decide(self, inp: RouteInput) -> np.ndarray:
        return confidence(inp.quick_logprobs, self.measure) < self.threshold


class ClassifierRouter(_Stateless):
    """DEEPTHINK where a calibrated classifier of QUICK's failures (``switcher.classifier``) gives
    a failure probability above ``threshold`` (R2V-Agent's step-level router). Reads the same
    features as the LONDI switch (``RouteInput.features``)."""

    reads_scores = True

    def __init__(self, classifier: Any, threshold: float, name: str = "failure-classifier"):
        if np.isnan(threshold):
            raise RouterError("ClassifierRouter threshold is NaN; pass a number (see calibrate_threshold)")
        self.classifier, self.threshold, self.name = classifier, float(threshold), name

    def decide(self, inp: RouteInput) -> np.ndarray:
        return self.classifier.predict(inp.features) > self.threshold


# ----------------------------------------------------------------------------- SwiftSage


class OracleRouter(_Stateless):
    """The oracle switch: DEEPTHINK exactly where the expert says QUICK's action is wrong and
    DEEPTHINK's is right (``quick != expert == deep``), QUICK everywhere else, including states
    where no expert applies (``expert_actions[i] is None``: ScienceWorld off its gold path).

    The upper reference a learned switch is measured against (the issue's 2025-26 routing
    baselines): it knows both models' actions and the expert's in every state, so the agent runs
    DEEPTHINK everywhere to show it (``peeks_deep``) but charges DEEPTHINK only where it acts,
    its share of each batched call, as every call is charged. Compares the greedy (top) actions;
    with ``sample_actions`` the sampled action may differ from the one compared. Experts come
    from the env (``expert_action()``): the BabyAI bot, ScienceWorld's gold path.
    """

    name = "oracle"
    peeks_deep = True
    reads_expert = True

    def decide(self, inp: RouteInput) -> np.ndarray:
        missing = [f for f in ("quick_actions", "deep_actions", "expert_actions") if getattr(inp, f) is None]
        if missing:
            raise RouterError(f"the oracle switch needs RouteInput.{', '.join(missing)}: run it through LondiAgent, "
                              "which fills them for a router with peeks_deep and reads_expert")
        return np.array([e is not None and q != e and d == e
                         for q, d, e in zip(inp.quick_actions, inp.deep_actions, inp.expert_actions)], bool)


class SwiftSageRouter:
    """SwiftSage's hand-written fast/slow switch, adapted to BabyAI-Text (QUICK = Swift, DEEPTHINK = Sage).

    Source: ``SwiftSage/SwiftSage`` (``science_world`` branch), ``eval_utils.findValidActionWithSystem2``
    (rule 3 of the project's reference note) and the loop in ``eval_agent_fast_slow.py`` (rule 7).
    QUICK's top action (argmax of its scores) is kept if ANY of:

    1. fewer than ``warmup_steps`` (10) actions were taken this episode (``len(recent_actions) < 10``;
       the original's history starts with a dummy "look around", a one-step difference dropped here);
    2. DEEPTHINK acted within the last ``deep_window`` (5) steps: at step t after a call at step s,
       ``t - s < deep_window`` (the original's ``step - last_time_system2_steps[-1] < 5``);
    3. reward was gained within the last ``reward_window`` (5) steps (``sum(recent_reward[-5:]) > 0``;
       with BabyAI's non-negative rewards: a positive reward in that window);
    4. the top action does not repeat one of the last ``repeat_window`` (3) actions taken (by either model).

    Otherwise DEEPTHINK is called, except that QUICK is forced after ``force_quick_after`` (2)
    consecutive DEEPTHINK calls (the original's ``consecutive_system2 >= 2``).

    ``native=True`` adds rule 6's ScienceWorld triggers, which *force* DEEPTHINK (QUICK's force
    still wins, so calls never run away): (a) ``failures_to_force`` (2) failed actions
    accumulated since DEEPTHINK last acted (observations such as "No known action matches that
    input."); (b) QUICK's top action is a ``focus on X`` before DEEPTHINK has focused in this
    episode, unless X is named in the task text or QUICK has already tried ``focus_tries`` (3)
    times (focus is irrevocable in ScienceWorld: a wrong one fails the task). It needs
    ``RouteInput.quick_actions`` / ``missions`` and the agent's :meth:`observe_text`. Rule 6's
    third trigger (loop iterations without an action) cannot happen here: every step acts.

    Dropped: Sage's action buffers (one action per DEEPTHINK call, as LONDI's MDP charges a call
    per action); the validity conditions of rules 3-4 and the fall-back to Swift's other beams
    (every one of BabyAI's 6 actions is always valid); rule 6's "force Sage" triggers (no-action
    loops, failed-action messages and the ``focus on`` clause have no BabyAI analogue). Before the
    first call the original acts as if Sage was used at step -1 (``last_time_system2_steps = [-1]``);
    here "no call yet" never triggers rule 2, which only matters with ``warmup_steps < 5``.

    Consequence in BabyAI-Text, applied literally: rewards arrive only at the end of an episode,
    so rule 3 never fires mid-episode, and BabyAI policies repeat actions all the time ("go
    forward"), so rule 4 rarely keeps QUICK. The heuristic therefore does NOT call on nearly
    every step: rule 2 blocks calls for ``deep_window - 1`` steps after each one, so after the
    warm-up it calls about once every ``deep_window`` steps (steps 10, 15, 20, ... whenever QUICK
    repeats itself), at most a 1/``deep_window`` share. With ``deep_window >= 2`` two consecutive
    calls are impossible, so the force-QUICK rule only binds for ``deep_window <= 1``.
    """

    respects_budget = False
    reads_scores = False  # QUICK's top action only: SwiftSage's Swift generates its action
    needs_quick = True
    peeks_deep = False
    reads_expert = False

    FAILURES = ("No known action matches that input", "Unknown action", "It's not clear how to", "(ScienceWorld error",
                "That can't be moved there", "You can't")

    def __init__(self, warmup_steps: int = 10, deep_window: int = 5, reward_window: int = 5,
                 repeat_window: int = 3, force_quick_after: int = 2, name: str = "swiftsage", *,
                 native: bool = False, failures_to_force: int = 2, focus_tries: int = 3):
        for key, val in (("warmup_steps", warmup_steps), ("deep_window", deep_window),
                         ("reward_window", reward_window), ("repeat_window", repeat_window)):
            if int(val) < 0:
                raise RouterError(f"SwiftSageRouter {key} must be >= 0, got {val}")
        if int(force_quick_after) < 1:
            raise RouterError(f"SwiftSageRouter force_quick_after must be >= 1, got {force_quick_after}")
        self.warmup_steps, self.deep_window = int(warmup_steps), int(deep_window)
        self.reward_window, self.repeat_window = int(reward_window), int(repeat_window)
        self.force_quick_after = int(force_quick_after)
        self.native, self.failures_to_force, self.focus_tries = bool(native), int(failures_to_force), int(focus_tries)
        self.name = name
        self.num_slots = 0

    def reset(self, num_slots: int, seed: int) -> None:
        self.num_slots = _check_slots(num_slots)
        self._actions = np.full((self.num_slots, self.repeat_window), -1, np.int64)  # oldest first
        self._rewards = np.zeros((self.num_slots, self.reward_window))
        self._since_deep = np.full(self.num_slots, _NEVER, np.int64)  # t - s at the next decision
        self._consecutive = np.zeros(self.num_slots, np.int64)
        self._failures = np.zeros(self.num_slots, np.int64)  # failed actions since DEEPTHINK last acted
        self._deep_focused = np.zeros(self.num_slots, bool)
        self._quick_focus_tries = np.zeros(self.num_slots, np.int64)

    def _reset_slots(self, slots: np.ndarray) -> None:
        self._actions[slots] = -1
        self._rewards[slots] = 0.0
        self._since_deep[slots] = _NEVER
        self._consecutive[slots] = 0
        self._failures[slots] = 0
        self._deep_focused[slots] = False
        self._quick_focus_tries[slots] = 0

    def _slots(self, slots) -> np.ndarray:
        if not self.num_slots:
            raise RouterError("SwiftSageRouter used before reset(num_slots, seed)")
        slots = np.asarray(slots, np.int64).reshape(-1)
        if slots.size and (slots.min() < 0 or slots.max() >= self.num_slots):
            raise RouterError(f"slot ids must be in [0, {self.num_slots}), got {slots.tolist()}; "
                              "reset the router with the number of env slots")
        return slots

    def decide(self, inp: RouteInput) -> np.ndarray:
        slots = self._slots(inp.slots)
        self._reset_slots(slots[inp.new_episode])
        top = np.argmax(inp.quick_logprobs, axis=1)
        keep = inp.step < self.warmup_steps                                   # rule 1
        keep |= self._since_deep[slots] < self.deep_window                    # rule 2
        keep |= self._rewards[slots].sum(axis=1) > 0                          # rule 3
        keep |= ~np.any(self._actions[slots] == top[:, None], axis=1)         # rule 4
        forced_quick = self._consecutive[slots] >= self.force_quick_after     # rule 7
        if self.native:
            keep &= ~self._forced_deep(inp, slots)                            # rule 6
        return ~keep & ~forced_quick

    def _forced_deep(self, inp: RouteInput, slots: np.ndarray) -> np.ndarray:
        if inp.quick_actions is None or inp.missions is None:
            raise RouterError("SwiftSageRouter(native=True) reads QUICK's action and the task text: the agent must "
                              "fill RouteInput.quick_actions and missions (LondiAgent does)")
        force = self._failures[slots] >= self.failures_to_force
        for i, (a, m) in enumerate(zip(inp.quick_actions, inp.missions)):
            if a.startswith("focus on ") and not self._deep_focused[slots[i]]:
                named = a[len("focus on "):].split(" in ")[0].strip().lower() in m.lower()
                if not named and self._quick_focus_tries[slots[i]] < self.focus_tries:
                    self._quick_focus_tries[slots[i]] += 1
                    force[i] = True
        return force

    def observe_text(self, slots, deep, actions: list[str], observations: list[str]) -> None:
        """Rule 6's inputs: the actions taken (who focused) and what the env answered (failures).
        Called by the agent before :meth:`observe` for the same step."""
        slots = self._slots(slots)
        deep = np.asarray(deep, bool).reshape(-1)
        for i, (a, o) in enumerate(zip(actions, observations)):
            s = slots[i]
            if deep[i]:
                self._failures[s] = 0
                self._deep_focused[s] |= a.startswith("focus on ")
            elif o.strip().startswith(self.FAILURES):
                self._failures[s] += 1

    def observe(self, slots, deep, actions, rewards, dones) -> None:
        slots = self._slots(slots)
        deep = np.asarray(deep, bool).reshape(-1)
        if self.repeat_window:
            self._actions[slots] = np.concatenate(
                [self._actions[slots, 1:], np.asarray(actions, np.int64).reshape(-1, 1)], axis=1)
        if self.reward_window:
            self._rewards[slots] = np.concatenate(
                [self._rewards[slots, 1:], np.asarray(rewards, np.float64).reshape(-1, 1)], axis=1)
        self._since_deep[slots] = np.where(deep, 1, np.minimum(self._since_deep[slots] + 1, _NEVER))
        self._consecutive[slots] = np.where(deep, self._consecutive[slots] + 1, 0)
        self._reset_slots(slots[np.asarray(dones, bool).reshape(-1)])  # next episode starts fresh


# ----------------------------------------------------------------------------- learned switch


@program_cache(maxsize=32)
def _greedy_switch_program(config: SwitcherConfig):
    """One jitted greedy-switch program per (hashable) config, shared by every router built on
    it: a sweep's many switchers (c values, seeds) compile once per batch shape, not once each."""
    gdef, use_budget = graphdef(config), config.use_budget

    @jax.jit
    def run(params, obs, b, n):
        return greedy_switch(gdef, params, obs, b, n, use_budget, can=b > 0)  # never a call with none left

    return run


class SwitcherRouter:
    """The learned LONDI switch, acting greedily: g = argmax Q(z, g) over admissible g.

    ``z`` is the caller's features, with ``b / n`` appended when ``config.use_budget`` (LONDI-B),
    where b = budget left and n = ``budget`` if given (the n the switcher was trained for), else
    the episode's budget from the input. g = 1 is masked wherever ``budget_left == 0``, so the
    router never asks for a call it cannot have; ``respects_budget = config.use_budget``.
    Ties go to QUICK. One jitted function; batches are padded to a power of two so a shrinking
    number of active envs compiles only a few shapes.
    """

    reads_scores = True
    needs_quick = True
    peeks_deep = False
    reads_expert = False

    def __init__(self, config: SwitcherConfig, params, budget: int | None = None, name: str = "londi"):
        if budget is not None and int(budget) < 0:
            raise RouterError(f"budget must be >= 0 or None, got {budget}")
        self.config = config
        self.params = params
        self.budget = None if budget is None else int(budget)
        self.name = name
        self.respects_budget = bool(config.use_budget)
        self._run = _greedy_switch_program(config)

    def reset(self, num_slots: int, seed: int) -> None:
        _check_slots(num_slots)

    def observe(self, slots, deep, actions, rewards, dones) -> None:
        return None

    def _evaluate(self, inp: RouteInput) -> tuple[np.ndarray, np.ndarray]:
        n, width = inp.features.shape
        if width != self.config.obs_dim:
            raise RouterError(f"switcher expects {self.config.obs_dim} features (SwitcherConfig.obs_dim) "
                              f"but the input has {width}; use the feature encoding it was trained on")
        if np.any(inp.budget_left < 0):
            raise RouterError(f"budget_left must be >= 0, got {inp.budget_left.tolist()}")
        nb = np.full(n, self.budget) if self.budget is not None else inp.budget
        if self.config.use_budget and np.any(inp.budget_left > nb):
            raise RouterError(f"budget left {inp.budget_left.max()} exceeds the switcher's budget n = "
                              f"{nb.max()}: run the agent with the budget the switcher was trained for")
        size = 1 << max(n - 1, 0).bit_length()
        pad = size - n
        obs = np.pad(inp.features, ((0, pad), (0, 0)))
        cap = np.iinfo(np.int32).max
        b = np.pad(np.minimum(inp.budget_left, cap), (0, pad)).astype(np.int32)
        nn = np.pad(np.minimum(nb, cap), (0, pad)).astype(np.int32)
        q, g = self._run(self.params, jnp.asarray(obs), jnp.asarray(b), jnp.asarray(nn))
        return np.asarray(q)[:n], np.asarray(g)[:n].astype(bool)

    def q_values(self, inp: RouteInput) -> np.ndarray:
        """Unmasked Q-values ``(n, 2)``: column 0 = QUICK, 1 = DEEPTHINK."""
        return self._evaluate(inp)[0]

    def decide(self, inp: RouteInput) -> np.ndarray:
        return self._evaluate(inp)[1]
