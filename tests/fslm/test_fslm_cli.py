"""``londi-jax fslm distill`` and ``londi-jax fslm experiment`` from the command line: a stack
distilled from a JSONL file of inputs and gold answers, resumed; bad input files and settings
refused with the line or field to fix, before any model loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from londi_jax.cli import main
from londi_jax.fslm import load_stack, save_stack_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # the LM tests' helpers
from lm_core_helpers import save_tiny  # noqa: E402

WORDS = ["left", "right", "up", "down"]


@pytest.fixture(scope="module")
def one_stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("fslm_cli")
    tiny, _ = save_tiny(root, "llama")
    spec = save_stack_spec(root / "one.json", [{"name": "answer", "model": str(tiny), "template": "{input} ->"}])
    rows = [{"input": f"go {w} {i}", "answer": f" {w}", "candidates": [f" {v}" for v in WORDS]}
            for i in range(4) for w in WORDS]
    inputs = root / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return spec, inputs, rows


def test_distill_from_the_command_line_learns_the_answers_and_resumes(one_stage, tmp_path, capsys):
    spec, inputs, rows = one_stage
    args = ["fslm", "distill", "--stack", str(spec), "--inputs", str(inputs), "--workdir", str(tmp_path),
            "--set", "epochs=12", "--set", "learning_rate=3e-2", "--set", "batch_size=4", "--set", "lora.rank=4",
            "--no-progress", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stack"] == str(tmp_path / "stack.json") and out["reused"] == []
    assert out["final_loss"]["answer"] > 0  # the trainer's last epoch, reported
    stack = load_stack(out["stack"])
    lp = stack.score([r["input"] for r in rows], [r["candidates"] for r in rows]).logprobs
    acc = sum(r["candidates"][int(v.argmax())] == r["answer"] for r, v in zip(rows, lp)) / len(rows)
    assert acc >= 0.75, acc  # four answers (chance 0.25), learned from the file's gold answers
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["reused"] == ["answer"]


@pytest.mark.parametrize("content, expected", [
    ('{"input": "a"}\nnot json\n', "line 2 is not JSON"),
    ('{"text": "a"}\n', 'line 1: expected an object with an "input" text'),
    ('{"input": "a", "answer": "b"}\n{"input": "c"}\n', "'answer' is on 1 of 2 rows"),
    ('{"input": "a", "label": 1}\n', r"unknown key\(s\) \['label'\]"),
    ('{"input": "a", "candidates": "b c"}\n', r'line 1: "candidates" must be a list of texts'),
    ('{"input": "a", "answer": 3}\n', r'line 1: "answer" must be a text'),
    ("\n\n", "holds no inputs"),
])
def test_bad_input_files_name_the_line(one_stage, tmp_path, capsys, content, expected):
    spec, _, _ = one_stage
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    assert main(["fslm", "distill", "--stack", str(spec), "--inputs", str(bad), "--workdir", str(tmp_path / "w"),
                 "--no-progress"]) == 2
    import re

    assert re.search(expected, capsys.readouterr().err)
    assert not (tmp_path / "w").exists()


def test_bad_settings_fail_before_any_work(one_stage, tmp_path, capsys):
    spec, inputs, _ = one_stage
    assert main(["fslm", "distill", "--stack", str(spec), "--inputs", str(inputs), "--workdir", str(tmp_path / "w"),
                 "--set", "epoch=2"]) == 2
    assert "epochs" in capsys.readouterr().err  # the known fields are listed
    two = save_stack_spec(tmp_path / "two.json", [{"name": "a", "model": "x", "template": "{input}"},
                                                  {"name": "b", "model": "x", "template": "{a}"}])
    assert main(["fslm", "distill", "--stack", str(two), "--inputs", str(inputs), "--workdir", str(tmp_path / "w")]) == 2
    assert "no teacher" in capsys.readouterr().err
    assert main(["fslm", "experiment", "--out", str(tmp_path / "e"), "--set", "train_question=8"]) == 2
    assert "train_questions" in capsys.readouterr().err and not (tmp_path / "e").exists()
    assert main(["fslm", "experiment", "--out", str(tmp_path / "e"), "--set", "models=base,oracle"]) == 2
    assert "oracle" in capsys.readouterr().err and not (tmp_path / "e").exists()
