"""The LONDI agent over batched text environments, and switch-data collection.

Both are controllers of the one rollout loop (``agents.rollout.run_episodes``). At each step,
for the N envs still running: run QUICK once on all of their states (its scores give its action
and confidence, the same forward gives the embedding the switcher reads), let the router choose
per env, run DEEPTHINK once on only the envs switched to it; the loop steps every env with the
chosen model's action. Every model call's measured compute comes back with its result and is
charged to the episodes it served.

Routers that do not read QUICK's output (``needs_quick = False``: DEEPTHINK-only, random
switching) are charged only for the model that acts, so baselines are never billed for work
they would not do.

Episodes come from an explicit list of episode specs (:class:`EpisodeSpec` for BabyAI-Text);
slot ``i`` plays specs ``i, i + N, i + 2N, ...``, so every method is evaluated on exactly the
same episodes whatever their lengths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from londi_jax.agents.policy import LMPolicy, PolicyOutput, SwitchEncoder, confidence_features, encode
from londi_jax.agents.prompts import EpisodeState
from londi_jax.agents.rollout import (
    Decision,
    EnvPool,
    EpisodeRecord,
    EpisodeSource,
    ModelCall,
    RolloutResult,
    StepBatch,
    StepOutcome,
    run_episodes,
)
from londi_jax.agents.routers import RouteInput, Router
from londi_jax.envs.babyai_text.env import make_babyai_text
from londi_jax.switcher.offline import OfflineDataset, OfflineLogger
from londi_jax.utils.errors import LondiError

__all__ = ["EpisodeSpec", "episode_specs", "EpisodeRecord", "RolloutResult", "LondiAgent", "LondiController",
           "BudgetViolationError", "SwitchDataCollector", "collect_switch_data", "NO_BUDGET"]

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


class LondiController:
    """QUICK + DEEPTHINK + a router as a rollout controller (see ``LondiAgent``)."""

    def __init__(self, quick: LMPolicy, deep: LMPolicy, router: Router, *, budget: int | None,
                 sample_actions: bool, seed: int, encoder: SwitchEncoder | None):
        if getattr(quick, "mode", "score") != "score" and getattr(router, "reads_scores", False):
            raise LondiError(f"router {getattr(router, 'name', router)!r} reads QUICK's candidate scores and "
                             f"embedding, which a QUICK in {quick.mode!r} mode does not give; use mode='score' "
                             f"for QUICK (DEEPTHINK may generate)")
        self.quick, self.deep, self.router = quick, deep, router
        self.budget, self.seed, self.encoder = budget, seed, encoder
        self.rng = np.random.default_rng(seed) if sample_actions else None
        self.needs_quick = getattr(router, "needs_quick", True)
        self.peeks_deep = getattr(router, "peeks_deep", False)
        self.wants_expert = getattr(router, "reads_expert", False)  # the rollout loop fills StepBatch.experts

    def start(self, num_slots: int) -> None:
        self.router.reset(num_slots, self.seed)
        self.budget_left = np.full(num_slots, NO_BUDGET if self.budget is None else int(self.budget), np.int64)

    def act(self, batch: StepBatch) -> Decision:
        n, states = batch.n, batch.states
        self.budget_left[batch.slots[batch.new_episode]] = NO_BUDGET if self.budget is None else int(self.budget)
        budget_left = self.budget_left[batch.slots]
        can_call = budget_left > 0
        calls: list[ModelCall] = []
        q_out = None
        if self.needs_quick:
            q_out = self.quick(states)
            feats, q_lp = encode(self.encoder, q_out, states), q_out.logprobs
        else:
            feats = np.zeros((n, 0), np.float32)
            q_lp = np.zeros((n, max(len(self.quick.fmt.candidates(s)) for s in states)))
        top = q_out.action_strings(np.argmax(q_out.logprobs, axis=-1)) if q_out is not None else None
        peek = self.deep(states) if self.peeks_deep else None  # DEEPTHINK everywhere, charged where it acts
        inp = RouteInput(slots=batch.slots, quick_logprobs=q_lp, features=feats, step=batch.step,
                         quick_actions=top, missions=[s.mission for s in states],
                         deep_actions=peek.action_strings(np.argmax(peek.logprobs, axis=-1)) if peek is not None else None,
                         expert_actions=batch.experts,
                         max_steps=batch.max_steps, budget_left=budget_left,
                         budget=np.full(n, NO_BUDGET if self.budget is None else self.budget),
                         new_episode=batch.new_episode)
        deep = np.asarray(self.router.decide(inp), bool).reshape(n)
        if getattr(self.router, "respects_budget", False) and np.any(deep & ~can_call):
            raise BudgetViolationError(f"router {getattr(self.router, 'name', '?')} asked for DEEPTHINK with "
                                       f"no budget left in slots {batch.slots[deep & ~can_call].tolist()}")
        deep &= can_call
        idx = np.zeros(n, np.int64)
        actions: list[str] = [""] * n
        if q_out is not None:
            calls.append(ModelCall("quick", range(n), q_out.seconds, q_out.flops))
            idx[:] = q_out.actions(self.rng)
            actions = q_out.action_strings(idx)
        elif np.any(~deep):  # the router did not need QUICK: run it only where it acts
            rows = np.flatnonzero(~deep)
            out = self.quick([states[i] for i in rows])
            calls.append(ModelCall("quick", rows, out.seconds, out.flops))
            idx[rows] = out.actions(self.rng)
            for r, a in zip(rows, out.action_strings(idx[rows])):
                actions[r] = a
        if np.any(deep):
            rows = np.flatnonzero(deep)
            if peek is not None:  # the rows' share of the one call that ran on all of them
                d_out = peek.rows(rows)
                share = len(rows) / n
                calls.append(ModelCall("deep", rows, peek.seconds * share, peek.flops * share))
            else:
                d_out = self.deep([states[i] for i in rows])
                calls.append(ModelCall("deep", rows, d_out.seconds, d_out.flops))
            idx[rows] = d_out.actions(self.rng)
            for r, a in zip(rows, d_out.action_strings(idx[rows])):
                actions[r] = a
            self.budget_left[batch.slots[rows]] -= 1
        self._idx = idx
        return Decision(actions, calls, deep)

    def observe(self, batch: StepBatch, decision: Decision, outcome: StepOutcome) -> None:
        if hasattr(self.router, "observe_text"):
            self.router.observe_text(batch.slots, decision.deep, decision.actions,
                                     [st.observation for st in outcome.steps])
        self.router.observe(batch.slots, decision.deep, self._idx, outcome.rewards, outcome.dones)


class LondiAgent:
    """QUICK + DEEPTHINK + a router, stepping many text envs in lockstep (``rollout.run_episodes``).

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

    def run(self, specs: Sequence[EpisodeSource], num_envs: int = 32, *, progress: bool = True,
            desc: str | None = None, pool: EnvPool | None = None) -> RolloutResult:
        """Play every spec once; returns per-episode records (in spec order). ``pool``: envs kept
        between runs (``rollout.EnvPool``)."""
        ctl = LondiController(self.quick, self.deep, self.router, budget=self.budget,
                              sample_actions=self.sample_actions, seed=self.seed, encoder=self.encoder)
        return run_episodes(specs, ctl, num_envs, budget=self.budget, progress=progress,
                            desc=desc or f"{getattr(self.router, 'name', 'rollout')}", pool=pool)


