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
import math
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
        if not isinstance(self.template, str):
            raise StackError(f"stage {self.name!r}: its template must be text, not {type(self.template).__name__}")
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


RESERVED = (INPUT, "prompt")  # "prompt": the final prompt in each row's hand-offs


def check_stages(stages: Sequence[Stage]) -> None:
    """Everything about ``stages`` that needs no model: names, types, templates reading only
    ``{input}`` and earlier stages, generation settings. Raises ``StackError`` naming the stage."""
    if not stages:
        raise StackError("a stack needs at least one stage")
    seen: list[str] = []
    for k, stage in enumerate(stages):
        if not isinstance(stage.name, str) or not stage.name.isidentifier() or stage.name in RESERVED:
            raise StackError(f"stage {k}: its name {stage.name!r} must be an identifier other than "
                             f"{' or '.join(map(repr, RESERVED))} (later templates read it as {{name}})")
        if stage.name in seen:
            raise StackError(f"two stages are named {stage.name!r}; stage names must differ")
        if not isinstance(stage.template, str):
            raise StackError(f"stage {stage.name!r}: its template must be text, not {type(stage.template).__name__}")
        for field in stage.fields():
            if field != INPUT and field not in seen:
                where = (" (its own name: a stage reads only earlier stages)" if field == stage.name else
                         " (a later stage: stages run in order)" if any(s.name == field for s in stages) else "")
                raise StackError(f"stage {stage.name!r}: its template reads {{{field}}}, which is not "
                                 f"{{{INPUT}}} or an earlier stage{where}; it may read: {', '.join([INPUT, *seen])}")
        if isinstance(stage.max_new_tokens, bool) or not isinstance(stage.max_new_tokens, int) \
                or stage.max_new_tokens < 1:
            raise StackError(f"stage {stage.name!r}: max_new_tokens must be a whole number >= 1, got "
                             f"{stage.max_new_tokens!r}")
        if isinstance(stage.stop, str) or not all(isinstance(t, str) and t for t in stage.stop):
            raise StackError(f"stage {stage.name!r}: stop must be a list of non-empty strings, got {stage.stop!r}")
        t = stage.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise StackError(f"stage {stage.name!r}: temperature must be a finite number >= 0, got {t!r}")
        if not isinstance(stage.allow_empty, bool):
            raise StackError(f"stage {stage.name!r}: allow_empty must be true or false, got {stage.allow_empty!r}")
        seen.append(stage.name)


class Stack:
    """Stages in order, as one ``LM`` (see the module docstring). Raises ``StackError`` at
    construction (``check_stages``) for: no stages, a duplicate, reserved or invalid stage name, a
    template that reads a stage that is not earlier in the stack (naming what it may read), bad
    generation settings."""

    def __init__(self, stages: Sequence[Stage], name: str = "stack"):
        check_stages(stages)
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
        out = self.final.model.generate_tokens(ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                               top_p=top_p, stop=stop, seed=seed)
        self._finish([*calls, self.final.model.cost().last_call], "generate")  # the call just made
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
STAGE_KEYS = ("name", "model", "template", "adapter", "max_new_tokens", "stop", "temperature", "allow_empty")
DEFAULTS = {"max_new_tokens": 32, "stop": ["\n"], "temperature": 0.0, "allow_empty": False}


def _spec_stages(spec: Any, where: str) -> list[Stage]:
    """The stages a stack file describes, models not loaded (``model`` holds the reference), every
    field checked (``check_stages``). Raises ``StackError`` naming ``where`` and the stage."""
    if not isinstance(spec, dict) or spec.get("format") != STACK_FORMAT or not isinstance(spec.get("stages"), list):
        raise StackError(f"{where} is not a stack file (a JSON object with \"format\": {STACK_FORMAT!r} and a "
                         f"\"stages\" list)")
    out = []
    for k, st in enumerate(spec["stages"]):
        if not isinstance(st, dict) or not {"name", "model", "template"} <= set(st):
            raise StackError(f"{where}: stage {k} needs name, model and template")
        label = st["name"] if isinstance(st["name"], str) else k
        unknown = sorted(set(st) - set(STAGE_KEYS))
        if unknown:
            raise StackError(f"{where}: stage {label!r} has unknown key(s) {unknown}; known: {', '.join(STAGE_KEYS)}")
        for key in ("model", "adapter"):
            if key in st and not (isinstance(st[key], str) and st[key]):
                if key == "adapter" and st[key] is None:
                    continue
                raise StackError(f"{where}: stage {label!r}: {key} must be a name or a path (text), got {st[key]!r}")
        stop = st.get("stop", DEFAULTS["stop"])
        if not isinstance(stop, list):
            raise StackError(f"{where}: stage {label!r}: stop must be a list of strings (e.g. [\"\\n\"]), got {stop!r}")
        v = {k2: st.get(k2, d) for k2, d in DEFAULTS.items()}
        try:
            stage = Stage(st["name"], st["model"], st["template"], v["max_new_tokens"], tuple(stop), v["temperature"],
                          allow_empty=v["allow_empty"])
            out.append(stage)
            check_stages(out)
        except StackError as err:
            raise StackError(f"{where}: {err}") from None
    if not out:
        raise StackError(f"{where}: a stack needs at least one stage")
    return out


