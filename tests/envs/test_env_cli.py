"""``londi-jax env ...``: JSON keys, dispatch to ScienceWorld, errors."""

from __future__ import annotations

import json
import sys
import types

import pytest

from londi_jax.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_babyai_json(capsys):
    code, out, _ = run(capsys, "env", "show", "--env", "babyai-text", "--level", "BabyAI-GoToLocal-v0", "--seed", "0", "--json")
    r = json.loads(out)
    assert code == 0
    assert {"mission", "descriptions", "prompt"} <= set(r)
    assert r["mission"] == "go to the green ball" and r["descriptions"][0] == "You see a wall 2 steps left"
    assert r["prompt"].endswith("\n Action 0: ") and r["task_kind"] == "goto"


def test_show_babyai_text_and_kind(capsys):
    code, out, _ = run(capsys, "env", "show", "--level", "MixedTestLocal", "--kind", "open", "--seed", "2")
    assert code == 0 and "Mission: open the" in out and "GLAM prompt:" in out


def test_show_unknown_level_is_clean_error(capsys):
    code, _, err = run(capsys, "env", "show", "--level", "Nope")
    assert code == 2 and "unknown level 'Nope'" in err and "BabyAI-GoToLocal-v0" in err


def test_unknown_env_lists_known(capsys):
    with pytest.raises(SystemExit):
        main(["env", "show", "--env", "atari"])
    err = capsys.readouterr().err
    assert "babyai-text" in err and "scienceworld" in err


def test_levels_json(capsys):
    code, out, _ = run(capsys, "env", "levels", "--json")
    names = {x["name"]: x for x in json.loads(out)["levels"]}
    assert code == 0 and names["BabyAI-MixedTrainLocal-v0"]["source"] == "glam"
    assert names["BabyAI-GoToLocal-v0"]["local"] and not names["BabyAI-BossLevel-v0"]["local"]


def test_scienceworld_dispatch(capsys, monkeypatch):
    calls = {}
    fake = types.ModuleType("londi_jax.envs.scienceworld")

    def show(task, variation, split):
        calls["show"] = (task, variation, split)
        return {"task": task, "task_description": "boil water", "observation": "kitchen", "num_valid_actions": 42}

    def write_demos(out_dir, tasks, split, max_variations, overwrite):
        calls["demos"] = (out_dir, tasks, split, max_variations, overwrite)
        return {"episodes_written": 3}

    fake.show, fake.write_demos = show, write_demos
    monkeypatch.setitem(sys.modules, "londi_jax.envs.scienceworld", fake)
    code, out, _ = run(capsys, "env", "show", "--env", "scienceworld", "--task", "1-1", "--variation", "0", "--split", "dev", "--json")
    assert code == 0 and calls["show"] == ("1-1", 0, "dev") and json.loads(out)["num_valid_actions"] == 42
    code, out, _ = run(capsys, "env", "demos", "--env", "scienceworld", "--tasks", "1-1", "4-2", "--max-variations", "2", "--out", "d", "--json")
    assert code == 0 and calls["demos"] == ("d", ["1-1", "4-2"], "train", 2, False)


def test_demos_cli(capsys, tmp_path):
    out_dir = tmp_path / "demos"
    code, out, _ = run(capsys, "env", "demos", "--env", "babyai-text", "--level", "GoToLocal", "--episodes", "3", "--seed", "1", "--out", str(out_dir), "--json")
    r = json.loads(out)
    assert code == 0 and r["episodes_written"] == 3 and r["level"] == "BabyAI-GoToLocal-v0"
    assert len((out_dir / "episodes.jsonl").read_text().splitlines()) == 3
    code, _, err = run(capsys, "env", "demos", "--level", "PickupLoc", "--episodes", "1", "--out", str(out_dir))
    assert code == 2 and "--overwrite" in err
