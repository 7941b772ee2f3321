"""The ``londi-jax toy`` command."""

import json

import numpy as np
import pytest

from londi_jax.cli import main
from londi_jax.switcher import exact, toy
from londi_jax.switcher.cli import _render


@pytest.mark.slow
def test_toy_json_reports_learned_vs_exact(capsys):
    rc = main(["toy", "--c", "0.25", "--budget", "2", "--seeds", "2", "--updates", "300",
               "--eval-episodes", "500", "--json", "--no-progress"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    P, R, start = toy.tabular_model(toy.default_params())
    sol = exact.solve(P, R, 0.25, 0.95, budget=2)
    assert r["exact_value"] == pytest.approx(exact.start_value(sol.V, start))
    assert r["exact_policy"] == sol.policy.T.tolist()
    assert len(r["per_seed"]) == 2 and r["violations"] == 0
    for s in r["per_seed"]:
        assert 0.0 <= s["agreement"] <= 1.0 and s["max_calls"] <= 2
        assert s["learned_value"] <= r["exact_value"] + 1e-9  # nothing beats the optimum
    text = _render(r)  # the human-readable form of the same result
    assert f"exact optimum : {' '.join(''.join(map(str, row)) for row in r['exact_policy'])}" in text
    assert "budget violations: 0 over 1000 episodes" in text


def test_toy_text_output_and_errors(capsys):
    assert main(["toy", "--learner", "ppo"]) == 2
    assert "known learners: dqn, pqn" in capsys.readouterr().err
    for argv, msg in [(["--budget", "-1"], "argument --budget: expected an int >= 0, got '-1'"),
                      (["--seeds", "0"], "argument --seeds: expected an int >= 1, got '0'")]:
        with pytest.raises(SystemExit) as exc:
            main(["toy", *argv])
        assert exc.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.slow
def test_toy_sweep_table_json_and_csv(capsys, tmp_path):
    out_csv = tmp_path / "sweep.csv"
    # budget 0 ("never call DEEPTHINK") used to train and then crash ("zero-size array")
    rc = main(["toy-sweep", "--c", "0.05", "1.0", "--budget", "0", "1", "--seeds", "2", "--updates", "40",
               "--eval-episodes", "50", "--csv", str(out_csv), "--json", "--no-progress"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["members"] == 8 and len(r["rows"]) == 8
    assert sorted((row["c"], row["budget"], row["seed"]) for row in r["rows"]) == [
        (c, b, s) for c in (0.05, 1.0) for b in (0, 1) for s in (0, 1)]
    P, R, start = toy.tabular_model(toy.default_params())
    for row in r["rows"]:
        want = exact.start_value(exact.solve(P, R, row["c"], 0.95, budget=row["budget"]).V, start)
        assert row["exact_value"] == pytest.approx(want) and row["violations"] == 0
        if row["budget"] == 0:  # forced to QUICK everywhere: exactly the optimum, never a call
            assert row["calls"] == 0.0 and row["max_calls"] == 0 and row["agreement"] == 1.0
            assert row["learned_value"] == pytest.approx(row["exact_value"])
    lines = out_csv.read_text().splitlines()
    assert len(lines) == 9 and lines[0].startswith("c,budget,seed,")


# ----------------------------------------------------------------------------- input checked up front

BAD_NUMBERS = {
    # option: values argparse must refuse before anything runs
    "--c": ["nan", "inf", "-inf", "-0.1", "abc"],
    "--budget": ["-1", "1.5", "nan"],
    "--seeds": ["0", "-2", "2.5"],
    "--updates": ["0", "-5"],
    "--eval-episodes": ["0", "-1"],
}


@pytest.mark.parametrize("command", ["toy", "toy-sweep"])
def test_bad_numbers_are_refused_when_parsed(command, capsys, monkeypatch):
    import londi_jax.switcher.toy_bench as tb

    def never(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(tb, "run_toy", never)
    monkeypatch.setattr(tb, "sweep_toy", never)
    opts = dict(BAD_NUMBERS, **({"--seed": ["-1", "x"]} if command == "toy" else {"--lr": ["0", "-1e-3", "nan"]}))
    for opt, values in opts.items():
        for v in values:
            with pytest.raises(SystemExit) as exc:
                main([command, f"{opt}={v}"])  # "=": argparse would read "-1" as an option
            assert exc.value.code == 2
            err = capsys.readouterr().err
            assert f"error: argument {opt}: expected" in err and repr(v) in err, (opt, v, err)
            assert "Traceback" not in err


def test_csv_path_checked_before_training(capsys, tmp_path, monkeypatch):
    import londi_jax.switcher.toy_bench as tb

    monkeypatch.setattr(tb, "sweep_toy", lambda *a, **k: pytest.fail("trained before checking --csv"))
    assert main(["toy-sweep", "--csv", str(tmp_path / "missing" / "s.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_python_api_refuses_bad_values_before_training(monkeypatch):
    from londi_jax.switcher import sweep, toy_bench
    from londi_jax.switcher.config import ConfigError, HParams, SwitcherConfig

    monkeypatch.setattr(sweep, "train_many", lambda *a, **k: pytest.fail("training started"))
    monkeypatch.setattr(toy_bench, "train_many", lambda *a, **k: pytest.fail("training started"))
    for kw, match in [(dict(c=float("nan")), "c must be a finite float"), (dict(c=float("inf")), "finite"),
                      (dict(c=-0.1), ">= 0"), (dict(budget=-1), "budget must be an int >= 0"),
                      (dict(seeds=0), "seeds must be an int >= 1"), (dict(eval_episodes=0), "eval_episodes"),
                      (dict(num_updates=0), "num_updates"), (dict(hparams={"gamma": 1.5}), "gamma")]:
        with pytest.raises(ConfigError, match=match):
            toy_bench.run_toy(**kw)
    with pytest.raises(ConfigError, match="c must be a finite float"):
        toy_bench.sweep_toy({"c": [0.1, float("nan")]})
    with pytest.raises(ConfigError, match="eval_episodes"):
        sweep.run_sweep(toy_bench.toy_trainer(), sweep.SweepSpec({"c": [0.1]}), eval_episodes=0)
    with pytest.raises(ConfigError, match="lr must be a finite float > 0"):
        HParams.create(lr=0.0)
    with pytest.raises(ConfigError, match="target_period must be an int >= 1"):
        HParams.create(target_period=0)
    for bad, match in [(dict(hidden=(64, 0)), "hidden"), (dict(num_envs=2.0), "num_envs must be an int"),
                       (dict(learning_starts=20_000), "never start")]:
        with pytest.raises(ConfigError, match=match):
            SwitcherConfig(obs_dim=3, **bad)


# ----------------------------------------------------------------------------- budget 0


def test_budget_zero_exact_solution_is_quick_everywhere():
    # budget 0 means "never call DEEPTHINK": the optimum is the all-QUICK switch, and its value is
    # that policy's value computed independently (linear solve, no budget axis)
    P, R, start = toy.tabular_model(toy.default_params())
    sol = exact.solve(P, R, 0.1, 0.95, budget=0)
    assert sol.policy.shape == (P.shape[1], 1) and not sol.policy.any()
    quick = exact.evaluate_policy(P, R, np.zeros((P.shape[1], 1), np.int32), 0.1, 0.95, budgeted=False)
    np.testing.assert_allclose(sol.V, quick["value"], atol=1e-10)
    assert exact.reachable(P, start, 0).all(axis=1).any()


def test_budget_zero_compare_to_exact_does_not_crash():
    # the CLI crashed here ("zero-size array"): no reachable state has a decision at budget 0
    import jax

    from londi_jax.switcher.network import init_params
    from londi_jax.switcher.toy_bench import compare_to_exact, toy_trainer

    trainer = toy_trainer("dqn", use_budget=True)
    params = init_params(trainer.config, jax.random.key(0))
    out = compare_to_exact(trainer, params, c=0.1, gamma=0.95, budget=0)
    assert out["exact_margin"] is None and out["agreement"] == 1.0 and out["disagreements"] == []
    assert out["learned_value"] == pytest.approx(out["exact_value"]) and out["learned_calls"] == 0.0


def test_budget_zero_renders_without_a_decision_margin():
    text = _render({"learner": "dqn", "c": 0.1, "budget": 0, "seeds": 1, "num_updates": 20, "eval_episodes": 20,
                    "exact_policy": [[0] * 8], "exact_value": 0.5, "exact_margin": None, "exact_calls": 0.0,
                    "agreement": 1.0, "learned_value": 0.5, "mc_return": 0.5, "mc_calls": 0.0, "violations": 0,
                    "per_seed": []})
    assert "no exact decision to make (budget 0" in text and "budget violations: 0 over 20 episodes" in text


# ----------------------------------------------------------------------------- progress


def test_progress_bar_counts_finished_updates(monkeypatch):
    """Each bar update may only count chunks whose results are computed (JAX dispatch is async:
    counting at dispatch showed 100% long before the end)."""
    import types

    import jax
    import jax.numpy as jnp

    from londi_jax.switcher import sweep

    outputs = []  # (updates so far, chunk output), in dispatch order
    real_chunk_fn = sweep._chunk_fn

    def recording_chunk_fn(trainer, n):
        fn = real_chunk_fn(trainer, n)

        def run(ts, hp):
            out = fn(ts, hp)
            outputs.append(((outputs[-1][0] if outputs else 0) + n, out[1]))
            return out

        return run

    seen = []

    class Bar:
        def __init__(self, total, **kw):
            self.n = 0

        def update(self, n):
            self.n += n
            finished = [all(x.is_ready() for x in jax.tree.leaves(out)) for upto, out in outputs if upto <= self.n]
            seen.append((self.n, len(finished), all(finished)))

        def close(self):
            pass

    class SlowTrainer:
        """train_many's view of a trainer: trivial to compile, milliseconds of work per chunk
        (n chained 96x96 matrix products), so a chunk is still running right after dispatch."""

        config = types.SimpleNamespace(num_updates=1200)

        def init_train_state(self, rng, hp):
            return jnp.eye(96) * hp

        def train_chunk(self, ts, hp, n):
            x = jax.lax.fori_loop(0, n, lambda i, x: jnp.tanh(x @ x + hp), ts)
            return x, {"loss": jnp.zeros(n)}

    monkeypatch.setattr(sweep, "_chunk_fn", recording_chunk_fn)
    monkeypatch.setattr(sweep, "tqdm", Bar)
    ts, metrics = sweep.train_many(SlowTrainer(), jax.random.split(jax.random.key(0), 2), jnp.ones(2) * 0.1,
                                   chunk=300)
    assert metrics["loss"].shape == (2, 1200)
    assert [s[0] for s in seen] == [300, 600, 900, 1200]
    assert all(ok for _, _, ok in seen), seen
