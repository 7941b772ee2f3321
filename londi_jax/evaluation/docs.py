"""The shipped lm-eval tasks' data and per-document formatting (read by ``tasks/*.yaml``).

Each task's YAML names a ``custom_dataset`` here (through ``tasks/londi.py``), so lm-eval reads the
installed Arrow sets (``data.py``) instead of a dataset hub. The prompt formats are the standard
zero-shot ones lm-eval's own tasks use, so a score here can be set beside a published one:

- ARC: ``Question: {question}\\nAnswer:`` and each choice text as the continuation.
- MMLU / tinyMMLU: ``The following are multiple choice questions (with answers) about {subject}.``,
  a blank line, the question, ``A. ... D.`` and ``Answer:``; the continuations are `` A`` .. `` D``.
- HellaSwag: ``{activity}: {ctx_a} {Ctx_b}`` cleaned of WikiHow's bracketed markers, each ending
  (cleaned the same way) as the continuation (Zellers et al. 2019's evaluation text).
- Winogrande: partial scoring (Sakaguchi et al. 2020; Trinh & Le 2018): the sentence up to the
  blank filled with each option is the context, the rest of the sentence the one continuation, so
  the options are compared on the same words.
"""

from __future__ import annotations

import re
from typing import Any

from londi_jax.evaluation.data import load_split, tinymmlu_rows


def _splits(**splits: Any) -> Any:
    import datasets

    return datasets.DatasetDict(splits)


# ------------------------------------------------------------------ datasets (custom_dataset)
# lm-eval calls these with the task's metadata and dataset_kwargs as keyword arguments.
def arc_easy(**_: Any) -> Any:
    return _splits(validation=load_split("arc_easy", "validation"))


def arc_challenge(**_: Any) -> Any:
    return _splits(validation=load_split("arc_challenge", "validation"))


def mmlu(**_: Any) -> Any:
    return _splits(test=load_split("mmlu", "test", "all"), dev=load_split("mmlu", "dev", "all"))


def tinymmlu(**_: Any) -> Any:
    import datasets

    return _splits(test=datasets.Dataset.from_list(list(tinymmlu_rows())))


def hellaswag(**_: Any) -> Any:
    return _splits(validation=load_split("hellaswag", "validation"))


def winogrande(**_: Any) -> Any:
    return _splits(validation=load_split("winogrande", "validation"))


# ------------------------------------------------------------------ HellaSwag
def _clean(text: str) -> str:
    """WikiHow rows carry markers like ``[title]`` and ``[step]``: a title ends a sentence, the rest go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_docs(dataset: Any) -> Any:
    def one(doc: dict[str, Any]) -> dict[str, Any]:
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {"query": _clean(doc["activity_label"] + ": " + ctx),
                "choices": [_clean(e) for e in doc["endings"]],
                "gold": int(doc["label"])}

    return dataset.map(one)


# ------------------------------------------------------------------ Winogrande (partial scoring)
def _blank(sentence: str) -> int:
    i = sentence.find("_")
    if i < 0:
        raise ValueError(f"a Winogrande sentence without its blank '_': {sentence!r}")
    return i


def winogrande_text(doc: dict[str, Any]) -> int:
    """The gold option's index: with ``doc_to_choice`` giving contexts, lm-eval scores one continuation
    after each context and this index names the right context."""
    return {"1": 0, "2": 1}[doc["answer"]]


def winogrande_target(doc: dict[str, Any]) -> str:
    """The words after the blank (the same continuation for both options)."""
    return " " + doc["sentence"][_blank(doc["sentence"]) + 1:].strip()


def winogrande_choices(doc: dict[str, Any]) -> list[str]:
    """The sentence up to the blank, filled with each option."""
    head = doc["sentence"][:_blank(doc["sentence"])]
    return [head + doc["option1"], head + doc["option2"]]
