"""The LONDI agent's routing and accounting: only switched envs reach DEEPTHINK, call counts and
budgets are exact, and every method plays the same episodes."""

from __future__ import annotations

import numpy as np
import pytest

from londi_jax.agents.londi import BudgetViolationError, LondiAgent, episode_specs
from londi_jax.agents.policy import PolicyOutput
from londi_jax.agents.prompts import GlamFormat
from londi_jax.agents.routers import OracleRouter
from londi_jax.envs.babyai_text.bot import expert_episode
from londi_jax.envs.babyai_text.prompt import ACTIONS

LEVEL_KW = {"room_size": 5, "num_dists": 1}


class FakePolicy:
    """Deterministic stand-in for an LMPolicy: prefers one action, records every prompt it scores."""

    fmt = GlamFormat()

    def __init__(self, name: str, favourite: int, flops_per_prompt: float):
        self.name, self.favourite, self.fpp = name, favourite, flops_per_prompt
        self.seen: list[str] = []
        self.calls = 0
        self.batch_sizes: list[int] = []

    def __call__(self, states):
        prompts = [self.fmt.prompt(s) for s in states]
        self.calls += 1
        self.seen += prompts
        self.batch_sizes.append(len(prompts))
        n = len(prompts)
        lp = np.full((n, len(ACTIONS)), -5.0)
        lp[:, self.favourite] = -0.1
        # a prompt-dependent embedding so routers can key on it
        emb = np.array([[len(p) % 7, hash(p) % 3] for p in prompts], np.float32).reshape(n, 2)
        return PolicyOutput(lp, emb, seconds=0.001 * n, flops=self.fpp * n, candidates=[ACTIONS] * n)


class ParityRouter:
    """Calls DEEPTHINK on even steps of each episode (a known, state-dependent pattern)."""

    name = "parity"
    respects_budget = False
    needs_quick = True

    def __init__(self):
        self.decisions: list[tuple[np.ndarray, np.ndarray]] = []

    def reset(self, num_slots, seed):
        pass

    def decide(self, inp):
        g = inp.step % 2 == 0
        self.decisions.append((inp.slots.copy(), g.copy()))
        return g

    def observe(self, slots, deep, actions, rewards, dones):
        pass


def test_only_switched_envs_reach_deepthink_and_counts_are_exact():
    specs = episode_specs("BabyAI-MixedTrainLocal-v0", 6, seed=3, kinds=["goto", "pickup"], **LEVEL_KW)
    quick, deep = FakePolicy("q", 0, 10.0), FakePolicy("d", 1, 100.0)  # QUICK turns left, DEEPTHINK right
    router = ParityRouter()
    res = LondiAgent(quick, deep, router).run(specs, num_envs=4, progress=False)
    assert len(res.episodes) == 6
    total_steps = sum(e.length for e in res.episodes)
    switched = sum(int(g.sum()) for _, g in router.decisions)
    # QUICK scores every active env every step; DEEPTHINK exactly the switched ones
    assert len(quick.seen) == total_steps == res.env_steps
    assert len(deep.seen) == switched
    for e in res.episodes:  # even steps 0, 2, 4, ... went to DEEPTHINK
        assert e.deep_calls == (e.length + 1) // 2
        assert e.quick_calls == e.length
        assert e.quick_flops == pytest.approx(10.0 * e.length)
        assert e.deep_flops == pytest.approx(100.0 * e.deep_calls)
    # one batched DEEPTHINK call per step with any switch, never more rows than switched envs
    assert sum(deep.batch_sizes) == switched and max(quick.batch_sizes) <= 4


class GreedyRouter(ParityRouter):
    name = "always"

    def decide(self, inp):
        return np.ones(len(inp.slots), bool)


def test_budget_is_enforced_and_a_promising_router_that_breaks_it_raises():
    specs = episode_specs("BabyAI-MixedTrainLocal-v0", 4, seed=0, kinds=["goto"], **LEVEL_KW)
    quick, deep = FakePolicy("q", 0, 1.0), FakePolicy("d", 0, 1.0)  # both turn left forever: time-outs
    res = LondiAgent(quick, deep, GreedyRouter(), budget=3).run(specs, num_envs=2, progress=False)
    for e in res.episodes:
        assert e.deep_calls == 3 and e.length == 25  # 5x5 room: max_steps = 25, calls masked after 3
        assert not e.violated
    promising = GreedyRouter()
    promising.respects_budget = True
    with pytest.raises(BudgetViolationError, match="no budget left"):
        LondiAgent(FakePolicy("q", 0, 1.0), FakePolicy("d", 0, 1.0), promising, budget=1).run(
            specs, num_envs=2, progress=False)


class NoQuickRouter(GreedyRouter):
    needs_quick = False

    def decide(self, inp):
        assert inp.features.shape[1] == 0  # it promised not to read QUICK
        return inp.step % 3 == 0


def test_routers_that_ignore_quick_are_not_charged_for_it():
    specs = episode_specs("BabyAI-MixedTrainLocal-v0", 3, seed=1, kinds=["goto"], **LEVEL_KW)
    quick, deep = FakePolicy("q", 0, 1.0), FakePolicy("d", 0, 1.0)
    res = LondiAgent(quick, deep, NoQuickRouter()).run(specs, num_envs=3, progress=False)
    for e in res.episodes:
        assert e.quick_calls + e.deep_calls == e.length  # exactly one model per step
        assert e.deep_calls == len(range(0, e.length, 3))


