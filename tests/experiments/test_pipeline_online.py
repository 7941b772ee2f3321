"""The pipeline's online stage: what it stores is what the evaluation restores and deploys.

The training itself (one compiled program, exact resume, LONDI-B's budget) is tested in
``tests/agents/test_online.py``; here ``train_online`` is replaced by one that returns freshly
initialised PQN switches with known values, so the test checks the stage's plumbing (members per
c and budget, one checkpoint of both groups, the evaluation's restore and ``SwitcherRouter``)
without compiling a training program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from londi_jax.agents import online
from londi_jax.agents.routers import RouteInput, SwitcherRouter
from londi_jax.experiments.config import with_overrides
from londi_jax.experiments.pipeline import Pipeline, read_run_config
from londi_jax.switcher import pqn
from londi_jax.switcher.config import HParams


def test_online_stage_stores_what_the_evaluation_restores(run_copy, monkeypatch):
    cfg = with_overrides(read_run_config(run_copy), {"online.enabled": "true", "online.num_envs": "4",
                                                       "online.capacity": "2", "online.resets": "2"})
    calls = []

    def fake_train(env, params, config, hparams, seeds, ckpt_dir, **kw):
        assert isinstance(env, online.LondiEnv) and env.obs_dim == config.obs_dim and config.learner == "pqn"
        calls.append((config.use_budget, np.asarray(hparams.c).tolist(), np.asarray(hparams.budget).tolist(), seeds))
        keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32) + 100 * len(calls))
        p = jax.vmap(lambda k, h: pqn.init(config, h, k).params)(keys, hparams)
        return online.OnlineResult(params=p, metrics={}, summary={"members": len(seeds)})

    monkeypatch.setattr(online, "train_online", fake_train)
    pipe = Pipeline(cfg, run_copy, force=["online"])
    info = pipe.stage_online()
    s = cfg.switch
    seeds = list(range(s.seeds))
    assert calls == [(False, [np.float32(c).item() for c in s.c_grid for _ in seeds], [3] * (len(s.c_grid) * s.seeds),
                      seeds * len(s.c_grid)),
                     (True, [np.float32(s.budget_c).item()] * (len(s.budgets) * s.seeds),
                      [n for n in s.budgets for _ in seeds], seeds * len(s.budgets))]
    one = {"platform": "cpu", "device_kind": "cpu", "devices": 1, "mesh": "one device", "processes": 1}
    assert info == {"londi": {"members": len(s.c_grid) * s.seeds, "devices": one},
                    "londi_b": {"members": len(s.budgets) * s.seeds, "devices": one}}  # where the grids ran
    tree = pipe._online_switchers()
    for name, use_budget, i in (("londi", False, 1), ("londi_b", True, 2)):
        cfg_o = pipe.online_switcher_config(use_budget)
        keys = jax.vmap(jax.random.key)(jnp.asarray(calls[i - 1][3], jnp.uint32) + 100 * i)
        want = jax.vmap(lambda k: pqn.init(cfg_o, HParams.create(), k).params)(keys)
        for x, y in zip(jax.tree.leaves(tree[name]), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        member = jax.tree.map(lambda x: x[0], tree[name])
        router = SwitcherRouter(cfg_o, member, budget=1 if use_budget else None)
        z = np.random.default_rng(0).normal(size=(3, pipe.encoder().dim)).astype(np.float32)
        ones = np.ones(3, np.int64)
        inp = RouteInput(slots=np.arange(3), quick_logprobs=np.zeros((3, 6)), features=z, step=0 * ones,
                         max_steps=8 * ones, budget_left=ones, budget=ones, new_episode=ones.astype(bool))
        _, g = router._evaluate(inp)
        assert set(np.asarray(g).tolist()) <= {0, 1}
