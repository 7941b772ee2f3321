"""ScienceWorld through the one rollout loop: valid actions scored with the SwiftSage prompt,
one JVM per slot reused across episodes, no JVM left afterwards."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from jvm_support import tagged_jvms

from londi_jax.agents.londi import LondiAgent
from londi_jax.agents.policy import LMPolicy
from londi_jax.agents.prompts import SwiftSageFormat
from londi_jax.agents.rollout import Decision, ModelCall, run_episodes
from londi_jax.agents.routers import QuickOnly
from londi_jax.envs import scienceworld as sw
from londi_jax.envs.scienceworld.episodes import ScienceWorldEpisode, scienceworld_episodes

pytestmark = pytest.mark.slow
TAG = f"swroll-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", autouse=True)
def jvm_tag():
    with tagged_jvms(TAG, "the ScienceWorld rollout tests"):
        yield TAG


class FirstValid:
    """Takes the first valid action; records the states and the JVMs alive at each step."""

    def __init__(self):
        self.states, self.jvms = [], []

    def start(self, num_slots):
        pass

    def act(self, batch):
        self.states += batch.states
        self.jvms.append(len(sw.live_jvm_pids(TAG)))
        return Decision([s.valid_actions[0] for s in batch.states], [ModelCall("quick", range(batch.n), 0.0, 0.0)],
                        np.zeros(batch.n, bool))

    def observe(self, batch, decision, outcome):
        pass


def test_episodes_reuse_one_jvm_per_slot_and_carry_valid_actions():
    specs = scienceworld_episodes(["4-1"], split="train", variations=3, step_limit=3)
    assert [s.variation for s in specs] == [0, 1, 2] and all(s.kind == "4-1" for s in specs)
    ctl = FirstValid()
    res = run_episodes(specs, ctl, num_envs=1, progress=False)
    assert [e.seed for e in res.episodes] == [0, 1, 2] and all(e.length <= 3 for e in res.episodes)
    assert max(ctl.jvms) == 1  # one slot, one JVM for all three episodes
    for s in ctl.states:
        assert s.valid_actions and "look around" in s.valid_actions
        assert "look" in s.current.info and "inventory" in s.current.info and s.max_steps == 3
    assert sw.live_jvm_pids(TAG) == []  # closed when the run ended


def tiny_lm():
    """A 1-layer random Llama with a word tokenizer trained on ScienceWorld-like text."""
    from londi_jax.lm.config import ModelConfig
    from londi_jax.lm.engine import LanguageModel
    from londi_jax.lm.hf_loader import init_model
    from londi_jax.lm.tokenizer import train_word_tokenizer

    text = ("Your task is to find a living thing. This room is called the kitchen. In it, you see: a door "
            "look around go to open close pick up move focus on inventory teleport wait Time Score Action "
            "history Current environment inventory Visited rooms What action should you do next")
    tok = train_word_tokenizer([text], vocab_size=120)
    cfg = ModelConfig(family="llama", vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2,
                      head_dim=16, intermediate_size=64, tie_embeddings=True, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      model_type="llama")
    return LanguageModel(cfg, init_model(cfg, 0), tok, name="tiny")


def test_an_lm_scores_every_valid_action_with_the_swiftsage_prompt():
    lm = tiny_lm()
    pol = LMPolicy(lm, SwiftSageFormat(), name="quick")
    specs = [ScienceWorldEpisode("4-1", 0, split="train", step_limit=2)]
    seen = []
    orig = pol.score

    def spy(prompts, candidates):
        seen.append((prompts, candidates))
        return orig(prompts, candidates)

    pol.score = spy
    res = LondiAgent(pol, pol, QuickOnly()).run(specs, num_envs=1, progress=False)
    (ep,) = res.episodes
    assert ep.length == 2 and ep.quick_calls == 2 and ep.quick_flops > 0
    prompts, cands = seen[0]
    assert prompts[0].startswith("Your task is to") and "Current environment: This room is called" in prompts[0]
    assert len(cands[0]) > 20  # every valid action is a candidate, scored after one shared prefill


def test_bad_episode_specs_fail_before_any_jvm_starts():
    from londi_jax.utils.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="boil"):
        ScienceWorldEpisode("no-such-task", 0)
    with pytest.raises(sw.ScienceWorldError, match="step_limit must be an int >= 1"):
        ScienceWorldEpisode("4-1", 0, step_limit=0)
    with pytest.raises(sw.ScienceWorldError, match="variation must be"):
        ScienceWorldEpisode("4-1", -1)
    with pytest.raises(UnknownNameError, match="train"):
        ScienceWorldEpisode("4-1", 0, split="valid")
    with pytest.raises(sw.ScienceWorldError, match="at least one task"):
        scienceworld_episodes([])
    assert ScienceWorldEpisode("boil", 0).task == "1-1"
    assert sw.live_jvm_pids(TAG) == []


def test_branch_gives_the_step_without_changing_the_episode():
    """``branch`` replays the episode in a second JVM: the same outcome as stepping, and the
    episode itself does not move (checked against the real step taken afterwards)."""
    env = sw.ScienceWorldTextEnv("4-2", split="train", gold_path=True, with_look_inventory=True)
    try:
        env.reset(variation=0, with_valid=False)
        gold = env.gold_actions()
        for a in gold[:2]:
            env.step(a)
        score = env.score
        focus = env.branch("focus on door to kitchen")  # focus is irrevocable: a leak would show
        assert env.score == score
        again = env.branch("focus on door to kitchen")
        assert (again.observation, again.info["score"]) == (focus.observation, focus.info["score"])
        alt = env.branch(gold[2], with_valid=True)
        real = env.step(gold[2], with_valid=True)
        assert (alt.observation, alt.reward, alt.info["score"], alt.terminated) == \
            (real.observation, real.reward, real.info["score"], real.terminated)
        assert alt.info["valid_actions"] == real.info["valid_actions"]
        assert alt.info["look"] == real.info["look"]
        assert len(sw.live_jvm_pids(TAG)) == 2  # the episode's JVM and the replay JVM
    finally:
        env.close()
    assert sw.live_jvm_pids(TAG) == []  # close() stops both


class BranchFirstValid(FirstValid):
    """Takes the first valid action and branches on the last one; keeps the branch outcomes."""

    def __init__(self):
        super().__init__()
        self.branches = []

    def act(self, batch):
        dec = super().act(batch)
        dec.branch = {j: s.valid_actions[-1] for j, s in enumerate(batch.states)}
        return dec

    def observe(self, batch, decision, outcome):
        self.branches += [(decision.branch[j], outcome.branches[j][1]) for j in range(batch.n)]


def test_rollout_branches_scienceworld_envs_and_records_the_score():
    specs = scienceworld_episodes(["4-2"], split="train", variations=2, step_limit=2)
    ctl = BranchFirstValid()
    res = run_episodes(specs, ctl, num_envs=2, progress=False)
    assert len(ctl.branches) == res.env_steps == 4
    for action, state in ctl.branches:
        assert state.actions[-1] == action and state.valid_actions  # the branch's own next state
    assert all(e.score is not None and not e.lost for e in res.episodes)
    assert res.summary()["mean_score"] == np.mean([max(e.score, 0) for e in res.episodes])
    assert sw.live_jvm_pids(TAG) == []


def test_no_py4j_errors_after_close_even_at_exit():
    """py4j's close() left its client "connected", so Java objects collected after close (with
    jax imported: at interpreter exit) tried the stopped JVM and logged refused connections."""
    import subprocess
    import sys

    code = ("import jax, londi_jax.experiments.pipeline\n"
            "from londi_jax.envs.scienceworld.env import ScienceWorldTextEnv\n"
            "with ScienceWorldTextEnv('4-1') as env:\n"
            "    v = [env.variations_of(t, s) for t in ('4-1', '4-2') for s in ('train', 'dev', 'test')]\n"
            "    env.reset(variation=0); env.step('look around', with_valid=True)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "py4j" not in out.stderr and "Connection refused" not in out.stderr, out.stderr[-2000:]


class KillFirstJVM(FirstValid):
    """Kills the simulator JVM before the loop steps the first episode's second action."""

    def act(self, batch):
        dec = super().act(batch)
        if batch.owners[0] == 0 and batch.states[0].step == 1:
            import os
            import signal

            for pid in sw.live_jvm_pids(TAG):
                os.kill(pid, signal.SIGKILL)
        return dec