class SwitchDataCollector:
    """Both models in every state, both outcomes logged (see ``collect_switch_data``)."""

    def __init__(self, quick: LMPolicy, deep: LMPolicy, deep_probs: Sequence[float], seed: int,
                 sample_actions: bool, encoder: SwitchEncoder | None):
        if getattr(quick, "mode", "score") != "score":
            raise LondiError(f"switch data reads QUICK's candidate scores and embedding in every state; a QUICK "
                             f"in {quick.mode!r} mode has none: use mode='score' for QUICK (DEEPTHINK may generate)")
        self.quick, self.deep, self.encoder = quick, deep, encoder
        self.deep_probs = list(deep_probs)
        self.rng = np.random.default_rng(seed)
        self.act_rng = np.random.default_rng(seed + 1) if sample_actions else None
        self.logger: OfflineLogger | None = None
        self.branched = 0
        self._next: dict[str, PolicyOutput] = {}  # QUICK's rows of the last step's next states, by prompt

    def start(self, num_slots: int) -> None:
        pass

    def _quick(self, states: Sequence[EpisodeState]) -> PolicyOutput:
        """QUICK's output in ``states``, reusing the rows scored for the next states of the
        previous step (a state reached by the action taken is scored there already): QUICK then
        runs once per state and branch, not twice."""
        prompts = [self.quick.fmt.prompt(s) for s in states]
        fresh = [j for j, p in enumerate(prompts) if p not in self._next]
        out = self.quick([states[j] for j in fresh]) if fresh else None
        rows = {j: out.rows([i]) for i, j in enumerate(fresh)}
        merged = PolicyOutput.concat([rows[j] if j in rows else self._next[p] for j, p in enumerate(prompts)])
        merged.seconds, merged.flops = (out.seconds, out.flops) if out is not None else (0.0, 0.0)
        return merged

    def act(self, batch: StepBatch) -> Decision:
        q_out, d_out = self._quick(batch.states), self.deep(batch.states)
        self._feats = encode(self.encoder, q_out, batch.states)
        self._conf = confidence_features(q_out.logprobs)
        if self.logger is None:
            self.logger = OfflineLogger(self._feats.shape[1])
        a_q, a_d = q_out.actions(self.act_rng), d_out.actions(self.act_rng)
        s_q, s_d = q_out.action_strings(a_q), d_out.action_strings(a_d)
        # behaviour switch: episode k calls DEEPTHINK with probability deep_probs[k % len]
        g = self.rng.random(batch.n) < np.array([self.deep_probs[k % len(self.deep_probs)] for k in batch.owners])
        taken = [sd if gj else sq for sq, sd, gj in zip(s_q, s_d, g)]
        branch = {j: (s_q[j] if g[j] else s_d[j]) for j in range(batch.n) if s_q[j] != s_d[j]}
        n = range(batch.n)
        return Decision(taken, [ModelCall("quick", n, q_out.seconds, q_out.flops),
                                ModelCall("deep", n, d_out.seconds, d_out.flops)], g, branch)

    def observe(self, batch: StepBatch, decision: Decision, outcome: StepOutcome) -> None:
        n = batch.n
        reward = np.zeros((n, 2), np.float32)
        term = np.zeros((n, 2), bool)
        nxt: list[list[EpisodeState]] = [[], []]
        for j in range(n):
            gi = int(decision.deep[j])
            out, state = outcome.steps[j], outcome.next_states[j]
            alt, alt_state = outcome.branches.get(j, (out, state))
            self.branched += int(j in outcome.branches)
            reward[j, gi], term[j, gi] = out.reward, out.terminated
            reward[j, 1 - gi], term[j, 1 - gi] = alt.reward, alt.terminated
            nxt[gi].append(state)
            nxt[1 - gi].append(alt_state)
        # features of both next states (one QUICK call; identical prompts are scored once)
        prompt_of = [[self.quick.fmt.prompt(s) for s in nxt[b]] for b in (0, 1)]
        state_of = {p: s for b in (0, 1) for p, s in zip(prompt_of[b], nxt[b])}
        uniq = sorted(state_of)
        pos = {p: i for i, p in enumerate(uniq)}
        nq = self.quick([state_of[p] for p in uniq])
        nfeat = np.stack([encode(self.encoder, nq.rows([pos[p] for p in prompt_of[b]]), nxt[b]) for b in (0, 1)],
                         axis=1)
        self._next = {p: nq.rows([pos[p]]) for p in uniq}
        self.logger.record(self._feats, reward, nfeat, term, self._conf)


