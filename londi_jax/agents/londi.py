"""The LONDI agent over batched BabyAI-Text environments.

At each step, for the N envs still running: build the GLAM prompts, run QUICK once on all of
them (its scores give its action and confidence, the same forward gives the embedding the
switcher reads), let the router choose per env, run DEEPTHINK once on only the envs switched to
it, step every env with the chosen model's action. Every model call and its measured compute is
counted per episode.

Routers that do not read QUICK's output (``needs_quick = False``: DEEPTHINK-only, random
switching) are charged only for the model that acts, so baselines are never billed for work
they would not do.

Episodes come from an explicit list of :class:`EpisodeSpec`; slot ``i`` plays specs
``i, i + N, i + 2N, ...``, so every method is evaluated on exactly the same episodes whatever
their lengths.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from londi_jax.agents.policy import LMPolicy, PolicyOutput, SwitchEncoder, switch_features
from londi_jax.agents.routers import RouteInput, Router
from londi_jax.envs.babyai_text.env import make_babyai_text
from londi_jax.envs.babyai_text.prompt import ACTIONS
from londi_jax.switcher.offline import OfflineDataset, OfflineLogger
from londi_jax.utils.errors import LondiError

__all__ = ["EpisodeSpec", "episode_specs", "EpisodeRecord", "RolloutResult", "LondiAgent", "BudgetViolationError",
           "collect_switch_data", "NO_BUDGET"]

NO_BUDGET = 1 << 30  # "unbudgeted" in int arrays


class BudgetViolationError(LondiError):
    """A router that promises to respect the budget asked for a call with none left."""


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    """One evaluation episode: level, seed (layout) and Mixed task kind."""

    level: str
    seed: int
    kind: str | None = None
    level_kwargs: tuple[tuple[str, Any], ...] = ()

    def make(self):
        kw = dict(self.level_kwargs)
        if self.kind is not None:
            kw["kind"] = self.kind
        env = make_babyai_text(self.level, seed=self.seed, **kw)
        return env, env.reset(seed=self.seed)


def episode_specs(level: str, episodes: int, seed: int, kinds: Sequence[str] | None = None,
                  **level_kwargs: Any) -> list[EpisodeSpec]:
    """``episodes`` specs with seeds ``seed, seed+1, ...`` and kinds assigned round-robin."""
    kw = tuple(sorted(level_kwargs.items()))
    ks = list(kinds) if kinds else [None]
    return [EpisodeSpec(level, seed + k, ks[k % len(ks)], kw) for k in range(episodes)]


@dataclasses.dataclass
class EpisodeRecord:
    """Outcome and cost of one episode."""

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
    """All episodes of a rollout, with totals."""

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
        }


class _Slot:
    """One env slot: the current episode's env, prompt and running record."""

    def __init__(self, spec: EpisodeSpec, budget: int | None):
        self.env, first = spec.make()
        self.prompt = first.info["prompt"]
        self.max_steps = int(first.info["max_steps"])
        self.record = EpisodeRecord(kind=str(first.info.get("task_kind") or spec.kind or ""), seed=spec.seed,
                                    success=False, ret=0.0, length=0, budget=budget)
        self.budget_left = NO_BUDGET if budget is None else int(budget)
        self.new = True


class _Slots:
    """Episode scheduling shared by rollouts and data collection: ``min(num_envs, len(specs))``
    slots, slot ``i`` playing specs ``i, i + N, ...`` as its episodes end."""

    def __init__(self, specs: Sequence[EpisodeSpec], num_envs: int, budget: int | None):
        self.specs, self.budget = specs, budget
        self.queue = list(range(len(specs)))
        n = min(num_envs, len(specs))
        self.slots: list[_Slot | None] = [None] * n
        self.owner = [-1] * n  # index of the spec each slot is playing
        for i in range(n):
            self._start(i)

    def _start(self, i: int) -> None:
        self.owner[i] = self.queue.pop(0)
        self.slots[i] = _Slot(self.specs[self.owner[i]], self.budget)

    def __len__(self) -> int:
        return len(self.slots)

    def __bool__(self) -> bool:
        return any(s is not None for s in self.slots)

    def active(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s is not None]

    def finish(self, i: int) -> tuple[int, EpisodeRecord]:
        """Close slot ``i``'s episode and start its next spec (if any); returns (spec index, record)."""
        slot, k = self.slots[i], self.owner[i]
        slot.env.close()
        if self.queue:
            self._start(i)
        else:
            self.slots[i] = None
        return k, slot.record


def _bill(slots: Sequence[_Slot], rows: Sequence[int], out: PolicyOutput, model: str) -> None:
    """Charge one batched call of ``model`` ('quick' or 'deep') evenly to the episodes of ``rows``."""
    n = max(len(rows), 1)
    for i in rows:
        rec = slots[i].record
        setattr(rec, f"{model}_calls", getattr(rec, f"{model}_calls") + 1)
        setattr(rec, f"{model}_flops", getattr(rec, f"{model}_flops") + out.flops / n)
        setattr(rec, f"{model}_seconds", getattr(rec, f"{model}_seconds") + out.seconds / n)


