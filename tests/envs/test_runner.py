"""The batched runner on a tiny pure-Python env and on BabyAI-Text (no JVM here)."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from londi_jax.envs.runner import BatchedEnv, EnvWorkerError, ToyTextEnv, episode_seed
from londi_jax.utils.errors import UnknownNameError


WalkEnv = ToyTextEnv  # a library class, so spawned workers can import it under any pytest import mode


def rollout(benv: BatchedEnv, steps: int, policy_seed: int = 0):
    """Observations, rewards and dones of a random-policy rollout (policy seeded independently)."""
    rng = np.random.default_rng(policy_seed)
    first = benv.reset()
    obs = [list(first.observations)]
    rew, done = [], []
    for _ in range(steps):
        acts = [WalkEnv.ACTIONS[a] for a in rng.integers(0, 2, benv.num_envs)]
        out = benv.step(acts)
        obs.append(list(out.observations))
        rew.append(out.rewards.copy())
        done.append(out.dones.copy())
    return obs, np.array(rew), np.array(done)


def reference_rollout(n: int, seeds: list[int], steps: int, policy_seed: int = 0):
    """The same rollout with plain WalkEnv objects and hand-written auto-reset."""
    rng = np.random.default_rng(policy_seed)
    envs = [WalkEnv() for _ in range(n)]
    eps = [0] * n
    obs = [[e.reset(s).observation for e, s in zip(envs, seeds)]]
    rew, done = [], []
    for _ in range(steps):
        acts = [WalkEnv.ACTIONS[a] for a in rng.integers(0, 2, n)]
        row_o, row_r, row_d = [], [], []
        for i, (e, a) in enumerate(zip(envs, acts)):
            s = e.step(a)
            o = s.observation
            if s.done:
                eps[i] += 1
                o = e.reset(episode_seed(seeds[i], eps[i])).observation
            row_o.append(o)
            row_r.append(s.reward)
            row_d.append(s.done)
        obs.append(row_o)
        rew.append(row_r)
        done.append(row_d)
    return obs, np.array(rew, dtype=np.float32), np.array(done)


def test_inprocess_matches_hand_written_loop():
    seeds = [5, 6, 7]
    with BatchedEnv(WalkEnv, 3, seeds=seeds) as benv:
        got = rollout(benv, 40)
    want = reference_rollout(3, seeds, 40)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    assert got[2].sum() > 5  # several auto-resets happened


def test_subprocess_same_trajectories_as_inprocess():
    with BatchedEnv(WalkEnv, 4, seeds=11, backend="subprocess", num_workers=2) as benv:
        sub = rollout(benv, 30)
        assert len(set(benv.worker_pids())) == 2
    with BatchedEnv(WalkEnv, 4, seeds=11) as benv:
        inp = rollout(benv, 30)
    assert sub[0] == inp[0]
    np.testing.assert_array_equal(sub[1], inp[1])


def test_episode_info_and_reset_reproducible():
    with BatchedEnv(WalkEnv, 2, seeds=[1, 2]) as benv:
        first = benv.reset(with_valid=True)
        assert first.valid_actions == [list(WalkEnv.ACTIONS)] * 2
        assert [i["episode_seed"] for i in first.infos] == [1, 2]
        a = rollout(benv, 15)
        b = rollout(benv, 15)  # reset() starts over from the same seeds
        assert a[0] == b[0]
        out = benv.step(["right", "right"], with_valid=True)
        assert out.valid_actions == [list(WalkEnv.ACTIONS)] * 2
        # run until an episode ends and check its summary
        for _ in range(20):
            out = benv.step(["right", "left"])
            for i, info in enumerate(out.infos):
                if out.dones[i]:
                    ep = info["episode"]
                    assert ep["length"] >= 1 and ep["success"] == bool(out.terminated[i])
                    assert info["final_observation"].startswith("at ")
                    assert out.observations[i].startswith("at 0 target")  # already reset


def test_worker_crash_is_survived_and_reported():
    with BatchedEnv(WalkEnv, 4, seeds=0, backend="subprocess", num_workers=2) as benv:
        benv.reset()
        before = benv.worker_pids()
        out = benv.step(["left", "left", "__crash__", "left"])
        # worker 1 (envs 2, 3) died: both its episodes are lost, the others go on
        assert list(out.truncated[2:]) == [True, True]
        assert all(out.infos[i]["episode_lost"] and out.infos[i]["worker_restarted"] for i in (2, 3))
        assert not any(out.infos[i].get("episode_lost") for i in (0, 1))
        assert out.observations[2].startswith("at 0 target")
        after = benv.worker_pids()
        assert after[0] == before[0] and after[1] != before[1]
        assert benv.restarts == 1
        out = benv.step(["right"] * 4)  # the run goes on
        assert all(o.startswith("at ") for o in out.observations)
        # the restarted envs play their next episode, with the seed it would have had anyway
        assert out.infos[2].get("episode_lost") is None


def test_worker_hang_times_out_and_restarts():
    # 10 s: a toy step takes microseconds, so the healthy worker answers in time even on a loaded machine
    with BatchedEnv(WalkEnv, 2, seeds=0, backend="subprocess", step_timeout=10.0) as benv:
        benv.reset()
        t = time.monotonic()
        out = benv.step(["__hang__", "right"])
        assert time.monotonic() - t < 120  # the hang (600 s) was cut, restart included
        assert out.infos[0]["episode_lost"] and "step_timeout" in out.infos[0]["restart_reason"]
        assert not out.infos[1].get("episode_lost")
        out = benv.step(["left", "left"])
        assert all(o.startswith("at ") for o in out.observations)


def test_env_exceptions_are_raised_not_swallowed():
    with BatchedEnv(WalkEnv, 2, seeds=0, backend="subprocess", num_workers=1) as benv:
        benv.reset()
        with pytest.raises(EnvWorkerError, match="unknown action '__bad__'"):
            benv.step(["__bad__", "left"])
        with pytest.raises(EnvWorkerError, match="ValueError: toy env: __raise__"):
            benv.step(["__raise__", "left"])
    with BatchedEnv(WalkEnv, 2) as benv:
        benv.reset()
        with pytest.raises(ValueError, match="__raise__"):
            benv.step(["__raise__", "left"])


def test_bad_arguments():
    with pytest.raises(UnknownNameError, match="inprocess, subprocess"):
        BatchedEnv(WalkEnv, 2, backend="threads")
    with pytest.raises(EnvWorkerError, match="picklable"):
        BatchedEnv(lambda: WalkEnv(), 2, backend="subprocess")
    with pytest.raises(EnvWorkerError, match="3 seeds for 2 envs"):
        BatchedEnv(WalkEnv, 2, seeds=[1, 2, 3])
    with pytest.raises(EnvWorkerError, match="num_envs"):
        BatchedEnv(WalkEnv)
    from londi_jax.envs.scienceworld import ScienceWorldTextEnv

    # a LondiError raised by the factory inside the worker reaches the caller with its message
    with pytest.raises(EnvWorkerError, match="unknown ScienceWorld task 'bogus'"):
        BatchedEnv(functools.partial(ScienceWorldTextEnv, "bogus"), 1, backend="subprocess")
    with BatchedEnv(WalkEnv, 2) as benv:
        benv.reset()
        with pytest.raises(EnvWorkerError, match="one action per env"):
            benv.step(["left"])
    with pytest.raises(EnvWorkerError, match="closed"):
        benv.step(["left", "left"])


def test_episode_seed_is_stable():
    assert episode_seed(7, 0) == 7
    assert episode_seed(7, 1) == episode_seed(7, 1) != episode_seed(7, 2)
    assert len({episode_seed(s, k) for s in range(20) for k in range(1, 20)}) == 19 * 20


# -- BabyAI-Text ------------------------------------------------------------------------------


def _babyai_factory():
    from londi_jax.envs.babyai_text import make_babyai_text

    return functools.partial(make_babyai_text, "BabyAI-MixedTrainLocal-v0", kind="goto")


def babyai_rollout(benv: BatchedEnv, steps: int):
    from londi_jax.envs.babyai_text import ACTIONS

    rng = np.random.default_rng(3)
    first = benv.reset()
    traj = [(tuple(first.missions), tuple(first.observations))]
    for _ in range(steps):
        out = benv.step([ACTIONS[a] for a in rng.integers(0, 3, benv.num_envs)])
        traj.append((tuple(out.observations), tuple(out.rewards.tolist()), tuple(out.dones.tolist())))
    return traj


def test_babyai_same_seeds_same_trajectories():
    pytest.importorskip("londi_jax.envs.babyai_text")
    fn = _babyai_factory()
    with BatchedEnv(fn, 3, seeds=[0, 1, 2]) as benv:
        a = babyai_rollout(benv, 80)
    with BatchedEnv(fn, 3, seeds=[0, 1, 2]) as benv:
        b = babyai_rollout(benv, 80)
    with BatchedEnv(fn, 3, seeds=[0, 1, 2], backend="subprocess", num_workers=2) as benv:
        c = babyai_rollout(benv, 80)
    with BatchedEnv(fn, 3, seeds=[5, 6, 7]) as benv:
        d = babyai_rollout(benv, 80)
    assert a == b == c
    assert a[0] != d[0]
    assert any(any(step[2]) for step in a[1:])  # episodes ended (64-step limit) and auto-reset
    # env 0 alone, seeded as the runner seeds it, gives the same first mission
    env = fn()
    assert env.reset(0).mission == a[0][0][0]
    env.close()
