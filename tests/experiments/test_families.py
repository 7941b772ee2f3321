"""Environment families of the pipeline: ScienceWorld demo records become the same states the
rollout loop builds, BC examples carry each state's valid actions, episode specs spread over
tasks and splits as documented; BabyAI-Text's specs are the ones the pipeline always used."""

from __future__ import annotations

import pytest

from londi_jax.agents.londi import episode_specs
from londi_jax.agents.prompts import SwiftSageFormat
from londi_jax.experiments.config import PipelineConfig, preset, with_overrides
from londi_jax.experiments.families import BabyAIFamily, ScienceWorldFamily, family, scienceworld_demo_states
from londi_jax.lm.tokenizer import train_word_tokenizer
from londi_jax.utils.errors import LondiError, UnknownNameError


def record(success=True):
    return {
        "task": "4-2", "task_description": "Your task is to find a(n) non-living thing.",
        "initial_observation": "This room is called the hallway.", "initial_look": "This room is called the hallway.",
        "initial_inventory": "In your inventory, you see: an orange", "initial_score": 0, "success": success,
        "steps": [
            {"action": "go to kitchen", "observation": "You move to the kitchen.", "score": 25, "reward": 25.0,
             "look": "This room is called the kitchen. You see a drawer.", "inventory": "an orange",
             "valid_actions": ["go to kitchen", "look around", "focus on orange"]},
            {"action": "focus on drawer", "observation": "You focus on the drawer.", "score": 50, "reward": 25.0,
             "look": "This room is called the kitchen.", "inventory": "an orange",
             "valid_actions": ["focus on drawer", "look around", "go to hallway"]},
        ],
    }


def test_demo_states_match_the_rollout_states():
    pairs = scienceworld_demo_states(record())
    assert [a for _, a in pairs] == ["go to kitchen", "focus on drawer"]
    s0, s1 = pairs[0][0], pairs[1][0]
    assert s0.valid_actions == ("go to kitchen", "look around", "focus on orange") and s0.step == 0
    assert s1.actions == ("go to kitchen",) and s1.current.reward == 25.0 and s1.current.info["score"] == 25
    prompt = SwiftSageFormat().prompt(s1)
    assert "Time: 1; Score: 25;" in prompt and "go to kitchen (+25) --> You move to the kitchen." in prompt
    assert "Current environment: This room is called the kitchen. You see a drawer." in prompt
    assert "Visited rooms: hallway, kitchen" in prompt
    bad = record()
    for st in bad["steps"]:
        del st["valid_actions"]
    with pytest.raises(LondiError, match="with_valid=True"):
        scienceworld_demo_states(bad)


def test_scienceworld_bc_data_and_specs():
    cfg = preset("sw-small")
    fam = family(cfg)
    assert isinstance(fam, ScienceWorldFamily) and fam.quality == "score" and fam.step_limit == 20
    eps = [record(), record(success=False)]
    tok = train_word_tokenizer(fam.tokenizer_texts(eps), vocab_size=200)
    data = fam.bc_data(eps, tok)
    assert len(data) == 2  # the failed demo is not cloned
    assert [len(c) for c in data.candidate_ids] == [3, 3] and list(data.labels) == [0, 0]
    # specs without a JVM: the variation lists filled in as the simulator gives them
    fam._variations = {(t, sp): list(range(base, base + 10)) for t in fam.tasks()
                       for sp, base in (("train", 0), ("dev", 100), ("test", 200))}
    ev0, ev1 = fam.specs("eval", 8, 0), fam.specs("eval", 8, 1)
    assert [s.task for s in ev0] == ["4-2", "4-1", "7-1", "7-2"] * 2
    assert [s.variation for s in ev0] == [200] * 4 + [201] * 4 and {s.variation for s in ev1} == {202, 203}
    assert all(s.split == "test" and s.step_limit == 20 and s.with_valid for s in ev0)
    bc, sw = fam.specs("bc_eval", 8), fam.specs("switch", 8)
    assert {s.split for s in bc + sw} == {"dev"} and {s.variation for s in bc} == {100, 101}
    assert {s.variation for s in sw} == {102, 103}  # after the BC-evaluation variations
    with pytest.raises(UnknownNameError, match="episode purpose"):
        fam.specs("train", 2)


def test_babyai_specs_are_the_pipelines_own():
    cfg = preset("tiny")
    fam = family(cfg)
    e = cfg.env
    assert isinstance(fam, BabyAIFamily) and fam.quality == "success"
    assert fam.specs("eval", 4, 2) == episode_specs(e.eval_level, 4, cfg.eval.seed + 20_000, e.kinds,
                                                    **e.level_kwargs())
    assert fam.specs("switch", 3) == episode_specs(e.level, 3, e.seed + 1_000_000, e.kinds, **e.level_kwargs())


def test_unknown_environment_lists_the_known_ones():
    with pytest.raises(LondiError, match="babyai-text.*scienceworld"):
        with_overrides(PipelineConfig(), {"env.name": "nethack"})


def test_sw_gpu_preset_is_a_scienceworld_pair_that_asks_for_an_accelerator():
    import jax

    from londi_jax.experiments.pipeline import accelerator_warning

    cfg = preset("sw-gpu")
    fam = family(cfg)
    assert isinstance(fam, ScienceWorldFamily) and len(fam.tasks()) == 8 == len(set(fam.tasks()))
    # QUICK is the cheaper model and lacks task types DEEPTHINK was cloned on
    assert set(cfg.quick.demo_kinds) < set(cfg.env.kinds) and cfg.deep.demo_kinds is None
    assert (cfg.quick.source, cfg.deep.source) == ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
    assert cfg.quick.bc.finetune == cfg.deep.bc.finetune == "lora"
    if jax.default_backend() == "cpu":
        assert "without an accelerator" in accelerator_warning(cfg)
