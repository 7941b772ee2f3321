"""ScienceWorld wrapper: tasks, splits, gold paths, valid actions, JVM failures and clean-up.

JVM starts are slow (seconds), so most checks share one env; the tests that start extra JVMs
are marked slow. Every JVM started here carries a per-module tag, and the module ends by
checking that none of them is still running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from londi_jax.envs import scienceworld as sw
from londi_jax.envs.base import TextEnv
from londi_jax.utils.errors import LondiError, UnknownNameError

from jvm_support import tagged_jvms, wait_no_jvms  # noqa: E402

TAG = f"sw-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", autouse=True)
def jvm_tag():
    """Tag this module's JVMs; at the end no tagged JVM may be left (the session-level check)."""
    with tagged_jvms(TAG, "the ScienceWorld tests"):
        yield TAG


@pytest.fixture(scope="module")
def env(jvm_tag):
    e = sw.ScienceWorldTextEnv("4-1", split="train", simplifications="easy")
    yield e
    e.close()
    assert e.jvm_pid is None


# -- no JVM needed -------------------------------------------------------------------------------


def test_task_catalogue():
    tasks = sw.list_tasks()
    assert len(tasks) == 30 and len({t.id for t in tasks}) == 30
    names = sorted(t.name for t in tasks)
    assert all(names[t.index] == t.name for t in tasks)
    boil = sw.resolve_task("1-1")
    assert (boil.name, boil.index) == ("boil", 0)
    assert sw.resolve_task("boil") == sw.resolve_task("task-1-boil") == sw.resolve_task(0) == sw.resolve_task("0") == boil
    # the alphabetical indices SwiftSage uses, from the reference table
    assert sw.resolve_task("1-2").index == 22 and sw.resolve_task("2-1").index == 29
    assert sw.resolve_task("mendellian-genetics-known-plant").id == "10-1"  # old typo


def test_unknown_task_lists_known_ones():
    with pytest.raises(UnknownNameError) as err:
        sw.ScienceWorldTextEnv("boiling-water")
    msg = str(err.value)
    assert "'boiling-water'" in msg and "1-1 (boil)" in msg and "10-2 (mendelian-genetics-unknown-plant)" in msg
    with pytest.raises(UnknownNameError):
        sw.resolve_task(30)
    with pytest.raises(LondiError, match="an id like"):
        sw.resolve_task(1.5)


def test_bad_arguments_fail_before_starting_java():
    before = sw.live_jvm_pids(TAG)
    with pytest.raises(UnknownNameError, match="dev, test, train"):
        sw.ScienceWorldTextEnv("1-1", split="validation")
    with pytest.raises(UnknownNameError, match="teleportAction"):
        sw.ScienceWorldTextEnv("1-1", simplifications="teleport")
    with pytest.raises(LondiError, match="needs electrical actions"):
        sw.ScienceWorldTextEnv("3-1", simplifications="noElectricalAction")
    with pytest.raises(LondiError, match="step_limit"):
        sw.ScienceWorldTextEnv("1-1", step_limit=0)
    assert sw.live_jvm_pids(TAG) == before


# -- one shared JVM ------------------------------------------------------------------------------------


def test_env_implements_textenv(env):
    assert isinstance(env, TextEnv)
    assert env.jvm_pid in sw.live_jvm_pids(TAG)


def test_task_names_and_splits_agree_with_the_simulator(env):
    assert env._sim.get_task_names() == sorted(t.name for t in sw.list_tasks())
    assert env.variations == list(range(150)) and env.split_range() == (0, 149)  # 4-1 train: 0-149
    with pytest.raises(LondiError, match=r"variation 150 is not in the train split of task 4-1 .*0\.\.149.*300 variations"):
        env.check_variation(150)
    with pytest.raises(LondiError, match=r"0\.\.149"):
        env.reset(variation=-1)


@pytest.mark.parametrize("variation", [0, 3, 77])
def test_gold_path_scores_100(env, variation):
    first = env.reset(variation=variation, with_valid=False, gold_path=True)
    assert first.info["variation"] == variation and first.mission.startswith("Your task is to find")
    gold = env.gold_actions()
    assert 3 <= len(gold) <= 20
    total = first.info["score"]
    for i, action in enumerate(gold):
        step = env.step(action)
        total += step.reward
        assert step.info["score"] == total
        assert step.done == (i == len(gold) - 1)
    assert step.terminated and not step.truncated
    assert step.info["success"] and step.info["score"] == 100
    with pytest.raises(LondiError, match="episode is over"):
        env.step("look around")


