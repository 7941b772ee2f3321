"""FSLM on BabyAI-Text as QUICK (issue 15): a three-stage stack of tiny from-scratch models whose
stages mirror how the BabyAI bot decides, distilled from the bot, against single models trained
on the same data, then as LONDI's QUICK.

The stages (each its own fully fine-tuned model, the size of the pipeline's QUICK):

- ``facts``: what in the observation matters for the goal: the observation's sentences that name
  the mission's object (``goal_facts``; "no red ball in view" when none does);
- ``subgoal``: the bot's current subgoal in words (``go next to the red ball``, ``explore``,
  ``pick up``: ``envs.babyai_text.bot.subgoal_text``, recorded in the demos);
- ``action``: the GLAM prompt after the two hand-offs; it scores the six actions as QUICK does.

The oracle teacher is the bot itself (its demos: the subgoal it pursued, the action it took) and
``goal_facts``. The comparison, on the same evaluation episodes (the pipeline's first evaluation
seed), QUICK alone: the stack; one model with about the stack's total parameter count, trained on
the same demo steps' actions; one model of one stage's size, likewise. Then the pipeline runs with
the stack as QUICK (``quick.stack``) and the preset's DEEPTHINK: LONDI's table.

All models share one word-level tokenizer trained on the demos' prompts and the stages' texts.
Every step resumes: the pipeline's stages, each distillation, each evaluation (``out/eval``).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from londi_jax.agents.bc import BCConfig
from londi_jax.experiments.config import EvalConfig, PipelineConfig, preset
from londi_jax.utils.errors import LondiError, UnknownNameError
from londi_jax.utils.fields import at_least, check_fields

__all__ = ["FSLMBabyAIConfig", "BABYAI_PRESETS", "goal_facts", "run_fslm_babyai"]

COLOURS = ("red", "green", "blue", "purple", "yellow", "grey")
TEMPLATES = {
    "facts": "{input}\nWhat matters for the goal:",
    "subgoal": "{input}\nWhat matters for the goal: {facts}\nSubgoal:",
    "action": "What matters for the goal: {facts}\nSubgoal: {subgoal}\n{input}",
}
VARIANTS = ("stack", "single_total", "single_stage")


class FSLMBabyAIError(LondiError):
    """The BabyAI FSLM experiment cannot run as configured."""


def goal_facts(mission: str, descriptions: Sequence[str]) -> str:
    """The observation sentences that name the mission's object (its type, with its colour when the
    mission gives one), joined by ``"; "``; ``"no <object> in view"`` when none does. A program
    stands in for "what in the observation matters for the goal"."""
    words = mission.lower().split()
    obj = " ".join(words[-2:]) if len(words) >= 2 and words[-2] in COLOURS else words[-1]
    hits = [d.strip() for d in descriptions if re.search(rf"\b{re.escape(obj)}\b", d.lower())]
    return "; ".join(hits) if hits else f"no {obj} in view"


def _small_pipeline() -> PipelineConfig:
    """cpu-small with fewer switch-data episodes and evaluation episodes (a 2-core CPU)."""
    base = preset("cpu-small")
    return dataclasses.replace(
        base, preset="fslm-babyai-small",
        switch=dataclasses.replace(base.switch, collect_episodes=128, c_grid=(0.02, 0.05, 0.1), budgets=(2,)),
        eval=EvalConfig(episodes=64, num_envs=32, seeds=2, random_rates=(0.25,), threshold_rates=(0.25,)))


@dataclasses.dataclass(frozen=True)
class FSLMBabyAIConfig:
    """``pipeline``: the LONDI pipeline the stack serves as QUICK in (its demos, env, DEEPTHINK,
    switch and evaluation settings; ``pipeline.quick``'s sizes are one stage's, its ``demo_kinds``
    the kinds every variant learns from); ``vocab_size``: the shared tokenizer's; ``bc``: every
    variant's trainer (full fine-tuning); ``eval_episodes``: QUICK-alone episodes per variant;
    ``holdout``: demo episodes kept out of training whose steps show the stack's hand-offs;
    ``londi``: run the pipeline with the stack as QUICK, with ``londi_collect_episodes`` switch-data
    episodes and ``londi_eval_episodes`` x ``londi_eval_seeds`` evaluation episodes per method
    (fewer than the pipeline's own: the stack generates two hand-offs at every step of every
    method's episodes, about 4x QUICK's cost per step on a CPU)."""

    preset: str = "fslm-babyai-small"
    pipeline: PipelineConfig = dataclasses.field(default_factory=_small_pipeline)
    vocab_size: int = 192
    facts_tokens: int = 32
    subgoal_tokens: int = 8
    bc: BCConfig = BCConfig(epochs=3, batch_size=32, learning_rate=2e-3, warmup_steps=20, loss="choice",
                            finetune="full", length_multiple=32)
    eval_episodes: int = 96
    holdout: int = 2
    londi: bool = True
    londi_collect_episodes: int = 64
    londi_eval_episodes: int = 32
    londi_eval_seeds: int = 1

    def __post_init__(self) -> None:
        check_fields(self, {"vocab_size": [at_least(64)], "facts_tokens": [at_least(4)],
                            "subgoal_tokens": [at_least(2)], "eval_episodes": [at_least(1)],
                            "holdout": [at_least(0)], "londi_collect_episodes": [at_least(1)],
                            "londi_eval_episodes": [at_least(1)], "londi_eval_seeds": [at_least(1)]})
        if self.pipeline.env.name != "babyai-text":
            raise FSLMBabyAIError(f"pipeline.env.name must be 'babyai-text' (the bot's subgoals), got "
                                  f"{self.pipeline.env.name!r}")
        if self.bc.finetune != "full":
            raise FSLMBabyAIError("the stages are from-scratch models: set bc.finetune=full")


BABYAI_PRESETS: dict[str, Callable[[], FSLMBabyAIConfig]] = {"fslm-babyai-small": FSLMBabyAIConfig}


def babyai_preset(name: str) -> FSLMBabyAIConfig:
    """The named BabyAI FSLM preset (``UnknownNameError`` lists them)."""
    if name not in BABYAI_PRESETS:
        raise UnknownNameError("BabyAI FSLM preset", name, BABYAI_PRESETS)
    return BABYAI_PRESETS[name]()


def _params(model: Any) -> int:
    import jax
    import numpy as np
    from flax import nnx

    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def run_fslm_babyai(config: FSLMBabyAIConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the experiment in ``out``; returns what ``out/results.json`` holds. Raises
    ``FSLMBabyAIError`` for another configuration's ``out``, the pipeline's errors for bad settings."""
    from londi_jax.agents.distill import DistillConfig, distill
    from londi_jax.agents.londi import LondiAgent
    from londi_jax.agents.policy import LMPolicy
    from londi_jax.agents.routers import QuickOnly
    from londi_jax.envs.babyai_text.prompt import ACTIONS
    from londi_jax.experiments.config import config_to_dict
    from londi_jax.experiments.families import family
    from londi_jax.experiments.pipeline import Pipeline, scratch_model
    from londi_jax.fslm import load_stack, save_stack_spec
    from londi_jax.lm.hf_writer import save_hf_directory
    from londi_jax.lm.tokenizer import train_word_tokenizer
    from londi_jax.utils.io import atomic_write_json, atomic_write_text, read_json

    def say(text: str) -> None:
        if progress:
            print(f"[fslm-babyai] {text}", flush=True)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, pipeline=dataclasses.replace(config.pipeline, progress=True))
    cfg = config_to_dict(config)  # what the results depend on (progress display is not, nor the mesh)
    cfg["pipeline"].pop("mesh", None)
    if (out / "config.json").exists() and read_json(out / "config.json") != cfg:
        raise FSLMBabyAIError(f"{out} holds a run of another configuration; use a new --out or delete it")
    atomic_write_json(out / "config.json", cfg)
    t_start, timings = time.perf_counter(), {}
    pcfg = dataclasses.replace(config.pipeline, progress=progress)

    # 1. the bot's demos (the pipeline's own demos stage)
    demo_run = out / "pipeline"
    Pipeline(pcfg, demo_run).run(["demos"])
    fam = family(pcfg)
    episodes = fam.read_demos(demo_run / "demos")
    kinds = pcfg.quick.demo_kinds or pcfg.env.kinds
    mine = [ep for ep in episodes if ep["task_kind"] in kinds and ep.get("success", True)]
    if len(mine) <= config.holdout:
        raise FSLMBabyAIError(f"only {len(mine)} successful demos of kinds {list(kinds)}; write more "
                              f"(pipeline.env.demo_episodes)")
    train_eps, shown_eps = mine[:len(mine) - config.holdout], mine[len(mine) - config.holdout:]
    rows = [{"input": s["prompt"], "facts": goal_facts(ep["mission"], s["descriptions"]),
             "subgoal": s["subgoal"], "action": s["action"]} for ep in train_eps for s in ep["steps"]]
    teacher = {r["input"]: {"facts": r["facts"], "subgoal": r["subgoal"]} for r in rows}
    say(f"{len(rows)} demo steps of {len(train_eps)} episodes (kinds {', '.join(kinds)}) to learn from")

    # 2. one tokenizer; from-scratch bases: one stage's size, and a single model of ~3 stages' size
    bases = out / "bases"
    if not (bases / "stage" / "config.json").exists() or not (bases / "total" / "config.json").exists():
        texts = [*fam.tokenizer_texts(train_eps), *(r["facts"] for r in rows), *(r["subgoal"] for r in rows),
                 *(t.replace("{input}", "").format(facts="", subgoal="") for t in TEMPLATES.values())]
        tok = train_word_tokenizer(texts, vocab_size=config.vocab_size)
        stage_model = scratch_model(pcfg.quick, tok, seed=pcfg.env.seed)
        target = len(TEMPLATES) * _params(stage_model)
        best = None
        for h in range(pcfg.quick.hidden_size, 8 * pcfg.quick.hidden_size + 1, 8):
            spec = dataclasses.replace(pcfg.quick, hidden_size=h, head_dim=h, intermediate_size=2 * h)
            m = scratch_model(spec, tok, seed=pcfg.env.seed + 7)
            if best is None or abs(_params(m) - target) < abs(_params(best) - target):
                best = m
        save_hf_directory(best, bases / "total", tok)
        save_hf_directory(stage_model, bases / "stage", tok)

    # 3. distillation: the stack from the bot; the two singles on the same steps' actions
    inputs = [r["input"] for r in rows]
    answers = [r["action"] for r in rows]
    cands = [list(ACTIONS)] * len(rows)
    dc = DistillConfig(bc=config.bc, final_loss=config.bc.loss)
    specs = {
        "stack": [{"name": "facts", "model": str(bases / "stage"), "template": TEMPLATES["facts"],
                   "max_new_tokens": config.facts_tokens, "allow_empty": True},
                  {"name": "subgoal", "model": str(bases / "stage"), "template": TEMPLATES["subgoal"],
                   "max_new_tokens": config.subgoal_tokens, "allow_empty": True},
                  {"name": "action", "model": str(bases / "stage"), "template": TEMPLATES["action"]}],
        "single_total": [{"name": "action", "model": str(bases / "total"), "template": "{input}"}],
        "single_stage": [{"name": "action", "model": str(bases / "stage"), "template": "{input}"}],
    }
    files = {}
    for name in VARIANTS:
        work = out / "distill" / name
        stages = [s["name"] for s in specs[name]]
        if (work / "stack.json").exists() and all((work / "models" / s / "config.json").exists() for s in stages):
            files[name] = work / "stack.json"
            continue
        t0 = time.perf_counter()
        say(f"training {name} ({len(stages)} stage{'s' if len(stages) > 1 else ''})")
        spec = save_stack_spec(out / f"{name}_spec.json", specs[name], name=f"babyai-{name}")
        res = distill(spec, (lambda x: teacher[x]) if name == "stack" else None, inputs, work, dc,
                      candidates=cands, answers=answers, progress=progress)
        files[name] = res.stack_path
        timings[f"train_{name}"] = time.perf_counter() - t0

    # 4. QUICK alone on the same evaluation episodes
    eval_specs = fam.specs("eval", config.eval_episodes)
    evals = {}
    for name in VARIANTS:
        f = out / "eval" / f"{name}.json"
        if not f.exists():
            t0 = time.perf_counter()
            say(f"evaluating {name} alone on {len(eval_specs)} episodes")
            lm = load_stack(files[name])
            pol = LMPolicy(lm, fam.prompt_format(), name=name)
            res = LondiAgent(pol, pol, QuickOnly(), sample_actions=pcfg.eval.sample_actions, seed=0).run(
                eval_specs, pcfg.eval.num_envs, progress=progress, desc=f"{name} alone")
            eps = res.episodes
            by_kind = {k: sum(e.success for e in eps if e.kind == k) / max(1, sum(e.kind == k for e in eps))
                       for k in dict.fromkeys(e.kind for e in eps)}
            row = {"variant": name, "params": lm.cost().num_params, "stages": len(specs[name]),
                   "episodes": len(eps), "success": sum(e.success for e in eps) / len(eps), "success_by_kind": by_kind,
                   "flops_per_episode": sum(e.quick_flops for e in eps) / len(eps),
                   "seconds_per_episode": sum(e.quick_seconds for e in eps) / len(eps),
                   "steps_per_episode": sum(e.length for e in eps) / len(eps)}
            atomic_write_json(f, row, allow_nan=False)
            timings[f"eval_{name}"] = time.perf_counter() - t0
        evals[name] = read_json(f)

    # 5. the stack's hand-offs on held-out demo steps, beside what the bot did
    shown_file = out / "handoffs.json"
    if not shown_file.exists() and shown_eps:
        stack = load_stack(files["stack"])
        steps = [(ep, i, s) for ep in shown_eps for i, s in enumerate(ep["steps"])]
        res = stack.score([s["prompt"] for _, _, s in steps], [list(ACTIONS)] * len(steps))
        shown = [{"mission": ep["mission"], "step": i, "observation": s["observation"],
                  "facts": h["facts"], "subgoal": h["subgoal"], "action": ACTIONS[int(lp.argmax())],
                  "bot_facts": goal_facts(ep["mission"], s["descriptions"]), "bot_subgoal": s["subgoal"],
                  "bot_action": s["action"]}
                 for (ep, i, s), h, lp in zip(steps, res.handoffs, res.logprobs)]
        atomic_write_json(shown_file, shown)

    # 6. LONDI with the stack as QUICK (forked from the demos run: the same demos, DEEPTHINK cloned)
    londi = None
    if config.londi:
        t0 = time.perf_counter()
        lcfg = dataclasses.replace(
            pcfg, quick=dataclasses.replace(pcfg.quick, stack=str(Path(files["stack"]).resolve())),
            switch=dataclasses.replace(pcfg.switch, collect_episodes=config.londi_collect_episodes),
            eval=dataclasses.replace(pcfg.eval, episodes=config.londi_eval_episodes, seeds=config.londi_eval_seeds))
        say("LONDI with the stack as QUICK")
        res = Pipeline(lcfg, out / "londi", fork_from=demo_run if not (out / "londi").exists() else None).run()
        if res["ran"]:
            timings["londi"] = time.perf_counter() - t0
        londi = {"table": str(out / "londi" / "report" / "results_table.md"),
                 "summary": read_json(out / "londi" / "report" / "summary.json")}

    result = {"preset": config.preset, "config": cfg, "train_steps": len(rows), "train_episodes": len(train_eps),
              "evals": evals, "handoffs": read_json(shown_file) if shown_file.exists() else [],
              "londi": londi, "timings": timings, "seconds": time.perf_counter() - t_start}
    atomic_write_json(out / "results.json", result, allow_nan=False)
    atomic_write_text(out / "report.md", report_markdown(result))
    return result