def save_stack_spec(path: str | os.PathLike, stages: Sequence[dict[str, Any]], name: str = "stack") -> Path:
    """Write a stack file: each stage a dict with ``name``, ``model`` (registered name or path),
    ``template`` and optionally ``adapter`` (a LoRA directory on that model), ``max_new_tokens``,
    ``stop`` (a list), ``temperature``, ``allow_empty``. Everything but the models is checked first
    (``StackError``); ``load_stack`` loads and checks the models."""
    from londi_jax.utils.io import atomic_write_json

    spec = {"format": STACK_FORMAT, "name": str(name), "stages": [dict(st) for st in stages]}
    _spec_stages(spec, str(path))
    return atomic_write_json(path, spec, allow_nan=False)


def looks_like_stack_file(path: str | os.PathLike) -> bool:
    """A ``.json`` file (any case): model loaders hand it to ``load_stack``, whose errors then say
    what is wrong with it (instead of a model loader's "not a GGUF file")."""
    p = Path(path)
    return p.suffix.lower() == ".json" and p.is_file()


def read_stack_file(path: str | os.PathLike) -> tuple[dict[str, Any], list[Stage]]:
    """``(spec, stages)`` of a stack file with every field checked and no model loaded (each
    stage's ``model`` holds its reference). Raises ``StackError`` for an unreadable or bad file."""
    p = Path(path)
    try:
        spec = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise StackError(f"cannot read the stack file {p}: {err}") from None
    return spec, _spec_stages(spec, str(p))


def load_stack(path: str | os.PathLike, dtype: str = "float32", progress: bool = False) -> Stack:
    """A stack from its file (``save_stack_spec``): every field is checked before any model loads,
    then each model is loaded once, and the LoRA adapters its stages name become one adapter bank on
it (``LanguageModel.with_adapters``; a stage runs as a view on its adapter, so the stages share
the base weights and compiled programs).
    Raises ``StackError`` for a malformed file, an unknown key, a wrong type, a bad template, or a
    stage model that cannot be loaded (quoting the loader: an unknown name lists the known ones)."""
    from londi_jax.lm.registry import load_lm

    p = Path(path)
    spec, skeleton = read_stack_file(p)
    refs = []
    for st in spec["stages"]:
        model_ref = str(st["model"])
        if not Path(model_ref).is_absolute() and (p.parent / model_ref).exists():
            model_ref = str(p.parent / model_ref)  # paths relative to the stack file
        adapter = st.get("adapter")
        if adapter is not None and not Path(adapter).is_absolute():
            adapter = str(p.parent / adapter)
        refs.append((model_ref, adapter))
    # one load per model; its stages' adapters become one bank on it (``LanguageModel.with_adapters``):
    # the stages share the base weights and compiled programs, and a stage is a view on its adapter
    models: dict[str, tuple[LM, Any, list[str]]] = {}
    for sk, (model_ref, _) in zip(skeleton, refs):
        if model_ref in models:
            continue
        adapters = list(dict.fromkeys(a for m, a in refs if m == model_ref and a is not None))
        names = [Path(a).name for a in adapters]
        try:
            base = load_lm(model_ref, dtype=dtype, progress=progress)
            if adapters and not hasattr(base, "with_adapters"):
                raise StackError(f"LoRA adapters need a decoder-only model; {model_ref} is {type(base).__name__}")
            bank = base.with_adapters(dict(zip(names if len(set(names)) == len(names) else adapters, adapters)),
                                      name=f"{base.name}+{len(adapters)} adapters") if adapters else None
        except (LondiError, OSError) as err:
            raise StackError(f"{p}: stage {sk.name!r}: {err}") from err
        models[model_ref] = (base, bank, adapters)
    stages = []
    for sk, (model_ref, adapter) in zip(skeleton, refs):
        base, bank, adapters = models[model_ref]
        stages.append(dataclasses.replace(sk, model=base if adapter is None else bank.adapter(adapters.index(adapter))))
    return Stack(stages, name=str(spec.get("name") or p.stem))
