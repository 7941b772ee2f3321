"""The ``real-small`` preset: a real pretrained pair (SmolLM2-135M + LoRA as QUICK, Qwen2.5-Coder-0.5B
+ LoRA as DEEPTHINK), and ``env.max_steps``, the episode cap that lets its path be checked on a CPU.

The real run needs an accelerator; here its path runs end to end with the same structure (registered
model names as the sources of BOTH models, LoRA behaviour cloning of both, two different tokenizers
and vocabularies) on two tiny GGUF files registered under names (slow test), and the configuration
itself is checked (fast tests). The README gives the CPU command for the real pair and its time.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from londi_jax.agents.londi import episode_specs
from londi_jax.experiments.config import (RUN_ONLY_FIELDS, ConfigFieldError, config_diff, config_from_dict, config_to_dict,
                                          flatten_config, preset, with_overrides)
from londi_jax.experiments.pipeline import STAGE_DEPENDS, STAGES, Pipeline, accelerator_warning


def test_real_small_is_the_real_pair_with_lora():
    cfg = preset("real-small")
    assert cfg.preset == "real-small"
    assert (cfg.quick.source, cfg.deep.source) == ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
    for spec in (cfg.quick, cfg.deep):
        assert spec.bc.finetune == "lora" and spec.bc.lora.rank == 16
        assert set(spec.bc.lora.targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    assert cfg.quick.demo_kinds == ("goto",) and cfg.deep.demo_kinds is None  # QUICK lacks the pickup skill
    assert (cfg.env.room_size, cfg.env.num_dists, cfg.env.kinds) == (6, 2, ("goto", "pickup"))
    # the 1.5B is one override away
    assert with_overrides(cfg, {"deep.source": "qwen2.5-coder-1.5b-instruct"}).deep.source.endswith("1.5b-instruct")


def test_every_real_small_field_belongs_to_a_stage():
    for field in flatten_config(preset("real-small")):
        if field not in RUN_ONLY_FIELDS:  # no stage's results depend on them
            assert any(field == p or field.startswith(p + ".") for deps in STAGE_DEPENDS.values() for p in deps), field
    assert all("env.max_steps" in STAGE_DEPENDS[s] for s in ("demos", "evaluate"))


def test_real_small_on_a_cpu_warns_at_once():
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("this machine has an accelerator")
    warning = accelerator_warning(preset("real-small"))
    assert warning and warning.startswith("the real-small preset is starting on a machine without an accelerator")
    assert accelerator_warning(preset("cpu-small")) is None


def test_max_steps_caps_every_episode():
    cfg = with_overrides(preset("tiny"), {"env.max_steps": "3"})
    assert cfg.env.level_kwargs()["max_steps"] == 3
    env, first = episode_specs(cfg.env.level, 1, 0, cfg.env.kinds, **cfg.env.level_kwargs())[0].make()
    assert first.info["max_steps"] == 3
    steps = [env.step("turn left") for _ in range(3)]
    assert [s.truncated for s in steps] == [False, False, True]  # turning in place never succeeds
    default_env, default_first = episode_specs(cfg.env.level, 1, 0, cfg.env.kinds,
                                               **preset("tiny").env.level_kwargs())[0].make()
    assert default_first.info["max_steps"] > 3  # unset: the level's own cap (it grows with the room)
    with pytest.raises(ConfigFieldError, match="env.max_steps"):
        with_overrides(preset("tiny"), {"env.max_steps": "0"})


def test_a_run_stored_before_max_steps_still_matches():
    """A config.json written before the field existed reads back as max_steps=None, with no diff,
    and unset max_steps leaves the episode specs (and so the demos and episodes) as they were."""
    stored = config_to_dict(preset("tiny"))
    del stored["env"]["max_steps"]
    old = config_from_dict(stored)
    assert old.env.max_steps is None and config_diff(stored, preset("tiny")) == {}
    assert "max_steps" not in old.env.level_kwargs()


@pytest.fixture
def tiny_registered_pair(tmp_path, monkeypatch, tiny_gguf, llama3_gguf):
    """Two tiny GGUFs under registered names: a SmolLM2-style tokenizer for QUICK and a Llama-3-style
    one (another vocabulary, BOS added by llama.cpp's rule, an untied head) for DEEPTHINK."""
    import londi_jax.lm.registry as registry

    q, _ = tiny_gguf("q.gguf", context=2048, seed=1)
    d, _ = llama3_gguf("d.gguf", context=2048, seed=2, tie=False)
    monkeypatch.setitem(registry._REGISTRY, "tiny-quick", q)
    monkeypatch.setitem(registry._REGISTRY, "tiny-deep", d)
    return q, d


def _shrunk_real_small(**extra):
    """real-small with a handful of demos / BC steps / episodes (every stage still runs; BC's own
    evaluation rollouts are off, the evaluate stage rolls out every method)."""
    return with_overrides(preset("real-small"), {
        "env.demo_episodes": 4, "env.max_steps": 4,
        **{f"{m}.{k}": v for m in ("quick", "deep") for k, v in
           (("bc.batch_size", 4), ("bc.epochs", 1), ("bc.length_multiple", 1024), ("eval_episodes", 0))},
        "switch.collect_episodes": 2, "switch.num_updates": 20, "switch.batch_size": 8, "switch.hidden": (16,),
        "switch.seeds": 1, "switch.c_grid": (0.05,), "switch.budgets": (1,),
        "eval.episodes": 2, "eval.num_envs": 2, "eval.seeds": 1, "eval.random_rates": (0.5,),
        "eval.threshold_rates": (0.5,), "progress": False, **extra})


@pytest.mark.slow
def test_real_small_path_with_two_registered_tokenizers(tmp_path, tiny_registered_pair):
    from londi_jax.agents.policy import MATCH_FEATURES, feature_dim
    from londi_jax.lm.demo import GLAM_PROMPT
    from londi_jax.lm.registry import load_lm

    cfg = _shrunk_real_small(**{"quick.source": "tiny-quick", "deep.source": "tiny-deep"})
    pipe = Pipeline(cfg, tmp_path / "run")
    res = pipe.run()
    assert res["ran"] == list(STAGES)
    run = tmp_path / "run"

    # each trained model keeps its source's architecture, vocabulary and tokenizer (BOS rule included)
    for name, source in (("quick", "tiny-quick"), ("deepthink", "tiny-deep")):
        src, trained = load_lm(source, progress=False), pipe.model(name)
        assert trained.config.vocab_size == src.config.vocab_size
        assert trained.config.hidden_size == src.config.hidden_size
        assert (trained.tokenizer(GLAM_PROMPT, add_special_tokens=True)["input_ids"]
                == src.tokenizer(GLAM_PROMPT, add_special_tokens=True)["input_ids"])
        adapter = json.loads((run / "models" / f"{name}_lora" / "adapter_config.json").read_text())
        assert adapter["base"] == source and adapter["lora"]["rank"] == 16
        assert adapter["base_model"]["vocab_size"] == src.config.vocab_size
    q, d = pipe.model("quick"), pipe.model("deepthink")
    assert q.config.vocab_size != d.config.vocab_size
    assert q.tokenizer(GLAM_PROMPT)["input_ids"][0] != 0 and d.tokenizer(GLAM_PROMPT)["input_ids"][0] == 0  # BOS

    # the switch reads QUICK's encoding; every episode stops at env.max_steps
    data = np.load(run / "switch_data.npz")
    assert data["obs"].shape[1] == feature_dim(q.config.hidden_size) + MATCH_FEATURES  # quick+match encoder
    assert 0 < data["obs"].shape[0] <= 2 * 4  # 2 episodes of at most env.max_steps steps
    results = json.loads((run / "eval" / "results.json").read_text())
    lengths = [e["length"] for r in results["runs"] for e in r["episodes"]]
    assert lengths and max(lengths) <= 4
    for r in results["runs"]:
        for e in r["episodes"]:
            if r["method"] == "QUICK-only":
                assert e["deep_calls"] == 0 and e["quick_flops"] > 0
            if r["method"] == "DEEPTHINK-only":
                assert e["quick_calls"] == 0 and e["deep_flops"] > 0
    assert (run / "report" / "results_table.md").exists()