def test_seed_selects_variation(env):
    assert env.reset(5, with_valid=False).info["variation"] == 5
    assert env.reset(155, with_valid=False).info["variation"] == 5  # seed % 150
    assert env.reset(with_valid=False).info["variation"] == 6  # no seed: the next one
    a = env.reset(7, with_valid=False)
    b = env.reset(7, with_valid=False)
    assert (a.observation, a.mission) == (b.observation, b.mission)


def test_valid_actions_only_on_request(env):
    first = env.reset(3, with_valid=False)
    assert first.valid_actions == [] and first.info["valid_actions_skipped"]
    step = env.step("look around")
    assert "valid_actions" not in step.info
    step = env.step("look around", with_valid=True)
    valid = step.info["valid_actions"]
    assert valid == env.valid_actions() == sorted(set(valid))
    assert "look around" in valid and "focus on blue jay" in valid
    assert set(valid) == set(env._sim.get_valid_action_object_combinations())  # the package's own list
    assert env.reset(3).valid_actions == valid  # reset lists them by default


def test_free_text_ambiguity_failure_and_step_limit(env):
    env.reset(3, with_valid=False)
    s = env.step("dance with the blue jay")
    assert s.observation == "No known action matches that input." and not s.done and s.reward == 0
    s = env.step("open door")  # ambiguous: answered with 0
    assert "disambiguated" in s.info and not s.observation.startswith("Ambiguous")
    with pytest.raises(LondiError, match="action is a string"):
        env.step(3)
    s = env.step("focus on orange")  # an orange is not a living thing: the task fails
    assert s.terminated and not s.info["success"] and s.info["score"] == -100 and s.reward < 0
    old, env.step_limit = env.step_limit, 3
    try:
        env.reset(3, with_valid=False)
        steps = [env.step("look around") for _ in range(3)]
        assert [s.truncated for s in steps] == [False, False, True] and not steps[-1].terminated
    finally:
        env.step_limit = old


@pytest.mark.slow
def test_killed_jvm_costs_the_episode_only(env):
    env.reset(3, with_valid=False)
    env.step("look around")
    old_pid = env.jvm_pid
    os.kill(old_pid, signal.SIGKILL)
    s = env.step("focus on blue jay")
    assert s.truncated and not s.terminated
    assert s.info["episode_lost"] and s.info["jvm_restarted"] and not s.info["success"]
    assert env.jvm_pid != old_pid and old_pid not in sw.live_jvm_pids(TAG)
    # the next episode is fine: the gold path still reaches 100
    env.reset(variation=3, with_valid=False, gold_path=True)
    for a in env.gold_actions():
        s = env.step(a)
    assert s.info["success"] and s.info["score"] == 100


@pytest.mark.slow
def test_hung_jvm_times_out_and_restarts():
    with sw.ScienceWorldTextEnv("4-1", variation=3, call_timeout=5.0) as env:
        env.reset(with_valid=False)
        old_pid = env.jvm_pid
        os.kill(old_pid, signal.SIGSTOP)
        t = time.monotonic()
        s = env.step("look around")
        assert time.monotonic() - t < 150  # not the 300 s slow-call ceiling: cut at 5 s, plus a JVM restart
        assert s.info["episode_lost"] and s.info["jvm_restarted"]
        assert old_pid not in sw.live_jvm_pids(TAG)
        assert env.reset().info["variation"] == 3
        assert env.step("look around").observation.startswith("This outside location")


# -- show / demos -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_show_boil_variation_0():
    r = sw.show("boil", 0, simplifications="")
    assert r["task"]["id"] == "1-1" and r["task"]["index"] == 0
    assert r["task_description"].startswith("Your task is to boil water.")
    assert r["split_range"] == [0, 13] and r["num_variations"] == 14  # 1-1 train: 0-13
    assert r["num_variations_total"] == 30
    assert r["num_valid_actions"] == len(r["valid_actions"]) > 100
    assert "This room is called" in r["observation"] and "inventory" in r["inventory"]
    json.dumps(r)
    dev = sw.show("1-1", 20, split="dev", simplifications="easy")
    assert dev["split_range"] == [14, 20] and dev["variation"] == 20 and dev["simplifications"] == "easy"


