"""The one rollout loop: scheduling, cost charging, branches on env copies, bad decisions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from londi_jax.agents.rollout import Decision, ModelCall, run_episodes
from londi_jax.envs.runner import ToyTextEnv
from londi_jax.utils.errors import LondiError


@dataclasses.dataclass(frozen=True)
class ToySpec:
    seed: int
    limit: int = 6
    kind: str = "toy"

    def make(self):
        env = ToyTextEnv(self.limit)
        return env, env.reset(self.seed)


def target(seed: int) -> int:
    return int(np.random.default_rng(seed).integers(-3, 4))


class WalkRight:
    """Always 'right'; QUICK is charged for every row, DEEPTHINK for even rows; branches 'left'."""

    def __init__(self, branch: bool = False):
        self.branch = branch
        self.batches, self.outcomes = [], []

    def start(self, num_slots):
        self.num_slots = num_slots

    def act(self, batch):
        self.batches.append(batch)
        n = batch.n
        even = [j for j in range(n) if j % 2 == 0]
        return Decision(["right"] * n, [ModelCall("quick", range(n), 1.0 * n, 10.0 * n),
                                         ModelCall("deep", even, 2.0, 100.0)],
                        np.array([j % 2 == 0 for j in range(n)]),
                        {j: "left" for j in range(n)} if self.branch else {})

    def observe(self, batch, decision, outcome):
        self.outcomes.append(outcome)


def test_episodes_in_spec_order_with_exact_lengths_and_costs():
    specs = [ToySpec(s) for s in range(7)]
    ctl = WalkRight()
    res = run_episodes(specs, ctl, num_envs=3, progress=False)
    assert ctl.num_slots == 3
    assert [e.seed for e in res.episodes] == list(range(7))
    for e in res.episodes:  # walking right reaches a target t > 0 after t steps, else the limit
        t = target(e.seed)
        assert (e.length, e.success) == ((t, True) if t > 0 else (6, False))
        assert e.quick_calls == e.length and e.quick_flops == pytest.approx(10.0 * e.length)
    assert res.env_steps == sum(e.length for e in res.episodes)
    assert sum(e.deep_flops for e in res.episodes) == pytest.approx(100.0 * res.model_calls["deep"])
    # slot i plays specs i, i + 3, ...: the first batch holds specs 0, 1, 2
    assert ctl.batches[0].owners.tolist() == [0, 1, 2] and ctl.batches[0].new_episode.all()
    # every state carries its history: observations = actions + 1
    for b in ctl.batches:
        for s in b.states:
            assert len(s.observations) == s.step + 1 and all(a == "right" for a in s.actions)


def test_branches_step_a_copy_of_the_env_and_leave_the_real_one_alone():
    specs = [ToySpec(s) for s in (3, 8)]
    ctl = WalkRight(branch=True)
    plain = run_episodes(specs, WalkRight(), num_envs=2, progress=False)
    res = run_episodes(specs, ctl, num_envs=2, progress=False)
    assert [e.to_json() for e in res.episodes] == [e.to_json() for e in plain.episodes]
    first = ctl.outcomes[0]
    for j, (alt, alt_state) in first.branches.items():
        taken = first.next_states[j]
        assert taken.current.text == "at 1 target " + str(target(specs[j].seed))
        assert alt_state.current.text == "at -1 target " + str(target(specs[j].seed))
        assert alt_state.actions == ("left",) and taken.actions == ("right",)


def test_bad_decisions_and_arguments_are_clear_errors():
    class Short(WalkRight):
        def act(self, batch):
            return Decision(["right"], [], np.zeros(1, bool))

    with pytest.raises(LondiError, match="1 actions for 2 envs"):
        run_episodes([ToySpec(0), ToySpec(1)], Short(), num_envs=2, progress=False)
    with pytest.raises(LondiError, match="no episodes"):
        run_episodes([], WalkRight(), progress=False)
    with pytest.raises(LondiError, match="num_envs"):
        run_episodes([ToySpec(0)], WalkRight(), num_envs=0, progress=False)


def test_sampling_never_picks_past_a_ragged_rows_own_candidates():
    from londi_jax.agents.policy import PolicyOutput

    # 10 equal candidates: their probabilities sum to 0.9999999999999999 in float64, so a draw near 1
    # runs past them in the cumulative sum; it must stop at the row's own last candidate, not padding
    lp = np.full((1, 12), -np.inf)
    lp[0, :10] = 0.0
    out = PolicyOutput(lp, np.zeros((1, 2), np.float32), 0.0, 0.0, [tuple("abcdefghij")])
    assert np.cumsum(np.full(10, 0.1))[-1] < 1.0

    class AlmostOne:
        def random(self, shape):
            return np.full(shape, 1.0)  # the top of the draw range, as a stub

    idx = out.actions(AlmostOne())
    assert idx.tolist() == [9] and out.action_strings(idx) == ["j"]


class BarrierEnv(ToyTextEnv):
    """A ToyTextEnv whose first step waits at a barrier shared by every slot: stepped one after
    another, the first env waits for the others in vain and the barrier breaks."""

    parallel_steps = True

    def __init__(self, limit, barrier, timeout):
        super().__init__(limit)
        self.barrier, self.timeout = barrier, timeout

    def step(self, action):
        if self.barrier is not None:
            barrier, self.barrier = self.barrier, None
            barrier.wait(timeout=self.timeout)
        return super().step(action)


@dataclasses.dataclass(frozen=True)
class BarrierSpec:
    seed: int
    barrier: object
    timeout: float = 60.0  # generous: concurrent steps meet at once even on a loaded machine
    kind: str = "toy"

    def make(self):
        env = BarrierEnv(6, self.barrier, self.timeout)
        return env, env.reset(self.seed)


def test_envs_that_step_in_other_processes_step_at_once_with_the_same_results():
    import threading

    seeds = (3, 8, 11)
    plain = run_episodes([ToySpec(s) for s in seeds], WalkRight(), num_envs=3, progress=False)
    # the three slots' first steps meet at one barrier: only concurrent steps pass it
    barrier = threading.Barrier(3)
    together = run_episodes([BarrierSpec(s, barrier) for s in seeds], WalkRight(), num_envs=3, progress=False)
    assert [e.to_json() for e in together.episodes] == [e.to_json() for e in plain.episodes]
    with pytest.raises(threading.BrokenBarrierError):  # stepped one by one, the first waits in vain
        run_episodes([BarrierSpec(s, threading.Barrier(3), timeout=2.0) for s in seeds], WalkRight(), num_envs=3,
                     progress=False, parallel=False)