def test_a_dead_jvm_costs_one_episode_not_the_run():
    specs = scienceworld_episodes(["4-2"], split="train", variations=3, step_limit=3)
    res = run_episodes(specs, KillFirstJVM(), num_envs=1, progress=False)
    assert [e.lost for e in res.episodes] == [True, False, False]
    assert not res.episodes[0].success and res.episodes[0].length == 2
    assert all(e.length == 3 for e in res.episodes[1:])  # the next episodes ran in a fresh JVM
    assert res.summary()["lost"] == 1
    assert sw.live_jvm_pids(TAG) == []


def test_env_pool_keeps_the_jvms_between_runs():
    from londi_jax.agents.rollout import EnvPool

    specs = scienceworld_episodes(["4-2"], split="train", variations=2, step_limit=1)
    with EnvPool() as pool:
        run_episodes(specs, FirstValid(), num_envs=2, progress=False, pool=pool)
        before = sorted(sw.live_jvm_pids(TAG))
        assert len(pool) == 2 and len(before) == 2
        run_episodes(specs[::-1], FirstValid(), num_envs=2, progress=False, pool=pool)
        assert sorted(sw.live_jvm_pids(TAG)) == before  # the same two JVMs served the second run
    assert sw.live_jvm_pids(TAG) == []


class FollowExpert(FirstValid):
    """Takes the expert's action (the gold path) where there is one, else the first valid action."""

    wants_expert = True

    def __init__(self, detour_at: int | None = None):
        super().__init__()
        self.experts, self.detour_at = [], detour_at

    def act(self, batch):
        self.experts += batch.experts
        dec = super().act(batch)
        for j, (s, e) in enumerate(zip(batch.states, batch.experts)):
            if e is not None and s.step != self.detour_at:
                dec.actions[j] = e
        return dec