def collect_switch_data(quick: LMPolicy, deep: LMPolicy, specs: Sequence[EpisodeSource], *,
                        num_envs: int = 32, deep_probs: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                        seed: int = 0, sample_actions: bool = False, progress: bool = True,
                        encoder: SwitchEncoder | None = None, pool: EnvPool | None = None
                        ) -> tuple[OfflineDataset, dict[str, Any]]:
    """Log both models' outcomes in every visited state (for offline switcher training).

    In each state QUICK and DEEPTHINK both score the actions; when their actions differ the env
    is copied and the copy steps with the action not taken (a rollout branch), so reward,
    termination and next-state features are known for both switches (``switcher.offline``
    format). The trajectory follows a behaviour switch that calls DEEPTHINK with probability
    ``deep_probs[k % len]`` in episode k (a spread of behaviours covers the states both good and
    poor switches visit). Returns the dataset and collection statistics (states, branches,
    episodes, successes, model calls, seconds).
    """
    ctl = SwitchDataCollector(quick, deep, deep_probs, seed, sample_actions, encoder)
    q0, d0 = quick.calls, deep.calls
    res = run_episodes(specs, ctl, num_envs, progress=progress, desc="collect switch data", pool=pool)
    stats = {"states": res.env_steps, "branched": ctl.branched, "episodes": len(res.episodes),
             "successes": sum(int(r.success) for r in res.episodes), "seconds": res.wall_seconds,
             "quick_calls": quick.calls - q0, "deep_calls": deep.calls - d0}
    return ctl.logger.dataset(), stats
