"""Switch routers: exact decisions on hand-built inputs, rule by rule for SwiftSage, and the learned
switch against an independent numpy forward pass of its Q-network."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from londi_jax.agents.routers import (
    ConfidenceRouter,
    DeepthinkOnly,
    OracleRouter,
    QuickOnly,
    RandomRouter,
    RouteInput,
    Router,
    RouterError,
    SwiftSageRouter,
    SwitcherRouter,
    calibrate_threshold,
    confidence,
)
from londi_jax.switcher.config import SwitcherConfig
from londi_jax.switcher.network import init_params
from londi_jax.utils.errors import LondiError, UnknownNameError

K = 6
BIG = 1 << 30


def make_input(n=None, *, slots=None, logprobs=None, features=None, step=0, max_steps=64,
               budget_left=BIG, budget=BIG, new_episode=False) -> RouteInput:
    slots = np.arange(n) if slots is None else np.asarray(slots)
    n = len(slots)
    full = lambda v: np.full(n, v) if np.ndim(v) == 0 else np.asarray(v)  # noqa: E731
    return RouteInput(
        slots=slots,
        quick_logprobs=np.zeros((n, K)) if logprobs is None else logprobs,
        features=np.zeros((n, 0), np.float32) if features is None else features,
        step=full(step), max_steps=full(max_steps), budget_left=full(budget_left), budget=full(budget),
        new_episode=full(new_episode))


def test_every_router_follows_the_protocol():
    cfg = SwitcherConfig(obs_dim=3, hidden=(8,))
    routers = [QuickOnly(), DeepthinkOnly(), RandomRouter(0.5), ConfidenceRouter(0.2), SwiftSageRouter(),
               SwitcherRouter(cfg, init_params(cfg, jax.random.key(0)))]
    for r in routers:
        assert isinstance(r, Router), r
        assert isinstance(r.name, str) and isinstance(r.respects_budget, bool)
    assert [r.respects_budget for r in routers] == [False] * 6  # only a LONDI-B switcher promises it
    assert SwitcherRouter(SwitcherConfig(obs_dim=3, use_budget=True),
                          init_params(SwitcherConfig(obs_dim=3, use_budget=True), jax.random.key(0))).respects_budget
    # routers that do not read QUICK's output let the agent skip QUICK where DEEPTHINK acts
    assert not DeepthinkOnly.needs_quick and not RandomRouter.needs_quick
    assert QuickOnly.needs_quick and ConfidenceRouter.needs_quick and SwiftSageRouter.needs_quick


def test_constant_routers():
    inp = make_input(5)
    for r, want in ((QuickOnly(), False), (DeepthinkOnly(), True)):
        r.reset(5, 0)
        out = r.decide(inp)
        assert out.dtype == bool and out.shape == (5,) and np.all(out == want)


def test_route_input_rejects_mismatched_rows():
    with pytest.raises(RouterError, match=r"quick_logprobs must have shape \(n, .\) with n = 3"):
        RouteInput(slots=np.arange(3), quick_logprobs=np.zeros((2, K)), features=np.zeros((3, 0)),
                   step=np.zeros(3), max_steps=np.zeros(3), budget_left=np.zeros(3), budget=np.zeros(3),
                   new_episode=np.zeros(3, bool))
    with pytest.raises(RouterError, match=r"budget_left must have one entry per slot \(3\)"):
        make_input(3, budget_left=np.zeros(2))


# ----------------------------------------------------------------------------- random


def test_random_router_rate_and_reproducibility():
    p, calls, n = 0.3, 200, 50
    r = RandomRouter(p)
    r.reset(n, seed=7)
    draws = np.stack([r.decide(make_input(n)) for _ in range(calls)])
    assert draws.dtype == bool
    rate = draws.mean()
    assert abs(rate - p) < 4.5 * np.sqrt(p * (1 - p) / draws.size)  # 4.5 sigma
    # the same seed replays the same decisions; another seed gives different ones
    r.reset(n, seed=7)
    np.testing.assert_array_equal(np.stack([r.decide(make_input(n)) for _ in range(calls)]), draws)
    r.reset(n, seed=8)
    assert not np.array_equal(np.stack([r.decide(make_input(n)) for _ in range(calls)]), draws)
    for q, want in ((0.0, False), (1.0, True)):
        rr = RandomRouter(q)
        rr.reset(n, 0)
        assert np.all(rr.decide(make_input(n)) == want)


def test_random_router_errors():
    with pytest.raises(RouterError, match=r"p in \[0, 1\], got 1.5"):
        RandomRouter(1.5)
    with pytest.raises(RouterError, match="before reset"):
        RandomRouter(0.5).decide(make_input(2))


# ----------------------------------------------------------------------------- confidence

# QUICK's policies, by hand: log-probabilities of 4 actions (softmax gives back these p exactly)
PROBS = np.array([
    [0.70, 0.10, 0.10, 0.10],  # margin 0.60, max 0.70
    [0.40, 0.35, 0.15, 0.10],  # margin 0.05, max 0.40
    [0.25, 0.25, 0.25, 0.25],  # margin 0,    max 0.25, entropy-confidence 0
    [0.10, 0.50, 0.30, 0.10],  # margin 0.20, max 0.50
])


def _entropy_conf(p):
    return 1.0 - (-(p * np.log(p)).sum(-1)) / np.log(p.shape[-1])


def test_confidence_measures_by_hand():
    lp = np.log(PROBS) + 3.0  # scores are unnormalised: a constant shift changes nothing
    np.testing.assert_allclose(confidence(lp, "margin"), [0.60, 0.05, 0.0, 0.20], atol=1e-12)
    np.testing.assert_allclose(confidence(lp, "max_prob"), [0.70, 0.40, 0.25, 0.50], atol=1e-12)
    ent = confidence(lp, "entropy")
    np.testing.assert_allclose(ent, _entropy_conf(PROBS), atol=1e-12)
    assert ent[2] == pytest.approx(0.0, abs=1e-12)
    # all three agree on which state is the least confident (the uniform one)
    for m in ("margin", "max_prob", "entropy"):
        assert np.argmin(confidence(lp, m)) == 2
    # a near-deterministic policy is fully confident in every measure
    sure = np.array([[0.0, -800.0, -800.0, -800.0]])
    for m in ("margin", "max_prob", "entropy"):
        assert confidence(sure, m)[0] == pytest.approx(1.0, abs=1e-9)


def test_threshold_router_calls_exactly_the_low_confidence_rows():
    lp = np.log(PROBS)
    inp = make_input(logprobs=lp, slots=[3, 0, 1, 2])
    r = ConfidenceRouter(0.3, "margin")
    r.reset(4, 0)
    np.testing.assert_array_equal(r.decide(inp), [False, True, True, True])
    np.testing.assert_array_equal(ConfidenceRouter(0.45, "max_prob").decide(inp), [False, True, True, False])
    # strictly below: a confidence equal to the threshold keeps QUICK
    np.testing.assert_array_equal(ConfidenceRouter(0.2, "margin").decide(inp), [False, True, True, False])
    thr = float(_entropy_conf(PROBS[1]))
    np.testing.assert_array_equal(ConfidenceRouter(thr + 1e-9, "entropy").decide(inp), [False, True, True, False])


def test_calibrate_threshold_hits_the_target_on_distinct_confidences():
    conf = np.random.default_rng(0).permutation(np.linspace(0.0, 0.9, 10))
    for k in range(11):
        t = calibrate_threshold(conf, k / 10)
        assert np.mean(conf < t) == k / 10
    # the midpoint between the 3rd and 4th smallest values
    assert calibrate_threshold(conf, 0.3) == pytest.approx(0.25)
    assert calibrate_threshold(conf, 0.0) == -np.inf and calibrate_threshold(conf, 1.0) == np.inf
    # a target between achievable shares takes the nearest: 0.34 -> 0.3, 0.37 -> 0.4
    assert np.mean(conf < calibrate_threshold(conf, 0.34)) == 0.3
    assert np.mean(conf < calibrate_threshold(conf, 0.37)) == 0.4
    # end to end: the calibrated router sends exactly that share of the states to DEEPTHINK
    lp = np.log(np.random.default_rng(1).dirichlet(np.ones(K), size=40))
    for measure in ("margin", "max_prob", "entropy"):
        t = calibrate_threshold(confidence(lp, measure), 0.25, measure)
        assert ConfidenceRouter(t, measure).decide(make_input(logprobs=lp, slots=np.arange(40))).sum() == 10


def test_calibrate_threshold_ties_and_errors():
    conf = np.array([0.1, 0.1, 0.2, 0.3])  # achievable shares 0, 0.5, 0.75, 1
    assert calibrate_threshold(conf, 0.3) == pytest.approx(0.15)  # share 0.5
    assert calibrate_threshold(conf, 0.25) == -np.inf  # 0 and 0.5 equally near: the cheaper one
    assert calibrate_threshold(conf, 0.7) == pytest.approx(0.25)  # share 0.75
    assert calibrate_threshold(np.full(5, 0.4), 0.7) == np.inf  # all tied: all or nothing
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(RouterError, match=r"target_rate must be a call rate in \[0, 1\]"):
            calibrate_threshold(conf, bad)
    with pytest.raises(RouterError, match="at least one"):
        calibrate_threshold(np.array([]), 0.5)
    with pytest.raises(UnknownNameError, match="known confidence measures: entropy, margin, max_prob"):
        ConfidenceRouter(0.1, "variance")
    with pytest.raises(RouterError, match="K >= 1"):
        confidence(np.zeros((3, 0)))
    for bad in ([[0.0, np.nan]], [[0.0, np.inf]], [[-np.inf, -np.inf]]):
        with pytest.raises(RouterError, match="NaN, \\+inf or a row without a finite score"):
            confidence(np.array(bad))


def test_confidence_of_ragged_rows_ignores_padding():
    """ScienceWorld rows have their own candidate counts; -inf pads them. A padded row's
    confidence equals the unpadded row's; one candidate is full confidence."""
    row = np.log(np.array([0.5, 0.3, 0.2]))
    padded = np.array([np.r_[row, -np.inf, -np.inf], [0.0, -np.inf, -np.inf, -np.inf, -np.inf]])
    for m in ("margin", "max_prob", "entropy"):
        assert confidence(padded, m)[0] == pytest.approx(confidence(row[None], m)[0])
        assert confidence(padded, m)[1] == pytest.approx(1.0)
    assert confidence(row[None], "entropy")[0] == pytest.approx(1 + np.sum([.5, .3, .2] * row) / np.log(3))


