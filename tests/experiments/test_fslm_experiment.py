"""The FSLM benchmark experiment (``experiments.fslm``) end to end on a tiny random Llama as base
and teacher, the real installed sets, a few items: every model is distilled and evaluated through
lm-eval, the report holds their rows and the stack's hand-offs, a rerun reuses everything, and bad
configurations fail before any work. (The preset's numbers are in the README, never asserted.)"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # the LM tests' helpers
from lm_core_helpers import COMMON, make_tokenizer  # noqa: E402

from londi_jax.agents.bc import BCConfig  # noqa: E402
from londi_jax.experiments.fslm import FSLM_PRESETS, STAGES, FSLMConfig, FSLMError, fslm_preset, run_fslm  # noqa: E402
from londi_jax.lm.lora import LoRAConfig  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama with a context long enough for MMLU prompts in its byte-level tokenizer."""
    import torch
    import transformers as T

    root = tmp_path_factory.mktemp("fslm_tiny")
    torch.manual_seed(0)
    T.AutoModelForCausalLM.from_config(T.LlamaConfig(**{**COMMON, "max_position_embeddings": 4096})).save_pretrained(
        root / "llama")
    make_tokenizer(str(root)).save_pretrained(root / "llama")
    return str(root / "llama")


def config(tiny: str, **kw) -> FSLMConfig:
    return FSLMConfig(preset="test", base=tiny, teacher=tiny, train_sources=("arc_easy:validation",),
                      train_questions=8, max_train_tokens=160, tasks=("tinymmlu",), eval_limit=3, batch_size=8,
                      examples=2, bc=BCConfig(epochs=1, batch_size=8, learning_rate=1e-3, warmup_steps=1, loss="both",
                                              finetune="lora", candidates=4, length_multiple=64,
                                              lora=LoRAConfig(rank=2, alpha=4.0)), **kw)


def test_the_experiment_runs_reports_and_resumes(real_sets, tiny, tmp_path, no_network):
    cfg = config(tiny)
    res = run_fslm(cfg, tmp_path, progress=False)
    assert set(res["evals"]) == {"base.tinymmlu", "single.tinymmlu", "stack.tinymmlu"}
    for row in res["evals"].values():
        assert row["items"] == 3 and row["model_flops"] > 0 and {s["metric"] for s in row["scores"]} >= {"acc"}
    # the stack costs more per item than its base alone (three generation stages before the answer)
    assert res["evals"]["stack.tinymmlu"]["model_flops"] > 2 * res["evals"]["base.tinymmlu"]["model_flops"]
    stack = json.loads((tmp_path / "distill" / "stack" / "stack.json").read_text())
    assert [s["name"] for s in stack["stages"]] == [n for n, _, _ in STAGES]
    assert all(s["adapter"] == f"adapters/{s['name']}" for s in stack["stages"])
    questions = [json.loads(line) for line in (tmp_path / "questions.jsonl").read_text().splitlines()]
    targets = [json.loads(line) for line in (tmp_path / "distill" / "stack" / "targets.jsonl").read_text().splitlines()]
    # the final stage learns each question's gold continuation; the teacher wrote the rest
    assert [t["texts"]["answer"] for t in targets[1:]] == [q["choices"][q["answer"]] for q in questions]
    assert len(res["handoffs"]) == 2 and all(set(h) >= {"concept", "facts", "reasoning", "gold", "chosen"}
                                             for h in res["handoffs"])
    report = (tmp_path / "report.md").read_text()
    assert report.count("\n| ") == 4 and "FSLM stack: 4 adapters" in report and "(n=3)" in report
    # rerun: everything is read back
    again = run_fslm(cfg, tmp_path, progress=False)
    assert again["timings"] == {} and again["evals"] == res["evals"]
    with pytest.raises(FSLMError, match="holds a run of another configuration"):
        run_fslm(dataclasses.replace(cfg, eval_limit=4), tmp_path, progress=False)


def test_presets_and_bad_configurations(tmp_path, tiny):
    from londi_jax.fslm.cli import FSLM_PRESET_NAMES
    from londi_jax.utils.errors import UnknownNameError

    from londi_jax.experiments.fslm_babyai import BABYAI_PRESETS

    assert (*FSLM_PRESETS, *BABYAI_PRESETS) == FSLM_PRESET_NAMES
    assert fslm_preset("fslm-small").teacher == "qwen2.5-coder-0.5b-instruct"
    with pytest.raises(UnknownNameError, match="fslm-small"):
        fslm_preset("fslm")
    with pytest.raises(Exception, match="models"):
        FSLMConfig(models=("base", "oracle"))
    with pytest.raises(FSLMError, match="bc.finetune=lora"):
        FSLMConfig(bc=BCConfig(finetune="full"))
    with pytest.raises(UnknownNameError, match="tinymmlu"):
        run_fslm(dataclasses.replace(config(tiny), tasks=("tinymmlu", "mmlu_tiny")), tmp_path, progress=False)
