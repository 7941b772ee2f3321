"""``londi-jax env ...``: JSON keys, dispatch to ScienceWorld, errors."""

from __future__ import annotations

import json
import sys
import types

import pytest

from londi_jax.cli import main
from londi_jax.utils.errors import LondiError


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


# ----------------------------------------------------------------------------- input checked up front


@pytest.mark.parametrize("argv", [
    ["env", "show", "--seed=-1"],
    ["env", "show", "--seed", "1.5"],
    ["env", "show", "--env", "scienceworld", "--variation=-2"],
    ["env", "demos", "--out", "OUT", "--seed=-3"],
    ["env", "demos", "--out", "OUT", "--episodes", "0"],
    ["env", "demos", "--out", "OUT", "--env", "scienceworld", "--max-variations", "0"],
])
def test_bad_numbers_are_refused_when_parsed(argv, capsys, tmp_path):
    argv = [str(tmp_path / "d") if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error: argument --" in err and "expected an int >=" in err
    assert not (tmp_path / "d").exists()  # nothing written


def test_level_parameters_are_checked_with_clear_errors():
    from londi_jax.envs.babyai_text import make_babyai_text
    from londi_jax.envs.babyai_text.levels import LevelParamError

    cases = [
        (dict(room_size=2), "room_size must be an int >= 3, got 2"),  # was a bare AssertionError
        (dict(room_size=5.5), "room_size must be an int >= 3"),
        (dict(num_dists=-1), "num_dists must be an int >= 0"),  # was "ValueError: high <= 0" or a hang
        (dict(max_steps=0), "max_steps must be an int >= 1 or None"),
        (dict(seed=-1), "seed must be an int >= 0"),  # was numpy's "expected non-negative integer"
        (dict(foo=1), "does not take that parameter"),  # was a TypeError from MiniGridEnv
        (dict(room_size=4, num_dists=8), "cannot hold"),  # used to retry for ever
    ]
    for level in ("BabyAI-MixedTrainLocal-v0", "BabyAI-GoToLocal-v0"):
        for kw, msg in cases:
            with pytest.raises(LevelParamError, match=msg):
                make_babyai_text(level, **kw).reset(seed=0)
    with pytest.raises(LevelParamError, match="sets that parameter itself"):
        make_babyai_text("BabyAI-PickupLoc-v0", num_dists=2)
    with pytest.raises(LevelParamError, match=r"room_size >= 6"):  # 9 objects for goto at num_dists=8
        make_babyai_text("BabyAI-MixedTrainLocal-v0", kind="goto", room_size=5)
    with pytest.raises(LevelParamError, match="seed must be an int >= 0"):
        make_babyai_text("BabyAI-GoToLocal-v0").reset(seed=-3)
    env = make_babyai_text("BabyAI-MixedTrainLocal-v0", kind="goto", room_size=4, num_dists=0)
    assert env.reset(seed=0).mission.startswith("go to")  # the tightest room that fits still works


def test_crowded_level_gives_up_with_a_clear_error(monkeypatch):
    # room_size=5, 5 objects for goto: placeable in principle (the static check passes) but no layout
    # with every object reachable is found; generation used to loop for ever
    from londi_jax.envs.babyai_text import levels
    from londi_jax.envs.babyai_text import make_babyai_text

    monkeypatch.setattr(levels, "MAX_GEN_ATTEMPTS", 30)
    env = make_babyai_text("BabyAI-MixedTrainLocal-v0", kind="goto", room_size=5, num_dists=4)
    with pytest.raises(levels.LevelGenerationError, match="too crowded.*larger room_size or fewer num_dists"):
        env.reset(seed=0)


def test_failed_demos_leave_no_stub_and_the_corrected_command_runs(capsys, tmp_path, monkeypatch):
    from londi_jax.envs.babyai_text import demos

    out = tmp_path / "demos"
    # a bad seed through the Python API: refused before the folder exists
    with pytest.raises(LondiError, match="seed must be an int >= 0"):
        demos.write_demos(out, "GoToLocal", 2, seed=-3, progress=False)
    with pytest.raises(LondiError, match="room_size must be an int >= 3"):
        demos.write_demos(out, "GoToLocal", 2, room_size=2, progress=False)
    assert not out.exists()
    # a failure during the first episode (here: injected) removes the stub it made
    real = demos.expert_episode

    def broken(*a, **k):
        raise RuntimeError("bot crashed")

    monkeypatch.setattr(demos, "expert_episode", broken)
    with pytest.raises(RuntimeError):
        demos.write_demos(out, "GoToLocal", 2, seed=5, progress=False)
    assert not out.exists()
    monkeypatch.setattr(demos, "expert_episode", real)
    code, text, err = run(capsys, "env", "demos", "--level", "GoToLocal", "--episodes", "2", "--seed", "0",
                          "--out", str(out))
    assert code == 0, err
    assert text.startswith(f"wrote 2 episodes of BabyAI-GoToLocal-v0 to {out} (2 in total")


def test_demos_report_the_episodes_really_written(capsys, tmp_path):
    out = str(tmp_path / "demos")
    argv = ["env", "demos", "--level", "GoToLocal", "--seed", "1", "--out", out]
    code, text, _ = run(capsys, *argv, "--episodes", "2")
    assert code == 0 and text.startswith("wrote 2 episodes")
    # the same command again writes nothing, and says so (it used to print "wrote 2 episodes")
    code, text, _ = run(capsys, *argv, "--episodes", "2", "--json")
    r = json.loads(text)
    assert code == 0 and r["episodes_added"] == 0 and r["episodes_written"] == 2
    code, text, _ = run(capsys, *argv, "--episodes", "2")
    assert text.startswith(f"nothing to write: {out} already holds the episodes")
    code, text, _ = run(capsys, *argv, "--episodes", "3")
    assert text.startswith("wrote 1 episodes") and "2 were already there (3 in total" in text
    assert len((tmp_path / "demos" / "episodes.jsonl").read_text().splitlines()) == 3


def test_demos_out_checked_before_work(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "env", "demos", "--level", "GoToLocal", "--episodes", "1", "--out", str(blocker / "d"))
    assert code == 2 and "is a file" in err and "Traceback" not in err


# -- babyai-jax ------------------------------------------------------------------------------
JAX_SHOW_CASES = [("BabyAI-MixedTrainLocal-v0", 4, None, "turn left,go forward,go forward,pick up"),
                  ("BabyAI-MixedTestLocal-v0", 1, "putnext", "turn right,go forward,pick up,turn left,drop"),
                  ("BabyAI-PutNextLocal-v0", 2, None, "go forward,toggle,turn left,go forward"),
                  ("BabyAI-GoToAfterPickUpLocal-v0", 0, None, "")]


@pytest.mark.parametrize("level,seed,kind,actions", JAX_SHOW_CASES)
def test_show_babyai_jax_from_minigrid_equals_babyai_text(level, seed, kind, actions):
    from londi_jax.envs.cli import babyai_jax_show, babyai_show

    want = babyai_show(level, seed=seed, kind=kind, actions=actions)
    got = babyai_jax_show(level, seed=seed, kind=kind, actions=actions, from_minigrid=True)
    assert (got["env"], got["layout"]) == ("babyai-jax", "minigrid")
    assert {k: got[k] for k in want if k != "env"} == {k: v for k, v in want.items() if k != "env"}


def test_show_babyai_jax_cli_with_its_own_layout(capsys):
    code, out, _ = run(capsys, "env", "show", "--env", "babyai-jax", "--level", "MixedTrainLocal", "--kind", "pickup",
                       "--seed", "3", "--actions", "turn left,turn left", "--json")
    r = json.loads(out)
    assert code == 0 and r["layout"] == "jax" and r["task_kind"] == "pickup" and r["mission"].startswith("pick up ")
    assert r["actions"] == ["turn left", "turn left"] and r["prompt"].count("\n Action ") == 3
    assert r["prompt"].endswith(", \n Action 2: ") or r["prompt"].endswith(": \n Action 2: ")
    assert r["prompt_tokens"] > 50 and r["max_steps"] == 64


@pytest.mark.parametrize("argv,message", [
    (["--env", "babyai-jax", "--actions", "turn left,jump"], "invalid BabyAI-Text action 'jump'"),
    (["--env", "babyai-jax", "--level", "GoToLocal"], "use --from-minigrid"),
    (["--env", "babyai-jax", "--tokenizer", "no-such-tok"], "unknown tokenizer 'no-such-tok'"),
    (["--env", "babyai-text", "--from-minigrid"], "babyai-jax option"),
])
def test_show_babyai_jax_bad_input_is_a_clear_error(capsys, argv, message):
    code, _, err = run(capsys, "env", "show", *argv)
    assert code == 2 and message in err


def test_show_refuses_actions_past_the_end(capsys):
    # GoToLocal seed 0: "go to the green ball"; max_steps 64, so 65 turns run past the time limit
    code, _, err = run(capsys, "env", "show", "--level", "GoToLocal", "--actions", ",".join(["turn left"] * 66))
    assert code == 2 and "the episode ended after action 64 of 66" in err


def test_show_babyai_jax_more_bad_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:  # refused while the command line is read
        run(capsys, "env", "show", "--env", "babyai-jax", "--seed", str(10**20))
    assert exc.value.code == 2 and "below 2**63" in capsys.readouterr().err
    code, _, err = run(capsys, "env", "show", "--env", "babyai-jax", "--tokenizer", str(tmp_path))
    assert code == 2 and "has no tokenizer" in err
    code, _, err = run(capsys, "env", "show", "--env", "babyai-jax", "--kind", "pick up then go to")
    assert code == 2 and "unknown Mixed task kind" in err