# ----------------------------------------------------------------------------- SwiftSage


def onehot_scores(actions) -> np.ndarray:
    """QUICK scores whose top action is ``actions[i]`` in row i."""
    actions = np.atleast_1d(actions)
    lp = np.full((len(actions), K), -5.0)
    lp[np.arange(len(actions)), actions] = -0.1
    return lp


class Episode:
    """Drives one slot of a SwiftSage router step by step (decide, then observe what was taken)."""

    def __init__(self, router, slot=0):
        self.r, self.slot, self.t = router, slot, 0

    def decide(self, top, new=False):
        if new:
            self.t = 0
        return bool(self.r.decide(make_input(slots=[self.slot], logprobs=onehot_scores(top), step=self.t,
                                             new_episode=new))[0])

    def step(self, top, taken=None, reward=0.0, done=False, new=False):
        deep = self.decide(top, new)
        taken = top if taken is None else taken
        self.r.observe(np.array([self.slot]), np.array([deep]), np.array([taken]), np.array([reward]),
                       np.array([done]))
        self.t += 1
        return deep


def test_swiftsage_warmup_then_repetition_calls():
    r = SwiftSageRouter()
    r.reset(1, 0)
    ep = Episode(r)
    # QUICK repeats "go forward" (2): kept during the 10-step warm-up, DEEPTHINK on the 11th step
    assert [ep.step(2, new=(i == 0)) for i in range(10)] == [False] * 10
    assert ep.decide(2) is True


