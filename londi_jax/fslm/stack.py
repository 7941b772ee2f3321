"""FSLM stacks (Liang 2024, "Stacking Small Language Models for Generalizability"): small LMs in a
chain, each doing one sub-step and handing natural language to the next, as one ``LM``.

A ``Stage`` is a model, a prompt template, generation settings and an output parser. The template
is Python ``str.format`` text over ``{input}`` (what the stack was given) and the outputs of the
earlier stages by name (``{facts}``, ``{plan}``, ...). A ``Stack`` runs its stages in order on a
whole batch (one ``generate`` call per stage for all rows, not one per row), parses each stage's
text into the hand-off the next stages read, and lets the final stage answer: ``score`` /
``score_tokens`` score the candidates after the final stage's prompt, ``generate`` generates
from it, ``embed`` embeds it. So a stack serves wherever a single model does (QUICK, DEEPTHINK,
``lm_eval --model londi-jax``), and every result carries

- ``handoffs``: per row, every stage's text (the interpretability FSLM claims, made inspectable;
  ``londi-jax fslm show`` prints them), and
- ``cost``: the sum of the stages' own measured calls (seconds, tokens, FLOPs).

Stages may be different models or the same object (one base model serving several stages);
``load_stack`` loads one per distinct (model, adapter) pair. The FSLM paper gives no templates or
parsers; ``default_parser`` keeps a stage's text up to its stop string, stripped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from londi_jax.lm.interface import LM, CallCost, CostReport, GenerateResult, LMInputError, ScoreResult
from londi_jax.utils.errors import LondiError

INPUT = "input"  # the template field holding what the stack was given
STACK_FORMAT = "londi_jax-fslm-stack"


class StackError(LondiError):
    """A stack that cannot be built or run: a bad template, an unknown stage model, an empty hand-off."""


def default_parser(text: str) -> str:
    """A stage's hand-off: its text, stripped of surrounding whitespace."""
    return text.strip()


@dataclasses.dataclass(frozen=True)
class Stage:
    """One sub-step: ``model`` fills ``template`` (``{input}`` and earlier stages' names) and
    generates up to ``max_new_tokens`` (stopping at ``stop``); ``parse`` turns its text into the
    hand-off (``default_parser``). ``allow_empty``: an empty hand-off is passed on instead of raising."""

    name: str
    model: LM
    template: str
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    temperature: float = 0.0
    parse: Callable[[str], str] = default_parser
    allow_empty: bool = False

    def fields(self) -> list[str]:
        """The names the template reads, in order (``StackError`` for positional or formatted fields)."""
        out = []
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as err:
            raise StackError(f"stage {self.name!r}: its template is not valid format text ({err}); "
                             f"write fields as {{input}} or {{stage_name}} and double literal braces") from None
        for _, field, spec, conv in parsed:
            if field is None:
                continue
            if not field.isidentifier() or spec or conv:
                raise StackError(f"stage {self.name!r}: template field {{{field}{'!' + conv if conv else ''}"
                                 f"{':' + spec if spec else ''}}} is not a plain name; use {{input}} or an earlier "
                                 f"stage's name")
            out.append(field)
        return out


def _sum_costs(kind: str, calls: Sequence[CallCost | None]) -> CallCost | None:
    calls = [c for c in calls if c is not None]
    if not calls:
        return None
    return CallCost(kind, sum(c.seconds for c in calls), any(c.compiled for c in calls),
                    sum(c.prompt_tokens for c in calls), sum(c.scored_tokens for c in calls),
                    sum(c.generated_tokens for c in calls), sum(c.flops for c in calls))


