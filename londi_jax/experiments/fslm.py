"""FSLM on benchmarks (issue 15): a four-stage stack of LoRA adapters on one small base,
distilled from a larger teacher, against the base alone and against one adapter fine-tuned on the
same questions without stacking (the ablation the FSLM paper lacks), zero-shot through
lm-evaluation-harness on the shipped tasks, with each model's measured cost per item.

The stages (``STAGES``; the FSLM paper publishes none): ``concept`` (what the question tests) ->
``facts`` (the fact that decides it) -> ``reasoning`` (one sentence toward an option) -> ``answer``
(the lm-eval context after the three hand-offs; it scores the task's continuations). Every
template reads the lm-eval context (``{input}``), so the stack is an ``LM`` for lm-eval like any
model. The teacher writes the first three stages' texts on training questions (``evaluation.
questions``: MMLU dev/validation, ARC-Easy validation; never an item a reported task scores); the
final stage, and the single adapter, learn the question's gold answer among its continuations
(choice cross-entropy + the answer's token NLL). Both use the same trainer settings.

``run_fslm(config, out)`` resumes: the questions, each distillation (``agents.distill``'s work
directories) and each (model, task) evaluation are written once and read back.
Results: ``out/results.json`` and ``out/report.md`` (a table and a few questions' hand-offs).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from londi_jax.agents.bc import BCConfig
from londi_jax.lm.lora import LoRAConfig
from londi_jax.utils.errors import LondiError, UnknownNameError
from londi_jax.utils.fields import at_least, check_fields, each, one_of

__all__ = ["FSLMConfig", "FSLM_PRESETS", "MODELS", "STAGES", "fslm_preset", "run_fslm"]

# (name, template, max_new_tokens); the final stage scores the task's continuations. A stage may
# hand on an empty text (a small model can stop at once): that is a result, not an error.
STAGES = (
    ("concept", "{input}\n\nBefore answering: the concept this question tests, in a few words:", 16),
    ("facts", "{input}\n\nConcept: {concept}\nThe key fact that decides the answer, in one sentence:", 32),
    ("reasoning", "{input}\n\nConcept: {concept}\nKey fact: {facts}\nReasoning in one sentence, naming the "
                  "correct option:", 32),
    ("answer", "Concept: {concept}\nKey fact: {facts}\nReasoning: {reasoning}\n\n{input}", 4),
)
MODELS = ("base", "single", "stack", "teacher")  # what a run may evaluate
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FSLMError(LondiError):
    """An FSLM experiment that cannot run as configured."""


@dataclasses.dataclass(frozen=True)
class FSLMConfig:
    """One FSLM benchmark run. ``base``: every stage's model (and the single model's); ``teacher``:
    writes the stages' texts; ``train_sources`` / ``train_questions`` / ``max_train_tokens``: the
    training questions (``evaluation.questions``); ``bc``: the trainer's settings for every stage
    and for the single adapter; ``tasks`` / ``eval_limit`` (first N items of each task; ``0``:
    all): what is reported; ``models``: which of ``MODELS`` are evaluated."""

    preset: str = "fslm-small"
    base: str = "smollm2-135m-instruct"
    teacher: str = "qwen2.5-coder-0.5b-instruct"
    train_sources: tuple[str, ...] = ("mmlu:validation", "arc_easy:validation")
    train_questions: int = 24
    max_train_tokens: int = 160
    stage_inputs: str = "teacher"
    # candidate_length_multiple 40: the stack's hand-offs (<= 32 generated tokens) and the single
    # adapter's answers pad to one length, so all five trainings share their step programs
    bc: BCConfig = BCConfig(epochs=2, batch_size=8, learning_rate=1e-3, warmup_steps=4, loss="both",
                            finetune="lora", candidates=4, length_multiple=128, candidate_length_multiple=40,
                            lora=LoRAConfig(rank=8, alpha=16.0, targets=ALL_LINEAR))
    tasks: tuple[str, ...] = ("tinymmlu", "arc_challenge")
    eval_limit: int = 32
    models: tuple[str, ...] = ("base", "single", "stack")
    batch_size: int = 16
    dtype: str = "float32"
    seed: int = 0
    examples: int = 3  # tinyMMLU-style questions whose hand-offs the report shows

    def __post_init__(self) -> None:
        check_fields(self, {"train_questions": [at_least(8)], "max_train_tokens": [at_least(32)],
                            "eval_limit": [at_least(0)], "batch_size": [at_least(1)], "seed": [at_least(0)],
                            "examples": [at_least(0)], "stage_inputs": [one_of(("teacher", "stack"), "stage input mode")],
                            "models": [each(one_of(MODELS, "model"))], "dtype": [one_of(("float32", "bfloat16"), "dtype")]})
        if not self.models or not self.tasks:
            raise FSLMError("give at least one model (models) and one task (tasks)")
        if self.bc.finetune != "lora":
            raise FSLMError("the stages are LoRA adapters on one base; set bc.finetune=lora")


def _small() -> FSLMConfig:
    """A 2-core CPU: 24 short training questions, two epochs (6 steps per stage), the first 32
    items of each task. Measured: 22.6 min from scratch on the 2-core CPU (README)."""
    return FSLMConfig()


def _gpu() -> FSLMConfig:
    """An accelerator: 2,000 training questions (up to 512 tokens), Qwen2.5-Coder-1.5B-Instruct as
    the teacher (``londi-jax lm fetch qwen2.5-coder-1.5b-instruct``), every item of tinyMMLU and
    ARC-Challenge, the teacher evaluated too."""
    return FSLMConfig(preset="fslm-gpu", teacher="qwen2.5-coder-1.5b-instruct", train_questions=2000,
                      max_train_tokens=512, eval_limit=0, batch_size=64, models=MODELS,
                      bc=dataclasses.replace(FSLMConfig.bc, epochs=3, batch_size=32, learning_rate=3e-4,
                                             warmup_steps=30, lora=LoRAConfig(rank=16, alpha=32.0, targets=ALL_LINEAR)))


FSLM_PRESETS: dict[str, Callable[[], FSLMConfig]] = {"fslm-small": _small, "fslm-gpu": _gpu}


def fslm_preset(name: str) -> FSLMConfig:
    """The named FSLM preset (``UnknownNameError`` lists them)."""
    if name not in FSLM_PRESETS:
        raise UnknownNameError("FSLM preset", name, FSLM_PRESETS)
    return FSLM_PRESETS[name]()


def run_fslm(config: FSLMConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the FSLM benchmark experiment in ``out``; returns the results written to
    ``out/results.json``. Raises ``FSLMError`` / ``QuestionError`` before any training for a bad
    configuration (training sources a reported task scores, too few questions), the loaders'
    errors for an unknown model, ``EvalDataError`` when the evaluation sets are not installed."""
    from londi_jax.agents.distill import DistillConfig, distill
    from londi_jax.evaluation import data
    from londi_jax.evaluation.questions import Question, training_questions
    from londi_jax.evaluation.run import evaluate, parse_tasks
    from londi_jax.fslm import load_stack, save_stack_spec
    from londi_jax.lm.registry import load_lm
    from londi_jax.utils.io import atomic_write_json, atomic_write_text, read_json

    def say(text: str) -> None:
        if progress:
            print(f"[fslm] {text}", flush=True)

    tasks = parse_tasks(list(config.tasks))
    if not data.installed():
        raise data.EvalDataError(f"the evaluation sets are not installed in {data.data_dir()}; {data.FETCH_HINT}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_file = out / "config.json"
    from londi_jax.experiments.config import config_to_dict

    cfg = config_to_dict(config)
    if cfg_file.exists() and read_json(cfg_file) != cfg:
        raise FSLMError(f"{out} holds a run of another configuration ({cfg_file}); use a new --out or delete it")
    atomic_write_json(cfg_file, cfg)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. training questions (rendered by the shipped tasks, disjoint from what is reported)
    qfile = out / "questions.jsonl"
    if qfile.exists():
        questions = [Question.from_dict(json.loads(line)) for line in qfile.read_text().splitlines() if line]
    else:
        t0 = time.perf_counter()
        base_tok = load_lm(config.base, dtype=config.dtype, progress=False).tokenizer
        questions = training_questions(list(config.train_sources), config.train_questions, seed=config.seed,
                                       max_tokens=config.max_train_tokens, tokenizer=base_tok, exclude_tasks=tasks)
        atomic_write_text(qfile, "".join(json.dumps(q.to_dict()) + "\n" for q in questions))
        timings["questions"] = time.perf_counter() - t0
    say(f"{len(questions)} training questions from {', '.join(config.train_sources)}")
    inputs = [q.context for q in questions]
    answers = [q.target for q in questions]
    candidates = [list(q.choices) for q in questions]
    dc = DistillConfig(bc=config.bc, stage_inputs=config.stage_inputs, final_loss=config.bc.loss)

    # 2. the stack (four adapters on the base) and the single adapter, distilled
    stack_spec = save_stack_spec(out / "stack_spec.json", [
        {"name": n, "model": config.base, "template": t, "max_new_tokens": k, "allow_empty": n != STAGES[-1][0]}
        for n, t, k in STAGES],
        name=f"fslm-{len(STAGES)}x{config.base}")
    single_spec = save_stack_spec(out / "single_spec.json", [
        {"name": "answer", "model": config.base, "template": "{input}", "max_new_tokens": 4}],
        name=f"single-{config.base}")
    files = {}
    for name, spec, teacher in (("stack", stack_spec, config.teacher), ("single", single_spec, None)):
        if name not in config.models:
            continue
        work = out / "distill" / name
        if (work / "stack.json").exists() and all((work / "adapters" / s).exists() for s in
                                                  ([n for n, _, _ in STAGES] if name == "stack" else ["answer"])):
            files[name] = work / "stack.json"
            continue
        t0 = time.perf_counter()
        say(f"distilling {name} ({'teacher ' + config.teacher if teacher else 'gold answers only'})")
        lm_teacher = load_lm(teacher, dtype=config.dtype, progress=progress) if teacher else None
        res = distill(spec, lm_teacher, inputs, work, dc, candidates=candidates, dtype=config.dtype,
                      progress=progress, answers=answers)
        files[name] = res.stack_path
        timings[f"distill_{name}"] = time.perf_counter() - t0

    # 3. zero-shot evaluation, one (model, task) at a time, each written once
    refs = {"base": config.base, "teacher": config.teacher,
            **{k: str(v) for k, v in files.items()}}
    evals: dict[str, dict[str, Any]] = {}
    for name in config.models:
        loaded = None
        for task in tasks:
            f = out / "eval" / f"{name}.{task}.json"
            if not f.exists():
                t0 = time.perf_counter()
                if loaded is None:
                    loaded = (load_stack(refs[name], dtype=config.dtype) if name in ("stack", "single")
                              else load_lm(refs[name], dtype=config.dtype, progress=False))
                say(f"evaluating {name} on {task}")
                r = evaluate(loaded, [task], limit=config.eval_limit or None, batch_size=config.batch_size,
                             dtype=config.dtype, log_samples=False)
                row = {"model": name, "ref": refs[name], "task": task, "items": r.items,
                       "scores": [dataclasses.asdict(s) for s in r.scores], "seconds": r.seconds,
                       "model_seconds": r.model_seconds, "model_flops": r.model_flops, "notes": r.notes}
                atomic_write_json(f, row, allow_nan=False)
                timings[f"eval_{name}_{task}"] = time.perf_counter() - t0
            evals[f"{name}.{task}"] = read_json(f)
        if name == "stack" and config.examples and not (out / "handoffs.json").exists():
            from londi_jax.evaluation.data import tinymmlu_rows

            stack = loaded or load_stack(refs[name], dtype=config.dtype)
            rows = list(tinymmlu_rows())[:config.examples]
            from londi_jax.evaluation.questions import load_tasks

            task = load_tasks(["tinymmlu"])["tinymmlu"]
            ctx = [task.fewshot_context(r, 0) for r in rows]
            res = stack.score(ctx, [[" A", " B", " C", " D"]] * len(ctx))
            shown = [{"question": r["question"], "gold": "ABCD"[int(r["answer"])],
                      "chosen": "ABCD"[int(lp.argmax())], **{k: h[k] for k, _, _ in STAGES[:-1]}}
                     for r, h, lp in zip(rows, res.handoffs, res.logprobs)]
            atomic_write_json(out / "handoffs.json", shown)

    result = {"preset": config.preset, "config": cfg, "evals": evals, "timings": timings,
              "seconds": time.perf_counter() - t_start,
              "handoffs": read_json(out / "handoffs.json") if (out / "handoffs.json").exists() else []}
    atomic_write_json(out / "results.json", result, allow_nan=False)
    atomic_write_text(out / "report.md", report_markdown(result))
    return result


def _score(row: dict[str, Any], metric: str) -> str:
    for s in row["scores"]:
        if s["metric"] == metric:
            se = s["stderr"]
            return f"{100 * s['value']:.1f}% ± {100 * se:.1f}" if math.isfinite(se) else f"{100 * s['value']:.1f}%"
    return "–"


def report_markdown(result: dict[str, Any]) -> str:
    """The results table (accuracy ± standard error per task, GFLOP and model-seconds per item)
    and the shown questions' hand-offs."""
    cfg, evals = result["config"], result["evals"]
    tasks = list(cfg["tasks"])
    head = ["model"] + [f"{t} acc" + (" / acc_norm" if t.startswith("arc") else "") for t in tasks] + \
        ["GFLOP per item", "model-s per item"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    label = {"base": f"{cfg['base']} alone", "single": f"{cfg['base']} + one adapter (no stack)",
             "stack": f"FSLM stack: {len(STAGES)} adapters on {cfg['base']}", "teacher": f"{cfg['teacher']} (teacher)"}
    for name in cfg["models"]:
        rows = [evals.get(f"{name}.{t}") for t in tasks]
        if any(r is None for r in rows):
            continue
        cells = [(_score(r, "acc") + (" / " + _score(r, "acc_norm") if r["task"].startswith("arc") else ""))
                 + f" (n={r['items']})" for r in rows]
        items = sum(r["items"] for r in rows)
        flops = sum(r["model_flops"] for r in rows) / max(items, 1) / 1e9
        secs = sum(r["model_seconds"] for r in rows) / max(items, 1)
        lines.append("| " + " | ".join([label[name], *cells, f"{flops:.0f}", f"{secs:.2f}"]) + " |")
    out = "\n".join(lines) + "\n"
    for ex in result.get("handoffs", []):
        out += (f"\n**{ex['question'].strip()}** (gold {ex['gold']}, stack chose {ex['chosen']})\n"
                + "".join(f"- {k}: {ex[k]}\n" for k, _, _ in STAGES[:-1]))
    return out