def test_swiftsage_no_repetition_keeps_quick():
    r = SwiftSageRouter()
    r.reset(1, 0)
    ep = Episode(r)
    for i in range(10):
        ep.step(i % 3, new=(i == 0))  # last three actions taken: 0, 1, 2 (steps 7, 8, 9 -> 1, 2, 0)
    assert ep.decide(3) is False and ep.decide(4) is False  # not among the last three
    assert ep.decide(0) and ep.decide(1) and ep.decide(2)  # repeats one of them
    # only the last 3 count: action 0 at step 6 then 1, 2, 1
    r.reset(1, 0)
    ep = Episode(r)
    for i, a in enumerate([5] * 6 + [0, 1, 2, 1]):
        ep.step(a, new=(i == 0))
    assert ep.decide(0) is False and ep.decide(2) is True


def test_swiftsage_recent_deepthink_blocks_calls_for_the_window():
    r = SwiftSageRouter()
    r.reset(1, 0)
    ep = Episode(r)
    decisions = [ep.step(2, new=(i == 0)) for i in range(40)]
    # applied literally in a repetitive episode: one call every 5 steps after the warm-up
    assert [t for t, d in enumerate(decisions) if d] == [10, 15, 20, 25, 30, 35]
    # the call is counted when the agent reports DEEPTHINK acted (deep from observe)
    r2 = SwiftSageRouter()
    r2.reset(1, 0)
    ep2 = Episode(r2)
    for i in range(11):
        deep = ep2.decide(2, new=(i == 0))
        r2.observe(np.array([0]), np.array([deep and i != 10]), np.array([2]), np.zeros(1), np.zeros(1, bool))
        ep2.t += 1
    assert ep2.decide(2) is True  # the call wanted at step 10 was masked by the agent: no block


