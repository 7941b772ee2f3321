"""Training questions from the shipped evaluation sets, rendered exactly as the shipped lm-eval
tasks render their items (FSLM distillation data, issue 15).

A ``Question`` is one multiple-choice item as lm-eval's model sees it: the zero-shot context
(``Task.fewshot_context(doc, 0)``: for MMLU the subject line, the question, ``A.``-``D.`` and
``Answer:``), the continuations (each choice after the task's target delimiter, ``" A"`` or
``" <choice text>"``) and the gold index. The rendering is lm-eval's own, through the task YAMLs
in ``tasks/``, so a stage trained on these contexts reads at evaluation exactly what it read in
training.

Training sources are splits that no reported task scores: MMLU's ``dev`` and ``validation``
splits (tinyMMLU and ``mmlu`` score the ``test`` split) and ARC-Easy's ``validation`` split
(only ``arc_easy`` scores it: a run that trains on it must not report ``arc_easy``;
``overlapping_tasks`` checks). ``check_disjoint`` compares question texts, so a copy of an
evaluated item under another split is caught too.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Sequence
from typing import Any

from londi_jax.utils.errors import LondiError, UnknownNameError

# "set:split" -> (the shipped task whose rendering is used, how its docs are read)
SOURCES = {
    "mmlu:dev": ("mmlu", "dev"),
    "mmlu:validation": ("mmlu", "validation"),
    "arc_easy:validation": ("arc_easy", "validation"),
}
# the reported tasks that score each training source's items (training on them contaminates those)
SCORED_BY = {"arc_easy:validation": ("arc_easy",)}


class QuestionError(LondiError):
    """Training questions that cannot be built: an unknown source, too few questions, an overlap."""


@dataclasses.dataclass(frozen=True)
class Question:
    """One item as lm-eval's model sees it (see the module docstring); ``source``: ``set:split``,
    ``row``: its row in that split (MMLU: of the 57 subjects concatenated in sorted order)."""

    source: str
    row: int
    question: str  # the document's own question text (what ``check_disjoint`` compares)
    context: str
    choices: tuple[str, ...]
    answer: int

    @property
    def target(self) -> str:
        return self.choices[self.answer]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "choices": list(self.choices)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Question:
        return cls(str(d["source"]), int(d["row"]), str(d["question"]), str(d["context"]), tuple(d["choices"]),
                   int(d["answer"]))


def _docs(set_name: str, split: str) -> Any:
    from londi_jax.evaluation.data import load_split

    return load_split(set_name, split, "all") if set_name == "mmlu" else load_split(set_name, split)


def load_tasks(names: Sequence[str]) -> dict[str, Any]:
    """The shipped lm-eval tasks by name (``{name: Task}``), through this package's task manager."""
    from londi_jax.evaluation.run import task_manager

    return dict(task_manager().load(list(names))["tasks"])


@functools.cache
def source_questions(source: str) -> tuple[Question, ...]:
    """Every item of one training source (``SOURCES``: ``"mmlu:validation"``, ...), rendered by its
    shipped task (read once per process). Raises ``UnknownNameError`` for an unknown source, ``EvalDataError`` when the
    sets are not installed."""
    if source not in SOURCES:
        raise UnknownNameError("training question source", source, SOURCES)
    task_name, split = SOURCES[source]
    task = load_tasks([task_name])[task_name]
    delim = task.config.target_delimiter
    out = []
    for i, doc in enumerate(_docs(task_name, split)):
        choices = task.doc_to_choice(doc)
        out.append(Question(source, i, str(doc["question"]), task.fewshot_context(doc, 0), tuple(f"{delim}{c}" for c in choices),
                            int(task.doc_to_target(doc))))
    return tuple(out)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def overlapping_tasks(sources: Sequence[str], tasks: Sequence[str]) -> list[str]:
    """The reported ``tasks`` that score items of the training ``sources`` (by split)."""
    return sorted({t for s in sources for t in SCORED_BY.get(s, ()) if t in tasks})


def check_disjoint(questions: Sequence[Question], tasks: Sequence[str]) -> None:
    """Raise ``QuestionError`` when a training question's text equals an item of a reported task
    (the tasks' own documents, read through lm-eval, question texts compared whitespace- and
    case-folded)."""
    seen = {_norm(q.question): q for q in questions}
    for name, task in load_tasks(tasks).items():
        docs = task.test_docs() if task.has_test_docs() else task.validation_docs()
        for doc in docs:
            q = seen.get(_norm(doc["question"]))
            if q is not None:
                raise QuestionError(f"training question {q.source} row {q.row} is an item of the reported task "
                                    f"{name!r}; train on other sources")


def training_questions(sources: Sequence[str], n: int, seed: int = 0, max_tokens: int | None = None,
                       tokenizer: Any = None, exclude_tasks: Sequence[str] = ()) -> list[Question]:
    """``n`` questions drawn without replacement (``seed``) from the ``sources`` together; with
    ``max_tokens``, only those whose context and longest continuation fit in that many tokens of
    ``tokenizer`` (the CPU presets keep training sequences short). Checked disjoint from
    ``exclude_tasks`` (the tasks the run reports). Raises ``QuestionError`` for fewer questions than
    ``n``, a source scored by a reported task, or an overlap."""
    if isinstance(sources, str) or not sources:
        raise QuestionError(f"give one or more sources: {', '.join(SOURCES)}")
    clash = overlapping_tasks(sources, exclude_tasks)
    if clash:
        raise QuestionError(f"the training sources {list(sources)} hold the items that {clash} scores; drop those "
                            f"tasks from the report or train on other sources")
    pool = [q for s in sources for q in source_questions(s)]
    if max_tokens is not None:
        pool = [q for q in pool if len(tokenizer.encode(q.context)) + max(len(tokenizer.encode(c)) for c in q.choices)
                <= max_tokens]
    if len(pool) < n:
        raise QuestionError(f"only {len(pool)} questions in {list(sources)}"
                            f"{f' fit in {max_tokens} tokens' if max_tokens is not None else ''}; ask for <= "
                            f"{len(pool)} or allow longer ones")
    picked = random.Random(seed).sample(pool, n)
    if exclude_tasks:
        check_disjoint(picked, exclude_tasks)
    return picked