def test_same_episodes_whatever_the_method():
    specs = episode_specs("BabyAI-MixedTrainLocal-v0", 5, seed=7, kinds=["goto", "pickup"], **LEVEL_KW)
    a = LondiAgent(FakePolicy("q", 2, 1.0), FakePolicy("d", 1, 1.0), ParityRouter()).run(specs, 2, progress=False)
    b = LondiAgent(FakePolicy("q", 0, 1.0), FakePolicy("d", 0, 1.0), GreedyRouter()).run(specs, 3, progress=False)
    assert [(e.seed, e.kind) for e in a.episodes] == [(e.seed, e.kind) for e in b.episodes] == \
        [(s.seed, s.kind) for s in specs]


def test_bad_arguments():
    with pytest.raises(Exception, match="no episodes"):
        LondiAgent(FakePolicy("q", 0, 1.0), FakePolicy("d", 0, 1.0), GreedyRouter()).run([], 2)
    with pytest.raises(Exception, match="budget must be"):
        LondiAgent(FakePolicy("q", 0, 1.0), FakePolicy("d", 0, 1.0), GreedyRouter(), budget=-1)


def test_switch_data_logs_both_outcomes_consistently_and_quick_confidence():
    from londi_jax.agents.londi import collect_switch_data
    from londi_jax.agents.policy import confidence_features

    specs = episode_specs("BabyAI-MixedTrainLocal-v0", 2, seed=4, kinds=["goto"], **LEVEL_KW)
    quick, deep = FakePolicy("q", 0, 1.0), FakePolicy("d", 2, 1.0)  # turn left vs go forward: always differ
    ds, stats = collect_switch_data(quick, deep, specs, num_envs=1, deep_probs=(0.0, 1.0), progress=False)
    n = ds.size
    assert stats["states"] == n == stats["branched"] and stats["episodes"] == 2
    lp = np.full((1, len(ACTIONS)), -5.0)
    lp[0, 0] = -0.1
    np.testing.assert_allclose(np.asarray(ds.quick_confidence), np.repeat(confidence_features(lp), n, 0))
    # the taken branch's next state is the next logged state (episode 0 follows QUICK, episode 1 DEEPTHINK)
    length0 = next(i for i in range(n) if np.asarray(ds.obs)[i, -1] == 0.0 and i > 0)  # step fraction resets
    for i in range(n - 1):
        if i + 1 == length0:
            continue
        g = 0 if i < length0 else 1
        np.testing.assert_array_equal(np.asarray(ds.next_obs)[i, g], np.asarray(ds.obs)[i + 1])
    # turning left never reaches a goal: QUICK's column earns nothing
    assert float(np.asarray(ds.reward)[:, 0].max()) == 0.0


def test_switch_data_scores_each_reached_state_with_quick_once():
    """QUICK's rows for the next states of a step serve the next step's decision: the data is what
    scoring every state afresh gives, with env_steps - episodes fewer QUICK prompts."""
    from londi_jax.agents.londi import SwitchDataCollector, collect_switch_data
    from londi_jax.agents.rollout import run_episodes

    specs = episode_specs("BabyAI-MixedTrainLocal-v0", 3, seed=7, kinds=["goto"], **LEVEL_KW)
    quick, deep = FakePolicy("q", 0, 1.0), FakePolicy("d", 2, 1.0)
    ds, stats = collect_switch_data(quick, deep, specs, num_envs=2, deep_probs=(0.0, 0.5, 1.0), progress=False)

    class Afresh(SwitchDataCollector):
        def _quick(self, states):
            return self.quick(states)

    quick2 = FakePolicy("q", 0, 1.0)
    ctl = Afresh(quick2, FakePolicy("d", 2, 1.0), (0.0, 0.5, 1.0), 0, False, None)
    run_episodes(specs, ctl, 2, progress=False)
    ref = ctl.logger.dataset()
    for field in ("obs", "next_obs", "reward", "terminated", "quick_confidence"):
        np.testing.assert_array_equal(np.asarray(getattr(ds, field)), np.asarray(getattr(ref, field)))
    assert len(quick2.seen) - len(quick.seen) == stats["states"] - stats["episodes"] > 0


class RecordingOracle(OracleRouter):
    def __init__(self):
        self.seen: list[tuple[list, list, list, np.ndarray]] = []

    def decide(self, inp):
        g = super().decide(inp)
        self.seen.append((list(inp.quick_actions), list(inp.deep_actions), list(inp.expert_actions), g))
        return g


def test_the_oracle_switch_sees_the_bots_action_and_pays_only_where_deepthink_acts():
    specs = episode_specs("BabyAI-MixedTrainLocal-v0", 5, seed=11, kinds=["goto", "pickup"], **LEVEL_KW)
    quick, deep = FakePolicy("q", 0, 10.0), FakePolicy("d", 1, 100.0)  # QUICK turns left, DEEPTHINK right
    oracle = RecordingOracle()
    res = LondiAgent(quick, deep, oracle).run(specs, num_envs=2, progress=False)
    seen_deep = [g for _, _, _, g in oracle.seen]
    experts = [e for _, _, es, _ in oracle.seen for e in es]
    switched = int(sum(g.sum() for g in seen_deep))
    # DEEPTHINK ran in every state (to show the oracle its action), and was called exactly where
    # the bot said "turn right" (QUICK's "turn left" wrong, DEEPTHINK's right)
    assert len(deep.seen) == res.env_steps == len(experts)
    assert switched == sum(e == ACTIONS[1] for e in experts) > 0
    assert sum(e.deep_calls for e in res.episodes) == switched
    for e in res.episodes:  # charged its share of the peeking calls: the per-row cost, only where it acted
        assert e.deep_flops == pytest.approx(100.0 * e.deep_calls)
        assert e.quick_calls == e.length
    # the expert it saw is the bot's: at each episode's first state, the bot's first action
    first = expert_episode("BabyAI-MixedTrainLocal-v0", specs[0].seed, kind=specs[0].kind, **LEVEL_KW)
    assert oracle.seen[0][2][0] == first.steps[0].action