class Stack:
    """Stages in order, as one ``LM`` (see the module docstring). Raises ``StackError`` at
    construction for: no stages, a duplicate or invalid stage name, a template that reads a stage
    that is not earlier in the stack (naming what it may read)."""

    def __init__(self, stages: Sequence[Stage], name: str = "stack"):
        if not stages:
            raise StackError("a stack needs at least one stage")
        seen: list[str] = []
        for stage in stages:
            if not stage.name.isidentifier() or stage.name == INPUT:
                raise StackError(f"stage name {stage.name!r} must be an identifier other than {INPUT!r} "
                                 f"(later templates read it as {{{stage.name}}})")
            if stage.name in seen:
                raise StackError(f"two stages are named {stage.name!r}; stage names must differ")
            for field in stage.fields():
                if field != INPUT and field not in seen:
                    later = " (a later stage: stages run in order)" if any(s.name == field for s in stages) else ""
                    raise StackError(f"stage {stage.name!r}: its template reads {{{field}}}, which is not "
                                     f"{{{INPUT}}} or an earlier stage{later}; it may read: "
                                     f"{', '.join([INPUT, *seen])}")
            if int(stage.max_new_tokens) < 1:
                raise StackError(f"stage {stage.name!r}: max_new_tokens must be >= 1, got {stage.max_new_tokens}")
            seen.append(stage.name)
        self.stages = tuple(stages)
        self.name = name
        self._calls: list[CallCost] = []

    # ------------------------------------------------------------------ the LM surface
    @property
    def final(self) -> Stage:
        return self.stages[-1]

    @property
    def tokenizer(self) -> Any:
        return self.final.model.tokenizer

    @property
    def hidden_size(self) -> int:
        return self.final.model.hidden_size

    @property
    def context_window(self) -> int:
        return int(self.final.model.context_window)

    is_encoder_decoder = False

    def models(self) -> list[LM]:
        """The distinct models of the stages (a shared base counted once)."""
        out: list[LM] = []
        for s in self.stages:
            if not any(m is s.model for m in out):
                out.append(s.model)
        return out

    # ------------------------------------------------------------------ running the stages
    def run(self, inputs: Sequence[str]) -> tuple[list[str], list[dict[str, str]], list[CallCost]]:
        """Every stage but the final one on ``inputs``: returns the final stage's prompts, each
        row's hand-offs (``{"input": ..., stage: text, ...}``, the final prompt under ``"prompt"``)
        and the calls made. Raises ``StackError`` when a stage hands on an empty text."""
        if isinstance(inputs, str):
            raise LMInputError("give a list of input texts, not one string")
        rows: list[dict[str, str]] = [{INPUT: str(x)} for x in inputs]
        calls: list[CallCost] = []
        for stage in self.stages[:-1]:
            res = stage.model.generate([stage.template.format(**r) for r in rows], stage.max_new_tokens,
                                       temperature=stage.temperature, stop=tuple(stage.stop))
            calls.append(res.cost)
            for i, (r, text) in enumerate(zip(rows, res.texts)):
                handoff = stage.parse(text)
                if not isinstance(handoff, str):
                    raise StackError(f"stage {stage.name!r}: its parser returned {type(handoff).__name__}, not a string")
                if not handoff.strip() and not stage.allow_empty:
                    raise StackError(f"stage {stage.name!r} handed on an empty text for input {i} (it generated "
                                     f"{text!r}); raise its max_new_tokens, change its stop strings or template, or "
                                     f"set allow_empty=True")
                r[stage.name] = handoff
        prompts = [self.final.template.format(**r) for r in rows]
        for r, p in zip(rows, prompts):
            r["prompt"] = p
        return prompts, rows, calls

    def _finish(self, calls: list[CallCost | None], kind: str) -> CallCost | None:
        total = _sum_costs(kind, calls)
        if total is not None:
            self._calls.append(total)
        return total

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]], *,
              with_embedding: bool = False) -> ScoreResult:
        """The candidates' log-probabilities under the final stage, after the earlier stages ran on
        ``prompts``; ``handoffs`` per row, ``cost`` of all stages."""
        final_prompts, rows, calls = self.run(prompts)
        res = self.final.model.score(final_prompts, candidates, with_embedding=with_embedding)
        return dataclasses.replace(res, cost=self._finish([*calls, res.cost], "score"), handoffs=rows)

    def score_tokens(self, prompt_ids: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[Sequence[int]]], *,
                     with_embedding: bool = False) -> ScoreResult:
        """Token-level ``score``: the prompts are decoded with the stack's (final stage's) tokenizer,
        run through the stages, and the final prompts re-encoded; candidates stay as given."""
        texts = [self.tokenizer.decode(list(p), skip_special_tokens=True) for p in prompt_ids]
        final_prompts, rows, calls = self.run(texts)
        ids = [list(self.tokenizer.encode(p)) for p in final_prompts]
        res = self.final.model.score_tokens(ids, candidate_ids, with_embedding=with_embedding)
        return dataclasses.replace(res, cost=self._finish([*calls, res.cost], "score"), handoffs=rows)

    def generate(self, prompts: Sequence[str], max_new_tokens: int, *, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, stop: Sequence[str] = (),
                 seed: int = 0) -> GenerateResult:
        """The final stage's generation after the earlier stages; ``handoffs`` per row."""
        final_prompts, rows, calls = self.run(prompts)
        res = self.final.model.generate(final_prompts, max_new_tokens, temperature=temperature, top_k=top_k,
                                        top_p=top_p, stop=stop, seed=seed)
        return dataclasses.replace(res, cost=self._finish([*calls, res.cost], "generate"), handoffs=rows)

    def generate_tokens(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, *, temperature: float = 0.0,
                        top_k: int | None = None, top_p: float | None = None, stop: tuple[str, ...] = (),
                        seed: int = 0) -> tuple[list[list[int]], list[str]]:
        """Token-level ``generate`` (what lm-eval's ``generate_until`` calls)."""
        texts = [self.tokenizer.decode(list(p), skip_special_tokens=True) for p in prompt_ids]
        final_prompts, _, calls = self.run(texts)
        ids = [list(self.tokenizer.encode(p)) for p in final_prompts]
        before = self.final.model.cost().total_seconds
        out = self.final.model.generate_tokens(ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                               top_p=top_p, stop=stop, seed=seed)
        last = self.final.model.cost().last_call
        self._finish([*calls, last if self.final.model.cost().total_seconds > before else None], "generate")
        return out

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """The final stage's embedding of its prompt (after the earlier stages)."""
        final_prompts, _, calls = self.run(prompts)
        out = self.final.model.embed(final_prompts)
        self._finish([*calls, self.final.model.cost().last_call], "embed")
        return out

    def cost(self) -> CostReport:
        """Sizes summed over the distinct models; seconds / FLOPs / calls of this stack's own calls."""
        reps = [m.cost() for m in self.models()]
        last = self._calls[-1] if self._calls else None
        fin = self.final.model.cost()
        return CostReport(self.name, sum(r.num_params for r in reps), sum(r.num_nonembedding_params for r in reps),
                          fin.context, sum(r.flops_per_prompt_token for r in reps),
                          sum(r.flops_per_generated_token for r in reps), last,
                          sum(c.seconds for c in self._calls), sum(c.flops for c in self._calls), len(self._calls))