def encode(encoder: SwitchEncoder | None, out: PolicyOutput, prompts: Sequence[str], step: np.ndarray,
           max_steps: np.ndarray) -> np.ndarray:
    """Switcher features of a QUICK call (``encoder`` or, by default, QUICK's own features)."""
    if encoder is None:
        return switch_features(out, step, max_steps)
    return encoder(out, prompts, step, max_steps)


class LondiAgent:
    """QUICK + DEEPTHINK + a router, stepping many BabyAI-Text envs in lockstep.

    ``budget``: LONDI-B's per-episode cap on DEEPTHINK calls (``None`` = no cap). The agent
    always masks calls once the budget is spent; a router with ``respects_budget = True`` that
    still asks is a bug and raises :class:`BudgetViolationError`.
    ``sample_actions``: sample each model's action from softmax(scores) instead of argmax.
    ``encoder``: the switcher's state encoder (``policy.SwitchEncoder``); default QUICK's features.
    """

    def __init__(self, quick: LMPolicy, deep: LMPolicy, router: Router, *, budget: int | None = None,
                 sample_actions: bool = False, seed: int = 0, encoder: SwitchEncoder | None = None):
        if budget is not None and budget < 0:
            raise LondiError(f"budget must be >= 0 or None, got {budget}")
        self.quick, self.deep, self.router = quick, deep, router
        self.budget = budget
        self.sample_actions = sample_actions
        self.seed = seed
        self.encoder = encoder

    def run(self, specs: Sequence[EpisodeSpec], num_envs: int = 32, *, progress: bool = True,
            desc: str | None = None) -> RolloutResult:
        """Play every spec once; returns per-episode records (in spec order)."""
        if not specs:
            raise LondiError("no episodes to run; give at least one EpisodeSpec")
        if num_envs < 1:
            raise LondiError(f"num_envs must be >= 1, got {num_envs}")
        rng = np.random.default_rng(self.seed) if self.sample_actions else None
        needs_quick = getattr(self.router, "needs_quick", True)
        slots = _Slots(specs, num_envs, self.budget)
        self.router.reset(len(slots), self.seed)
        records: list[EpisodeRecord | None] = [None] * len(specs)
        env_steps = 0
        t0 = time.perf_counter()
        bar = tqdm(total=len(specs), desc=desc or f"{getattr(self.router, 'name', 'rollout')}", unit="ep",
                   disable=not progress, leave=False)
        while slots:
            active = np.array(slots.active())
            act_slots = [slots.slots[i] for i in active]
            prompts = [s.prompt for s in act_slots]
            n = len(active)
            step = np.array([s.record.length for s in act_slots])
            max_steps = np.array([s.max_steps for s in act_slots])
            budget_left = np.array([s.budget_left for s in act_slots])
            can_call = budget_left > 0
            q_out = None
            if needs_quick:
                q_out = self.quick(prompts)
                feats = encode(self.encoder, q_out, prompts, step, max_steps)
                q_lp = q_out.logprobs
            else:
                feats = np.zeros((n, 0), np.float32)
                q_lp = np.zeros((n, len(ACTIONS)))
            inp = RouteInput(slots=active, quick_logprobs=q_lp, features=feats, step=step, max_steps=max_steps,
                             budget_left=budget_left,
                             budget=np.full(n, NO_BUDGET if self.budget is None else self.budget),
                             new_episode=np.array([s.new for s in act_slots]))
            deep = np.asarray(self.router.decide(inp), bool).reshape(n)
            if getattr(self.router, "respects_budget", False) and np.any(deep & ~can_call):
                raise BudgetViolationError(f"router {getattr(self.router, 'name', '?')} asked for DEEPTHINK with "
                                           f"no budget left in slots {active[deep & ~can_call].tolist()}")
            deep &= can_call
            actions = np.zeros(n, np.int64)
            if q_out is not None:
                _bill(act_slots, range(n), q_out, "quick")
                actions[:] = q_out.actions(rng)
            elif np.any(~deep):  # the router did not need QUICK: run it only where it acts
                idx = np.flatnonzero(~deep)
                out = self.quick([prompts[i] for i in idx])
                _bill(act_slots, idx, out, "quick")
                actions[idx] = out.actions(rng)
            if np.any(deep):
                idx = np.flatnonzero(deep)
                d_out = self.deep([prompts[i] for i in idx])
                _bill(act_slots, idx, d_out, "deep")
                actions[idx] = d_out.actions(rng)
                for i in idx:
                    act_slots[i].budget_left -= 1
            rewards = np.zeros(n)
            dones = np.zeros(n, bool)
            for j, s in enumerate(act_slots):
                out = s.env.step(ACTIONS[int(actions[j])])
                s.new = False
                s.record.length += 1
                s.record.ret += out.reward
                rewards[j], dones[j] = out.reward, out.done
                s.prompt = out.info["prompt"]
                if out.done:
                    s.record.success = bool(out.terminated and out.reward > 0)
            env_steps += n
            self.router.observe(active, deep, actions, rewards, dones)
            for j, i in enumerate(active):
                if dones[j]:
                    k, records[k] = slots.finish(int(i))
                    bar.update(1)
        bar.close()
        return RolloutResult([r for r in records if r is not None], env_steps, time.perf_counter() - t0,
                             {"quick": self.quick.calls, "deep": self.deep.calls})


