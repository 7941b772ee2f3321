"""Training questions for FSLM distillation (``evaluation.questions``), on the real installed
sets: rendered as the shipped lm-eval tasks render them, drawn reproducibly, length-filtered, and
never an item of a reported task."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from londi_jax.evaluation.questions import (
    QuestionError,
    check_disjoint,
    load_tasks,
    source_questions,
    training_questions,
)
from londi_jax.utils.errors import UnknownNameError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))  # the LM tests' helpers
from lm_core_helpers import make_tokenizer  # noqa: E402


def test_questions_are_the_tasks_own_rendering(real_sets):
    from londi_jax.evaluation.data import load_split

    mmlu = source_questions("mmlu:validation")
    arc = source_questions("arc_easy:validation")
    raw_mmlu, raw_arc = load_split("mmlu", "validation", "all"), load_split("arc_easy", "validation")
    assert len(mmlu) == len(raw_mmlu) == 1531 and len(arc) == len(raw_arc) == 570
    # the MMLU prompt of lm-eval's zero-shot task, written out from the document by hand
    doc, q = raw_mmlu[7], mmlu[7]
    subject = doc["subject"].replace("_", " ")
    want = (f"The following are multiple choice questions (with answers) about {subject}.\n\n{doc['question'].strip()}"
            + "".join(f"\n{letter}. {c}" for letter, c in zip("ABCD", doc["choices"])) + "\nAnswer:")
    assert q.context == want and q.choices == (" A", " B", " C", " D") and q.answer == doc["answer"]
    doc, q = raw_arc[3], arc[3]
    assert q.context == f"Question: {doc['question']}\nAnswer:"
    assert q.choices == tuple(" " + c for c in doc["choices"]["text"])
    assert q.target == " " + doc["choices"]["text"][doc["choices"]["label"].index(doc["answerKey"])]
    # and what lm-eval itself builds for the arc_easy task's first item
    task = load_tasks(["arc_easy"])["arc_easy"]
    first = next(iter(task.validation_docs()))
    assert arc[0].context == task.fewshot_context(first, 0)


def test_drawn_reproducibly_filtered_and_disjoint(real_sets, tmp_path):
    from londi_jax.evaluation.data import tinymmlu_rows

    tok = make_tokenizer(str(tmp_path))
    a = training_questions(["mmlu:validation", "arc_easy:validation"], 40, seed=3, max_tokens=160, tokenizer=tok,
                           exclude_tasks=["tinymmlu", "arc_challenge"])
    b = training_questions(["mmlu:validation", "arc_easy:validation"], 40, seed=3, max_tokens=160, tokenizer=tok)
    assert a == b and len({(q.source, q.row) for q in a}) == 40
    assert {q.source for q in a} == {"mmlu:validation", "arc_easy:validation"}
    assert all(len(tok.encode(q.context)) + max(len(tok.encode(c)) for c in q.choices) <= 160 for q in a)
    assert training_questions(["mmlu:dev"], 40, seed=4) != training_questions(["mmlu:dev"], 40, seed=3)
    # an item of a reported task among the training questions is refused
    row = tinymmlu_rows()[5]
    copy = dataclasses.replace(a[0], question=" " + row["question"].upper() + "  ")
    with pytest.raises(QuestionError, match="is an item of the reported task 'tinymmlu'"):
        check_disjoint([*a, copy], ["tinymmlu", "arc_challenge"])
    with pytest.raises(QuestionError, match=r"hold the items that \['arc_easy'\] scores"):
        training_questions(["arc_easy:validation"], 8, exclude_tasks=["arc_easy"])
    with pytest.raises(QuestionError, match="only 285 questions"):
        training_questions(["mmlu:dev"], 300)
    with pytest.raises(UnknownNameError, match="mmlu:validation"):
        training_questions(["mmlu:test"], 8)