def report_markdown(result: dict[str, Any]) -> str:
    """The QUICK-alone table, the stack's hand-offs on held-out steps, and LONDI's table."""
    label = {"stack": "FSLM stack (facts -> subgoal -> action)", "single_total": "one model, ~the stack's parameters",
             "single_stage": "one model, one stage's size"}
    kinds = list(next(iter(result["evals"].values()))["success_by_kind"]) if result["evals"] else []
    head = ["QUICK alone", "params", "success", *(f"success {k}" for k in kinds), "MFLOP per episode",
            "ms per episode"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in result["evals"].items():
        lines.append("| " + " | ".join([label.get(name, name), f"{r['params']:,}", f"{100 * r['success']:.1f}%",
                                        *(f"{100 * r['success_by_kind'][k]:.1f}%" for k in kinds),
                                        f"{r['flops_per_episode'] / 1e6:,.1f}",
                                        f"{1e3 * r['seconds_per_episode']:.0f}"]) + " |")
    episodes = {r["episodes"] for r in result["evals"].values()}
    text = "\n".join(lines) + f"\n\n({', '.join(map(str, sorted(episodes)))} episodes each, the same for every row)\n"
    if result["handoffs"]:
        text += "\nThe stack on held-out demo steps (the bot's own in brackets):\n\n"
        for h in result["handoffs"]:
            text += (f"- *{h['mission']}*, step {h['step']}: facts: {h['facts']!r} [{h['bot_facts']!r}]; "
                     f"subgoal: {h['subgoal']!r} [{h['bot_subgoal']!r}]; action: {h['action']} [{h['bot_action']}]\n")
    if result.get("londi"):
        text += "\nLONDI with the stack as QUICK:\n\n" + Path(result["londi"]["table"]).read_text()
    return text
