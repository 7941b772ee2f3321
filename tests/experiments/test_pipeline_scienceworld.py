"""The whole LONDI pipeline on ScienceWorld, every stage, through ``londi-jax demo``: the
sw-small preset shrunk to two task types, a few episodes and tiny models (its numbers mean
nothing; what is checked is that every stage runs on the simulator and every output has
ScienceWorld's form: scores, the test split, the native SwiftSage baseline)."""

from __future__ import annotations

import json

import pytest

from londi_jax.cli import main

pytestmark = pytest.mark.slow

SETS = ["env.kinds=4-1,7-1", "env.demo_episodes=3", "env.max_steps=5", "env.history=3",
        *[f"{m}.{k}" for m in ("quick", "deep") for k in ("hidden_size=16", "num_layers=1", "num_heads=1",
                                                           "head_dim=16", "intermediate_size=32", "vocab_size=200",
                                                           "eval_episodes=0", "bc.epochs=1", "bc.batch_size=4",
                                                           "bc.candidates=8")],
        "quick.demo_kinds=4-1", "switch.collect_episodes=4", "switch.num_updates=20", "switch.seeds=1",
        "switch.c_grid=0.05", "switch.budgets=1", "switch.hidden=16", "eval.episodes=2", "eval.seeds=1",
        "eval.num_envs=2"]


@pytest.fixture(scope="module")
def sw_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sw") / "run"
    args = ["demo", "--preset", "sw-small", "--out", str(out), "--no-progress"]
    for s in SETS:
        args += ["--set", s]
    assert main(args) == 0
    return out


def test_every_stage_runs_on_scienceworld(sw_run):
    for stage in ("demos", "models", "switch_data", "switchers", "evaluate", "report"):
        assert (sw_run / f"{stage}.done.json").exists(), stage
    demos = json.loads((sw_run / "demos.done.json").read_text())
    assert demos["episodes"] == 6 and demos["success_rate"] == 1.0  # gold paths of 3 train variations x 2 tasks
    results = json.loads((sw_run / "eval" / "results.json").read_text())
    meta = results["meta"]
    assert (meta["env"], meta["quality"], meta["split"], meta["step_limit"]) == ("scienceworld", "score", "test", 5)
    methods = {r["method"] for r in results["runs"]}
    assert {"QUICK-only", "DEEPTHINK-only", "LONDI", "LONDI-B", "Random", "Threshold", "SwiftSage", "Oracle"} <= methods
    for r in results["runs"]:
        assert [e["kind"] for e in r["episodes"]] == ["4-1", "7-1"]  # the same episodes for every method
        for e in r["episodes"]:
            assert e["score"] is not None and (e["score"] == -100 or 0 <= e["score"] <= 100)
            assert 1 <= e["length"] <= 5 and not e["lost"]
        if r["method"] == "SwiftSage":
            assert r["params"] == {"native": True}
        if r["method"] == "Oracle":  # the gold path is the expert
            assert r["params"] == {"expert": "gold path (while followed)"}
            assert all(e["deep_calls"] <= e["length"] == e["quick_calls"] for e in r["episodes"])
        if r["method"] == "LONDI-B":
            assert all(e["deep_calls"] <= 1 for e in r["episodes"])
    summary = json.loads((sw_run / "report" / "summary.json").read_text())
    assert summary["meta"]["quality"] == "score" and summary["targets"]
    table = (sw_run / "report" / "results_table.md").read_text()
    assert "score" in table.lower() and "SwiftSage" in table
    data = json.loads((sw_run / "switch_data.done.json").read_text())
    assert data["episodes"] == 4 and data["states"] >= 4