def test_the_gold_path_expert_leads_to_full_score_and_leaves_with_the_path():
    """``expert_action()`` gives the gold path as valid actions: 4-1's path ends with "move egg
    turtle egg in inventory to orange box" where the valid action is "move egg turtle to orange
    box", and opens doors that "easy" has opened already (skipped). Followed, it scores 100 in
    every variation; one step off the path, it says nothing more."""
    specs = [ScienceWorldEpisode(t, v, "test", step_limit=30, gold_path=True) for t, v in (("4-1", 225), ("4-2", 226))]
    follow = FollowExpert()
    res = run_episodes(specs, follow, num_envs=1, progress=False)
    assert [e.score for e in res.episodes] == [100.0, 100.0]
    assert all(e is not None for e in follow.experts)
    assert "move egg turtle to orange box" in follow.experts and not any(e.startswith("open door") for e in follow.experts)
    assert all(e in s.valid_actions for e, s in zip(follow.experts, follow.states))
    detour = FollowExpert(detour_at=1)
    res = run_episodes(specs[:1], detour, num_envs=1, progress=False)
    assert detour.experts[0] is not None and detour.experts[2:] == [None] * (len(detour.experts) - 2)
    assert res.episodes[0].score < 100
    # without a gold path there is no expert, said before any step
    with pytest.raises(sw.ScienceWorldError, match="gold_path=True"):
        run_episodes([ScienceWorldEpisode("4-1", 225, "test", step_limit=3)], FollowExpert(), progress=False)
    assert sw.live_jvm_pids(TAG) == []
