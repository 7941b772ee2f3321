"""FSLM on BabyAI-Text (``experiments.fslm_babyai``): the goal-facts program on exact cases, and the
experiment end to end on the tiny pipeline (a three-stage stack of tiny from-scratch models
distilled from the bot, two single models on the same steps, all evaluated alone on the same
episodes; the LONDI part is the ``quick.stack`` pipeline path, tested in test_pipeline_stack.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from londi_jax.agents.bc import BCConfig
from londi_jax.experiments.config import preset
from londi_jax.experiments.fslm_babyai import (
    TEMPLATES,
    FSLMBabyAIConfig,
    FSLMBabyAIError,
    goal_facts,
    run_fslm_babyai,
)

pytestmark = pytest.mark.slow


def test_goal_facts_names_the_missions_object():
    seen = ["You see a wall 3 steps forward", "You see a red ball 1 step left", "You see a blue ball 2 steps right",
            "You see a red ball 2 steps forward"]
    assert goal_facts("pick up the red ball", seen) == "You see a red ball 1 step left; You see a red ball 2 steps forward"
    assert goal_facts("go to a ball", seen) == "You see a red ball 1 step left; You see a blue ball 2 steps right; " \
        "You see a red ball 2 steps forward"
    assert goal_facts("go to the purple key", seen) == "no purple key in view"
    assert goal_facts("go to the red ball", ["You see a red balloon"]) == "no red ball in view"  # whole words


def test_the_experiment_on_the_tiny_pipeline(tmp_path):
    tiny = preset("tiny")
    cfg = FSLMBabyAIConfig(preset="test", pipeline=dataclasses.replace(tiny, progress=False), vocab_size=96,
                           bc=BCConfig(epochs=1, batch_size=8, finetune="full", length_multiple=128),
                           eval_episodes=4, holdout=1, londi=False, facts_tokens=8, subgoal_tokens=4)
    res = run_fslm_babyai(cfg, tmp_path, progress=False)
    assert set(res["evals"]) == {"stack", "single_total", "single_stage"}
    stage, total, stack = (res["evals"][k]["params"] for k in ("single_stage", "single_total", "stack"))
    assert stack == 3 * stage and abs(total - stack) < 0.25 * stack  # ~ the stack's parameters in one model
    for r in res["evals"].values():
        assert r["episodes"] == 4 and 0 <= r["success"] <= 1 and r["flops_per_episode"] > 0
    # the stack generates two hand-offs per step before it scores: it costs more than its last stage alone
    assert res["evals"]["stack"]["flops_per_episode"] > res["evals"]["single_stage"]["flops_per_episode"]
    stack_file = json.loads((tmp_path / "distill" / "stack" / "stack.json").read_text())
    assert [(s["name"], s["template"]) for s in stack_file["stages"]] == list(TEMPLATES.items())
    targets = [json.loads(line) for line in (tmp_path / "distill" / "stack" / "targets.jsonl").read_text().splitlines()]
    assert len(targets) - 1 == res["train_steps"] and {"facts", "subgoal", "action"} == set(targets[1]["texts"])
    assert res["handoffs"] and all(h["bot_subgoal"] and h["action"] for h in res["handoffs"])
    assert "FSLM stack" in (tmp_path / "report.md").read_text()
    again = run_fslm_babyai(cfg, tmp_path, progress=False)  # everything is read back
    assert again["timings"] == {} and again["evals"] == res["evals"]
    with pytest.raises(FSLMBabyAIError, match="another configuration"):
        run_fslm_babyai(dataclasses.replace(cfg, eval_episodes=5), tmp_path, progress=False)
    with pytest.raises(FSLMBabyAIError, match="bc.finetune=full"):
        FSLMBabyAIConfig(bc=BCConfig(finetune="lora"))
