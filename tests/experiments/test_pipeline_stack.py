"""An FSLM stack as QUICK in the LONDI pipeline (``quick.stack``): checked before any work, used as
it is (no behaviour cloning), written into the run with absolute paths, and serving QUICK in the
switch-data rollouts with its stages' summed cost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from londi_jax.cli import main
from londi_jax.experiments.config import ConfigFieldError, preset, with_overrides
from londi_jax.fslm import load_stack, save_stack_spec

pytestmark = pytest.mark.slow


def _stack(tmp_path, model_dir, final="{input}"):
    return save_stack_spec(tmp_path / "quick_stack.json", [
        {"name": "notes", "model": str(model_dir), "template": "{input} notes:", "max_new_tokens": 3, "stop": [],
         "allow_empty": True},
        {"name": "act", "model": str(model_dir), "template": final}], name="two-stage")


def test_a_stack_serves_as_quick(tiny_run, tmp_path, capsys):
    quick_dir = tiny_run.path / "models" / "quick"
    stack_file = _stack(tmp_path, quick_dir)
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), "--fork-from", str(tiny_run.path), "--set", f"quick.stack={stack_file}",
                 "--stages", "demos,models,switch_data", "--no-progress", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["copied"] == ["demos"] and res["ran"] == ["models", "switch_data"]
    models = json.loads((out / "models.done.json").read_text())
    assert models["quick"]["stages"] == ["notes", "act"] and models["quick"]["steps"] == 0  # not cloned
    assert not (out / "models" / "quick").exists()
    # DEEPTHINK's inputs did not change: the fork copied it instead of cloning it again
    assert models["deepthink"]["copied_from"] == str(tiny_run.path)
    mine, src = out / "models" / "deepthink", tiny_run.path / "models" / "deepthink"
    assert sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in src.iterdir())
    assert all((mine / p.name).read_bytes() == p.read_bytes() for p in src.iterdir() if p.is_file())
    assert json.loads((out / "models" / "deepthink_bc.json").read_text()) == json.loads(
        (tiny_run.path / "models" / "deepthink_bc.json").read_text())
    written = json.loads((out / "models" / "quick.stack.json").read_text())
    assert [s["model"] for s in written["stages"]] == [str(quick_dir)] * 2
    # QUICK's scores in the switch data are the stack's: its final prompt is the input, so they equal
    # the tiny run's own QUICK on the same episodes, while its cost adds the notes stage's generation
    ours, theirs = np.load(out / "switch_data.npz"), np.load(tiny_run.path / "switch_data.npz")
    assert set(ours.files) == set(theirs.files)
    for key in ours.files:
        if ours[key].dtype.kind == "f":
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-5, err_msg=key)
        else:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    stats = json.loads((out / "switch_data.done.json").read_text())
    stack = load_stack(out / "models" / "quick.stack.json")
    assert stack.stages[0].model is stack.stages[1].model  # one model serving both stages
    assert stats["quick_seconds"] > 0


def test_stack_settings_are_checked_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "londi_jax-fslm-stack", "stages": [
        {"name": "a", "model": "x", "template": "{later}"}]}))
    out = tmp_path / "run"
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--set", f"quick.stack={bad}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "quick.stack" in err and "{later}" in err and not (out / "demos").exists()
    assert main(["demo", "--preset", "tiny", "--out", str(out), "--set", f"deep.stack={tmp_path / 'none.json'}",
                 "--no-progress"]) == 2
    assert "deep.stack" in capsys.readouterr().err
    with pytest.raises(ConfigFieldError, match="quick.stack"):
        with_overrides(preset("jax-online"), {"quick.stack": str(bad)})
