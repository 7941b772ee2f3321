"""Sweeps: one compiled program for all members, no recompiles per value, results table."""

import csv
import io
import json

import numpy as np
import pytest

from londi_jax.switcher import toy
from londi_jax.switcher.config import SwitcherConfig
from londi_jax.switcher.sweep import (ResultsTable, SweepError, SweepSpec, expand, members,
                                      run_sweep, stack_hparams)
from londi_jax.switcher.train import Trainer
from londi_jax.utils.errors import UnknownNameError


class CountingTrainer(Trainer):
    """Counts Python traces of ``train_chunk`` (a trace is what a recompile needs)."""

    traces = 0

    def train_chunk(self, ts, hparams, num_updates):
        CountingTrainer.traces += 1
        return super().train_chunk(ts, hparams, num_updates)


def _tiny_trainer():
    env = toy.ToyEnv()
    cfg = SwitcherConfig(obs_dim=env.obs_dim, learner="dqn", use_budget=True, num_envs=4,
                         hidden=(8,), num_updates=20, buffer_size=64, batch_size=8,
                         learning_starts=8)
    return CountingTrainer(cfg, env, env.default_params(max_steps=8))


def test_one_compile_for_all_values_and_members():
    tr = _tiny_trainer()
    CountingTrainer.traces = 0
    spec1 = SweepSpec(params={"c": [0.0, 0.5], "lr": [1e-3, 1e-2], "budget": [1, 2]}, seeds=2)
    t1 = run_sweep(tr, spec1, eval_episodes=16, eval_max_steps=8, chunk=10, progress=False)
    assert len(t1.rows) == 2 * 2 * 2 * 2
    assert CountingTrainer.traces == 1  # 16 members, 2 chunks: traced once
    for r in t1.rows:  # the traced budget is honoured per member
        assert r["train_violations"] == 0 and r["violations"] == 0 and r["max_calls"] <= r["budget"]
    # new values of every swept kind (incl. gamma, lambda, epsilon schedule): still no retrace
    spec2 = SweepSpec(params={"c": [0.3, 0.7], "gamma": [0.9, 0.99], "eps_end": [0.1, 0.3],
                              "lam": [0.0, 0.5]}, seeds=1)
    run_sweep(tr, spec2, eval_episodes=16, eval_max_steps=8, chunk=10, progress=False)
    assert CountingTrainer.traces == 1
    # the members really differ: learning rate and cost change the learned nets
    losses = {(r["lr"], r["c"]) for r in t1.rows}
    assert len(losses) == 4 and len({r["final_loss"] for r in t1.rows}) > 4


def test_grid_and_random_expansion():
    spec = SweepSpec(params={"c": [0.1, 0.2, 0.3], "budget": [1, 2]}, seeds=3)
    pts = expand(spec)
    assert len(pts) == 6 and {p["c"] for p in pts} == {0.1, 0.2, 0.3}
    assert len(members(spec)) == 18
    rnd = SweepSpec(params={"lr": ("loguniform", 1e-4, 1e-2), "c": ("uniform", 0.0, 1.0),
                            "budget": ("randint", 1, 4), "gamma": [0.9, 0.99]},
                    mode="random", num_samples=50)
    pts = expand(rnd, seed=1)
    assert pts == expand(rnd, seed=1) and len(pts) == 50
    lrs = np.array([p["lr"] for p in pts])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-2
    assert {p["budget"] for p in pts} <= {1, 2, 3, 4} and {p["gamma"] for p in pts} == {0.9, 0.99}
    hp = stack_hparams(pts)
    assert hp.lr.shape == (50,) and hp.budget.dtype == np.int32


def test_bad_specs_name_the_problem():
    with pytest.raises(UnknownNameError, match="known hyper-parameters: budget, c"):
        SweepSpec(params={"cost": [0.1]})
    with pytest.raises(UnknownNameError, match="grid, random"):
        SweepSpec(params={"c": [0.1]}, mode="bayes")
    with pytest.raises(SweepError, match="non-empty list"):
        SweepSpec(params={"c": []})
    with pytest.raises(UnknownNameError, match="loguniform"):
        expand(SweepSpec(params={"c": ("normal", 0, 1)}, mode="random"))


def test_results_table_formats():
    t = ResultsTable(columns=["c", "seed", "calls"],
                     rows=[{"c": 0.1, "seed": 0, "calls": np.float32(1.5)},
                           {"c": 0.2, "seed": 1, "calls": np.float32(0.25)}])
    recs = json.loads(t.to_json())
    assert recs == [{"c": 0.1, "seed": 0, "calls": 1.5}, {"c": 0.2, "seed": 1, "calls": 0.25}]
    rows = list(csv.DictReader(io.StringIO(t.to_csv())))
    assert rows[1] == {"c": "0.2", "seed": "1", "calls": "0.25"}
    text = t.render()
    assert text.splitlines()[0].split() == ["c", "seed", "calls"] and "0.25" in text
