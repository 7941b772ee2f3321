"""The ``londi-jax toy`` command."""

import json

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
    assert main(["toy", "--budget", "-1"]) == 2
    assert "--budget must be >= 0" in capsys.readouterr().err
    assert main(["toy", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_toy_sweep_table_json_and_csv(capsys, tmp_path):
    out_csv = tmp_path / "sweep.csv"
    rc = main(["toy-sweep", "--c", "0.05", "1.0", "--budget", "1", "--seeds", "2", "--updates", "40",
               "--eval-episodes", "50", "--csv", str(out_csv), "--json", "--no-progress"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["members"] == 4 and len(r["rows"]) == 4
    assert sorted((row["c"], row["seed"]) for row in r["rows"]) == [(0.05, 0), (0.05, 1), (1.0, 0), (1.0, 1)]
    P, R, start = toy.tabular_model(toy.default_params())
    for row in r["rows"]:
        want = exact.start_value(exact.solve(P, R, row["c"], 0.95, budget=1).V, start)
        assert row["exact_value"] == pytest.approx(want) and row["violations"] == 0
    lines = out_csv.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("c,budget,seed,")