def test_swiftsage_recent_reward_keeps_quick():
    r = SwiftSageRouter()
    r.reset(1, 0)
    ep = Episode(r)
    for i in range(10):
        ep.step(2, reward=1.0 if i == 8 else 0.0, new=(i == 0))
    # the reward of step 8 is within the last 5 steps for decisions at steps 9..13
    assert [ep.step(2) for _ in range(4)] == [False] * 4  # steps 10..13
    assert ep.step(2) is True  # step 14
    # a zero total (e.g. a +1 and a -1 in the window) is no gain, as in sum(recent_reward[-5:]) > 0
    r.reset(1, 0)
    ep = Episode(r)
    for i in range(10):
        ep.step(2, reward={7: 1.0, 8: -1.0}.get(i, 0.0), new=(i == 0))
    assert ep.decide(2) is True


def test_swiftsage_forces_quick_after_two_consecutive_calls():
    # with the default 5-step window two consecutive calls are impossible; the rule binds for
    # windows <= 1 (deep_window=1: a call at step s does not block step s + 1)
    r = SwiftSageRouter(deep_window=1)
    r.reset(1, 0)
    ep = Episode(r)
    for i in range(10):
        ep.step(2, new=(i == 0))
    assert [ep.step(2) for _ in range(7)] == [True, True, False, True, True, False, True]
    r = SwiftSageRouter(deep_window=1, force_quick_after=3)
    r.reset(1, 0)
    ep = Episode(r)
    for i in range(10):
        ep.step(2, new=(i == 0))
    assert [ep.step(2) for _ in range(5)] == [True, True, True, False, True]


def test_swiftsage_resets_on_new_episode_and_keeps_slots_apart():
    r = SwiftSageRouter(warmup_steps=0, deep_window=0)
    r.reset(3, 0)
    a, b = Episode(r, slot=0), Episode(r, slot=2)
    a.step(4, new=True)
    a.step(4)
    b.step(1, new=True)
    # slot 0 would repeat 4, slot 2 would repeat 1; one batched call decides both
    inp = make_input(slots=[2, 0], logprobs=onehot_scores([4, 4]), step=[1, 2])
    np.testing.assert_array_equal(r.decide(inp), [False, True])
    # a new episode in slot 0 forgets its history (and its consecutive-call count)
    assert a.decide(4, new=True) is False
    # the episode end reported by observe also clears it
    r.reset(1, 0)
    ep = Episode(r)
    ep.step(3, new=True)
    assert ep.decide(3) is True
    ep.step(3, done=True)
    assert ep.decide(3) is False


