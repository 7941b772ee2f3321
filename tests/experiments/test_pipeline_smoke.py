"""End-to-end smoke run of the LONDI pipeline on the ``tiny`` preset through ``londi-jax demo``:
every stage runs, every output exists and is well-formed, a rerun resumes without redoing work,
and a mismatched rerun is refused. (Resuming, forking, forcing, torn writes, read-only runs and
permissions: test_pipeline_resume.py.)"""

from __future__ import annotations

import json

import pytest

from londi_jax.cli import main
from londi_jax.experiments.config import preset
from londi_jax.experiments.pipeline import Pipeline, PipelineError

METHODS = {"QUICK-only", "DEEPTHINK-only", "LONDI", "LONDI-B", "Random", "Threshold", "Classifier", "SwiftSage",
           "Oracle"}


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run.path  # one finished tiny run per session (conftest.py)


def test_outputs_exist_and_are_well_formed(run_dir):
    for stage in Pipeline.STAGES:
        assert (run_dir / f"{stage}.done.json").exists(), stage
    for name in ("quick", "deepthink"):
        assert (run_dir / "models" / name / "config.json").exists()
        assert (run_dir / "models" / name / "model.safetensors").exists()
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    cfg = preset("tiny")
    assert {r["method"] for r in results["runs"]} == METHODS
    for r in results["runs"]:
        assert len(r["episodes"]) == cfg.eval.episodes
        for e in r["episodes"]:
            assert e["kind"] in cfg.env.kinds
            assert e["quick_calls"] + e["deep_calls"] >= e["length"]  # every step ran at least one model
            if r["method"] == "QUICK-only":
                assert e["deep_calls"] == 0
            if r["method"] == "DEEPTHINK-only":
                assert e["deep_calls"] == e["length"] and e["quick_calls"] == 0
            if r["method"] == "LONDI-B":
                assert e["deep_calls"] <= r["params"]["budget"] and not e["violated"]
            if r["method"] == "Oracle":  # QUICK acts where DEEPTHINK is not called; only those calls are paid
                assert e["quick_calls"] == e["length"] and e["deep_calls"] <= e["length"]
    table = (run_dir / "report" / "results_table.md").read_text()
    for m in METHODS:
        assert m in table
    png = (run_dir / "report" / "cost_quality.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert {t["name"] for t in summary["targets"]} >= {"deep_beats_quick", "londi_b_no_violations"}
    assert "## Against the oracle switch" in table and {c["method"] for c in summary["oracle"]} >= {"LONDI", "Random"}
    logs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any(row["prefix"].startswith("bc/") for row in logs)
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    data = json.loads((run_dir / "switchers.done.json").read_text())
    assert len(data["offline_call_rates"]) == len(cfg.switch.c_grid)
    assert data["devices"]["mesh"] == "one device" and data["devices"]["devices"] == 1  # where the grids ran


def test_rerun_resumes_and_mismatch_is_refused(run_dir, capsys):
    before = (run_dir / "eval" / "runs.jsonl").read_text()
    res = Pipeline(preset("tiny"), run_dir).run()
    assert res["timings"] == {}  # every stage was already done
    assert (run_dir / "eval" / "runs.jsonl").read_text() == before
    other = preset("tiny")
    import dataclasses
    other = dataclasses.replace(other, eval=dataclasses.replace(other.eval, episodes=8))
    with pytest.raises(PipelineError, match="different configuration"):
        Pipeline(other, run_dir)
    assert main(["demo", "--preset", "tiny", "--out", str(run_dir), "--set", "eval.episodes=8"]) == 2
    assert "different configuration" in capsys.readouterr().err


def _script(name):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_experiment_scripts_work_on_a_finished_run(run_dir, capsys):
    import re

    from londi_jax.agents.calibration import CalibrationError

    calibrate = _script("calibrate").main
    args = ["--run", str(run_dir), "--c-grid", "0.0", "0.05", "0.5", "--seeds", "1", "--target-rate"]
    try:  # an all-DEEPTHINK target is usually out of reach: the error names the achievable range
        out = calibrate(args + ["0.999"])
    except CalibrationError as err:
        lo, hi = map(float, re.search(r"range \[([-0-9.e]+), ([-0-9.e]+)\]", str(err)).groups())
        out = calibrate(args + [str((lo + hi) / 2)])
    assert 0.0 <= out["c"] <= 0.5 and len(out["offline_call_rates"]) == 3
    res = _script("run").main(["--preset", "tiny", "--out", str(run_dir), "--stages", "report"])
    assert res["timings"] == {}  # already done: resumed, nothing redone