@pytest.mark.slow
def test_write_demos_resume_and_refuse(tmp_path):
    out = tmp_path / "demos"
    res = sw.write_demos(out, ["4-1"], "train", max_variations=2, progress=False)
    assert res["written"] == 2 and res["skipped"] == 0
    index, records = sw.read_demos(out)
    assert index["split"] == "train" and index["simplifications"] == "easy" and index["tasks"]["4-1"]["variations"] == [0, 1]
    for rec in records:
        assert rec["success"] and rec["final_score"] == 100 and rec["complete"]
        assert [s["action"] for s in rec["steps"]] == rec["gold_actions"]
        assert rec["steps"][-1]["terminated"] and rec["steps"][-1]["score"] == 100
        scores = [rec["initial_score"]] + [s["score"] for s in rec["steps"]]
        assert [s["reward"] for s in rec["steps"]] == [b - a for a, b in zip(scores, scores[1:])]
    # resume: an interrupted write left a torn line; the two complete records are kept
    with (out / "4-1.jsonl").open("a") as f:
        f.write('{"task": "4-1", "varia')
    res = sw.write_demos(out, "find-living-thing", "train", max_variations=3, progress=False)
    assert res["written"] == 1 and res["skipped"] == 2
    _, records = sw.read_demos(out)
    assert sorted(r["variation"] for r in records) == [0, 1, 2]
    with pytest.raises(LondiError, match="overwrite=True"):
        sw.write_demos(out, ["4-1"], "dev", max_variations=1, progress=False)
    res = sw.write_demos(out, ["4-1"], "dev", max_variations=1, overwrite=True, progress=False)
    assert res["written"] == 1 and sw.read_demos(out)[0]["tasks"]["4-1"]["variations"] == [150]


# -- clean-up when the user does not call close() -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["exception", "sigkill"])
def test_no_jvm_left_when_python_exits_badly(ending):
    tag = f"{TAG}-{ending}"
    code = textwrap.dedent("""
        import os, sys, time
        from londi_jax.envs.scienceworld import ScienceWorldTextEnv
        env = ScienceWorldTextEnv("4-1", variation=0)
        env.reset(with_valid=False)
        print(env.jvm_pid, flush=True)
        if sys.argv[1] == "exception":
            raise RuntimeError("crash without close()")
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, ending], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ | {sw.JVM_TAG_ENV: tag}, text=True)
    jvm = int(proc.stdout.readline())
    assert sw.live_jvm_pids(tag) == [jvm]
    if ending == "sigkill":
        proc.kill()  # no atexit: the JVM notices its stdin closing (--die-on-broken-pipe)
    proc.wait(timeout=60)
    if ending == "exception":
        assert "crash without close()" in proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert wait_no_jvms(tag) == []


def test_import_leaves_logging_alone_and_py4j_noise_is_dropped_only_during_calls():
    code = textwrap.dedent("""
        import io, json, logging
        root = logging.getLogger()
        state = lambda: (len(root.filters), root.level, len(root.handlers), logging.getLogger("py4j").level,
                         len(logging.getLogger("py4j").filters))
        before = state()
        from londi_jax.envs import scienceworld as sw
        from londi_jax.envs.scienceworld import jvm
        after_import = state()
        buf = io.StringIO()
        logging.basicConfig(stream=buf, level=logging.INFO)
        import py4j.java_gateway as g  # a record made from py4j's own file, as its send_command does
        rec = lambda msg: root.handle(root.makeRecord("root", logging.ERROR, g.__file__, 1, msg, (), None))
        with jvm.quiet_py4j():
            with jvm.quiet_py4j():
                rec("dropped-inner")
            rec("dropped-outer")
            logging.error("kept-ours")
        rec("kept-after")
        print(json.dumps([before == after_import, state() == (0, logging.INFO, 1, logging.NOTSET, 0),
                          buf.getvalue().split()]))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    same, restored, lines = json.loads(res.stdout.strip().splitlines()[-1])
    assert same and restored
    assert not any("dropped" in x for x in lines)
    assert any("kept-ours" in x for x in lines) and any("kept-after" in x for x in lines)