# ------------------------------------------------------------------ saved stacks
def save_stack_spec(path: str | os.PathLike, stages: Sequence[dict[str, Any]], name: str = "stack") -> Path:
    """Write a stack file: each stage a dict with ``name``, ``model`` (registered name or path),
    ``template`` and optionally ``adapter`` (a LoRA directory on that model), ``max_new_tokens``,
    ``stop``, ``temperature``, ``allow_empty``. Checked by loading nothing: ``load_stack`` checks
    the models."""
    from londi_jax.utils.io import atomic_write_json

    return atomic_write_json(path, {"format": STACK_FORMAT, "name": name, "stages": list(stages)})


STAGE_KEYS = ("name", "model", "template", "adapter", "max_new_tokens", "stop", "temperature", "allow_empty")


def is_stack_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.suffix != ".json" or not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == STACK_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_stack(path: str | os.PathLike, dtype: str = "float32", progress: bool = False) -> Stack:
    """A stack from its file (``save_stack_spec``): each distinct (model, adapter) pair is loaded
    once and shared by the stages that name it. Raises ``StackError`` for a malformed file, an
    unknown key, or a stage model that cannot be loaded (quoting the loader: an unknown name lists
    the known ones)."""
    from londi_jax.lm.registry import load_lm

    p = Path(path)
    try:
        spec = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise StackError(f"cannot read the stack file {p}: {err}") from None
    if not isinstance(spec, dict) or spec.get("format") != STACK_FORMAT or not isinstance(spec.get("stages"), list):
        raise StackError(f"{p} is not a stack file (a JSON object with \"format\": {STACK_FORMAT!r} and a "
                         f"\"stages\" list)")
    cache: dict[tuple[str, str | None], LM] = {}
    stages = []
    for k, st in enumerate(spec["stages"]):
        if not isinstance(st, dict) or not {"name", "model", "template"} <= set(st):
            raise StackError(f"{p}: stage {k} needs name, model and template")
        unknown = sorted(set(st) - set(STAGE_KEYS))
        if unknown:
            raise StackError(f"{p}: stage {st['name']!r} has unknown key(s) {unknown}; known: {', '.join(STAGE_KEYS)}")
        model_ref = str(st["model"])
        if not Path(model_ref).is_absolute() and (p.parent / model_ref).exists():
            model_ref = str(p.parent / model_ref)  # paths relative to the stack file
        adapter = st.get("adapter")
        if adapter is not None and not Path(adapter).is_absolute():
            adapter = str(p.parent / adapter)
        key = (model_ref, adapter)
        if key not in cache:
            try:
                lm = cache.get((model_ref, None)) or load_lm(model_ref, dtype=dtype, progress=progress)
            except LondiError as err:
                raise StackError(f"{p}: stage {st['name']!r}: {err}") from err
            cache.setdefault((model_ref, None), lm)
            if adapter is not None:
                from londi_jax.lm.engine import LanguageModel
                from londi_jax.lm.lora import load_lora

                lm = LanguageModel(lm.config, load_lora(lm.model, adapter), lm.tokenizer,
                                   name=f"{lm.name}+{Path(adapter).name}", eog_token_ids=lm.declared_eog_ids)
            cache[key] = lm
        stages.append(Stage(st["name"], cache[key], st["template"], int(st.get("max_new_tokens", 32)),
                            tuple(st.get("stop", ("\n",))), float(st.get("temperature", 0.0)),
                            allow_empty=bool(st.get("allow_empty", False))))
    return Stack(stages, name=str(spec.get("name") or p.stem))