def collect_switch_data(quick: LMPolicy, deep: LMPolicy, specs: Sequence[EpisodeSpec], *,
                        num_envs: int = 32, deep_probs: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                        seed: int = 0, sample_actions: bool = False, progress: bool = True,
                        encoder: SwitchEncoder | None = None) -> tuple[OfflineDataset, dict[str, Any]]:
    """Log both models' outcomes in every visited state (for offline switcher training).

    In each state QUICK and DEEPTHINK both score the actions; when their actions differ the env
    is copied and the copy steps with the action not taken, so reward, termination and next-state
    features are known for both switches (``switcher.offline`` format). The trajectory follows a
    behaviour switch that calls DEEPTHINK with probability ``deep_probs[k % len]`` in episode k
    (a spread of behaviours covers the states both good and poor switches visit).
    Returns the dataset and collection statistics (states, branches, model calls, seconds).
    """
    rng = np.random.default_rng(seed)
    act_rng = np.random.default_rng(seed + 1) if sample_actions else None
    logger: OfflineLogger | None = None
    slots = _Slots(specs, num_envs, None)
    stats = {"states": 0, "branched": 0, "episodes": 0, "successes": 0, "t0": time.perf_counter()}
    bar = tqdm(total=len(specs), desc="collect switch data", unit="ep", disable=not progress, leave=False)
    while slots:
        active = slots.active()
        act = [slots.slots[i] for i in active]
        prompts = [s.prompt for s in act]
        step = np.array([s.record.length for s in act])
        max_steps = np.array([s.max_steps for s in act])
        q_out = quick(prompts)
        d_out = deep(prompts)
        feats = encode(encoder, q_out, prompts, step, max_steps)
        if logger is None:
            logger = OfflineLogger(feats.shape[1])
        a_q, a_d = q_out.actions(act_rng), d_out.actions(act_rng)
        # behaviour switch: episode k calls DEEPTHINK with probability deep_probs[k % len]
        g = rng.random(len(act)) < np.array([deep_probs[slots.owner[i] % len(deep_probs)] for i in active])
        reward = np.zeros((len(act), 2), np.float32)
        term = np.zeros((len(act), 2), bool)
        next_prompts: list[list[str]] = [[], []]
        next_steps = step + 1
        done_exec = np.zeros(len(act), bool)
        for j, s in enumerate(act):
            other = None
            if a_q[j] != a_d[j]:
                other = copy.deepcopy(s.env)  # branch before stepping: the action not taken
            taken = int(a_d[j] if g[j] else a_q[j])
            out = s.env.step(ACTIONS[taken])
            gi = int(g[j])
            reward[j, gi], term[j, gi] = out.reward, out.terminated
            next_prompts[gi].append(out.info["prompt"])
            if other is not None:
                alt = other.step(ACTIONS[int(a_q[j] if g[j] else a_d[j])])
                reward[j, 1 - gi], term[j, 1 - gi] = alt.reward, alt.terminated
                next_prompts[1 - gi].append(alt.info["prompt"])
                other.close()
                stats["branched"] += 1
            else:
                reward[j, 1 - gi], term[j, 1 - gi] = out.reward, out.terminated
                next_prompts[1 - gi].append(out.info["prompt"])
            s.record.length += 1
            s.prompt = out.info["prompt"]
            if out.done:
                done_exec[j] = True
                s.record.success = bool(out.terminated and out.reward > 0)
        # features of both next states (one QUICK call; identical prompts are scored once)
        uniq = sorted(set(next_prompts[0]) | set(next_prompts[1]))
        pos = {p: i for i, p in enumerate(uniq)}
        nq = quick(uniq)
        order = [np.array([pos[p] for p in next_prompts[b]]) for b in (0, 1)]
        nfeat = np.stack([encode(encoder, PolicyOutput(nq.logprobs[o], nq.embedding[o], 0.0, 0.0),
                                 next_prompts[b], next_steps, max_steps) for b, o in enumerate(order)], axis=1)
        logger.record(feats, reward, nfeat, term)
        stats["states"] += len(act)
        for j, i in enumerate(active):
            if done_exec[j]:
                _, record = slots.finish(i)
                stats["episodes"] += 1
                stats["successes"] += int(record.success)
                bar.update(1)
    bar.close()
    stats["seconds"] = time.perf_counter() - stats.pop("t0")
    stats["quick_calls"], stats["deep_calls"] = quick.calls, deep.calls
    return logger.dataset(), stats