def test_swiftsage_errors():
    with pytest.raises(RouterError, match="deep_window must be >= 0"):
        SwiftSageRouter(deep_window=-1)
    with pytest.raises(RouterError, match="force_quick_after must be >= 1"):
        SwiftSageRouter(force_quick_after=0)
    with pytest.raises(RouterError, match="before reset"):
        SwiftSageRouter().decide(make_input(1))
    r = SwiftSageRouter()
    r.reset(2, 0)
    with pytest.raises(RouterError, match=r"slot ids must be in \[0, 2\)"):
        r.decide(make_input(slots=[0, 2]))


# ----------------------------------------------------------------------------- learned switch


def numpy_q(params, x):
    """The Q-network's forward pass written out in numpy (Dense -> ReLU ... -> Dense)."""
    h = np.asarray(x, np.float64)
    layers = params["layers"]
    for i in sorted(layers.keys()):
        h = np.maximum(h @ np.asarray(layers[i]["kernel"][...]) + np.asarray(layers[i]["bias"][...]), 0.0)
    return h @ np.asarray(params["head"]["kernel"][...]) + np.asarray(params["head"]["bias"][...])


@pytest.mark.parametrize("use_budget", [False, True], ids=["londi", "londi-b"])
def test_switcher_router_is_the_greedy_masked_argmax(use_budget):
    obs_dim, n_budget = 5, 4
    cfg = SwitcherConfig(obs_dim=obs_dim, hidden=(16, 8), use_budget=use_budget)
    params = init_params(cfg, jax.random.key(3))
    r = SwitcherRouter(cfg, params, budget=n_budget if use_budget else None)
    r.reset(64, 0)
    assert r.respects_budget == use_budget
    rng = np.random.default_rng(0)
    seen_deep = seen_quick = 0
    for trial in range(30):
        n = int(rng.integers(1, 40))
        feats = rng.normal(size=(n, obs_dim)).astype(np.float32) * 2
        left = rng.integers(0, n_budget + 1, size=n)
        inp = make_input(slots=rng.permutation(64)[:n], features=feats, budget_left=left,
                         budget=n_budget if use_budget else BIG)
        x = np.concatenate([feats, (left / n_budget)[:, None]], axis=1) if use_budget else feats
        want_q = numpy_q(params, x)
        q = r.q_values(inp)
        assert q.shape == (n, 2)
        np.testing.assert_allclose(q, want_q, rtol=1e-4, atol=1e-5)
        deep = r.decide(inp)
        assert deep.dtype == bool and deep.shape == (n,)
        assert not np.any(deep & (left == 0))  # never a call with no budget left
        decisive = np.abs(want_q[:, 1] - want_q[:, 0]) > 1e-4
        want = (want_q[:, 1] > want_q[:, 0]) & (left > 0)
        np.testing.assert_array_equal(deep[decisive], want[decisive])
        seen_deep += int(deep.sum())
        seen_quick += int((~deep & (left > 0)).sum())
    assert seen_deep > 20 and seen_quick > 20  # both switches really occur


def test_switcher_router_ties_go_to_quick_and_errors():
    cfg = SwitcherConfig(obs_dim=2, hidden=(4,))
    params = init_params(cfg, jax.random.key(0))
    params = jax.tree.map(lambda v: v * 0, params)  # Q = 0 for both switches everywhere
    r = SwitcherRouter(cfg, params)
    assert not r.decide(make_input(3, features=np.ones((3, 2), np.float32))).any()
    with pytest.raises(RouterError, match=r"expects 2 features \(SwitcherConfig.obs_dim\) but the input has 3"):
        r.decide(make_input(2, features=np.ones((2, 3), np.float32)))
    cfg_b = SwitcherConfig(obs_dim=2, hidden=(4,), use_budget=True)
    rb = SwitcherRouter(cfg_b, init_params(cfg_b, jax.random.key(0)), budget=2)
    with pytest.raises(RouterError, match="exceeds the switcher's budget n = 2"):
        rb.decide(make_input(1, features=np.ones((1, 2), np.float32), budget_left=5, budget=5))
    with pytest.raises(LondiError, match="budget must be >= 0"):
        SwitcherRouter(cfg_b, params, budget=-1)


def test_swiftsage_native_scienceworld_triggers():
    """Rule 6 in ScienceWorld: a QUICK focus before DEEPTHINK ever focused forces DEEPTHINK (unless
    the object is in the task text, or after 3 tries); two failed QUICK actions force it; a
    DEEPTHINK call clears the failures; QUICK's force after 2 consecutive calls still wins."""
    task = "Your task is to find a(n) living thing. First, focus on the thing."
    r = SwiftSageRouter(native=True, deep_window=0)
    r.reset(2, 0)

    def decide(actions, step=0):
        inp = make_input(2, step=step)
        inp.quick_actions, inp.missions = actions, [task, task]
        return r.decide(inp).tolist()

    def obs(deep, actions, observations):
        r.observe_text(np.arange(2), np.asarray(deep), actions, observations)
        r.observe(np.arange(2), np.asarray(deep), np.zeros(2, int), np.zeros(2), np.zeros(2, bool))

    # warm-up would keep QUICK, but a focus on an unnamed object forces DEEPTHINK; moving does not
    assert decide(["focus on butterfly", "go to kitchen"]) == [True, False]
    obs([True, False], ["focus on butterfly", "go to kitchen"], ["You focus on the butterfly.", "You move."])
    assert decide(["focus on dove", "focus on living thing"]) == [False, False]  # slot 0: DEEPTHINK focused; 1: named
    for _ in range(2):  # two failed QUICK actions in slot 1
        obs([False, False], ["look around", "eat door"], ["You look.", "No known action matches that input."])
    assert decide(["look around", "look around"]) == [False, True]
    obs([False, True], ["look around", "look around"], ["", ""])
    assert decide(["look around", "look around"]) == [False, False]  # DEEPTHINK acted: failures cleared
    r2 = SwiftSageRouter(native=True, deep_window=0, force_quick_after=1)
    r2.reset(1, 0)
    inp = make_input(1, step=0)
    inp.quick_actions, inp.missions = ["focus on cat"], [task]
    assert r2.decide(inp).tolist() == [True]
    r2.observe_text(np.arange(1), np.array([True]), ["look around"], ["ok"])
    r2.observe(np.arange(1), np.array([True]), np.zeros(1, int), np.zeros(1), np.zeros(1, bool))
    assert r2.decide(inp).tolist() == [False]  # forced QUICK wins over the forced focus call
    r3 = SwiftSageRouter(native=True, deep_window=0, force_quick_after=10)
    r3.reset(1, 0)
    calls = []
    for _ in range(4):  # QUICK keeps proposing the focus; DEEPTHINK acts without focusing
        calls += r3.decide(inp).tolist()
        r3.observe_text(np.arange(1), np.array(calls[-1:]), ["look around"], ["ok"])
        r3.observe(np.arange(1), np.array(calls[-1:]), np.zeros(1, int), np.zeros(1), np.zeros(1, bool))
    assert calls == [True, True, True, False]  # after focus_tries (3) forced calls QUICK may focus
    r4 = SwiftSageRouter(native=True)
    r4.reset(1, 0)
    with pytest.raises(RouterError, match="quick_actions and missions"):
        r4.decide(make_input(1))


def test_oracle_calls_deepthink_exactly_where_quick_is_wrong_and_deepthink_right():
    inp = make_input(6)
    inp.quick_actions = ["a", "a", "a", "b", "a", "a"]
    inp.deep_actions = ["a", "b", "c", "b", "b", "b"]
    inp.expert_actions = ["a", "b", "b", "b", None, "c"]
    # row 0: both right; 1: QUICK wrong, DEEPTHINK right; 2: both wrong; 3: both right;
    # 4: no expert here; 5: both wrong
    assert OracleRouter().decide(inp).tolist() == [False, True, False, False, False, False]
    assert OracleRouter.peeks_deep and OracleRouter.reads_expert and not OracleRouter.reads_scores
    assert not QuickOnly.peeks_deep and not SwiftSageRouter.reads_expert
    with pytest.raises(RouterError, match="deep_actions, expert_actions"):
        OracleRouter().decide(make_input(2))
    with pytest.raises(RouterError, match="expert_actions must have one entry per slot"):
        RouteInput(slots=[0, 1], quick_logprobs=np.zeros((2, K)), features=np.zeros((2, 0)), step=0, max_steps=9,
                   budget_left=1, budget=1, new_episode=False, expert_actions=["a"])
