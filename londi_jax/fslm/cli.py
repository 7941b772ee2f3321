"""``londi-jax fslm``: FSLM stacks from the command line.

- ``show --stack FILE --input TEXT [--candidate TEXT ...]``: run a stack on one input and print
  every stage's prompt and hand-off, then the final stage's answer (its generation, or its scores
  of the candidates), with the stack's measured cost.
- ``distill --stack FILE --inputs FILE --workdir DIR [--teacher MODEL]``: fine-tune each stage
  (a LoRA adapter, or the whole model with ``--set finetune=full``) on a teacher's texts
  (``agents.distill``); resumable.
- ``experiment [--preset fslm-small] [--out DIR] [--set KEY=VALUE]``: the FSLM experiments,
  resumable: on benchmarks (``experiments.fslm``: stack vs base vs one adapter, through lm-eval)
  or on BabyAI-Text (``--preset fslm-babyai-small``, ``experiments.fslm_babyai``: a stack
  distilled from the bot vs single models, then as LONDI's QUICK).

A command-line module: it sits above every layer and imports the one it runs when it runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from londi_jax.utils.output import add_json_flag, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fslm`` to ``londi-jax``."""
    fslm = subparsers.add_parser("fslm", help="FSLM stacks of small LMs: show a stack's hand-offs")
    sub = fslm.add_subparsers(dest="fslm_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser("show", help="run a stack on one input and print every stage's text")
    p.add_argument("--stack", required=True, help="a stack file (londi_jax.fslm.save_stack_spec)")
    p.add_argument("--input", required=True, help="the text the stack is given")
    p.add_argument("--candidate", action="append", default=[], metavar="TEXT",
                   help="score this continuation with the final stage (repeatable); without: the final stage generates")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="the final stage's generation length (default: its max_new_tokens in the stack file)")
    add_json_flag(p)
    p.set_defaults(func=_show)

    d = sub.add_parser("distill", help="fine-tune each stage of a stack on a teacher's texts (resumable)",
                       description="Each stage of --stack (its models are the bases) is fine-tuned (a LoRA adapter; "
                                   "--set finetune=full: the whole model) on the text the teacher writes for it, in "
                                   "order; the result is WORKDIR/stack.json. Rerunning resumes (the teacher's texts, "
                                   "finished stages and checkpoints are kept).")
    d.add_argument("--stack", required=True, help="a stack file: the stages' names, models and templates")
    d.add_argument("--inputs", required=True,
                   help="a .jsonl file, one {\"input\": TEXT} per line, optionally with \"answer\" (the final "
                        "stage's target; the teacher then writes only the earlier stages) and \"candidates\" "
                        "(the final stage learns to choose the answer among them); or a .txt file, one input per line")
    d.add_argument("--workdir", required=True, help="where the texts, adapters and checkpoints go")
    d.add_argument("--teacher", default=None,
                   help="the model that writes the stages' texts (registered name, .gguf, HF directory); may be "
                        "omitted only for a one-stage stack whose inputs carry answers")
    d.add_argument("--stage-inputs", default="teacher", choices=("teacher", "stack"),
                   help="what a later stage reads while it trains: the teacher's earlier texts, or the "
                        "already-distilled stages' outputs")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a trainer setting (agents.bc.BCConfig), e.g. --set epochs=2 --set learning_rate=1e-3 "
                        "--set lora.rank=16")
    d.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype of the stages' models and the teacher")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_flag(d)
    d.set_defaults(func=_distill)

    e = sub.add_parser("experiment", help="the FSLM benchmark experiment: a distilled stack vs its base vs one "
                                          "adapter, zero-shot through lm-eval (resumable)")
    e.add_argument("--preset", default="fslm-small", choices=FSLM_PRESET_NAMES,
                   help="fslm-small: benchmarks on a 2-core CPU; fslm-gpu: benchmarks on an accelerator; "
                        "fslm-babyai-small: a stack distilled from the BabyAI bot as LONDI's QUICK (2-core CPU)")
    e.add_argument("--out", default=None, help="output directory (default runs/<preset>); rerunning resumes it")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the preset's config (experiments.fslm.FSLMConfig, or "
                        "experiments.fslm_babyai.FSLMBabyAIConfig for fslm-babyai-small), e.g. "
                        "--set train_questions=32 --set tasks=tinymmlu --set bc.epochs=1")
    e.add_argument("--no-progress", action="store_true", help="no progress bars / stage messages")
    add_json_flag(e)
    e.set_defaults(func=_experiment)


# experiments.fslm.FSLM_PRESETS' keys, then experiments.fslm_babyai.BABYAI_PRESETS' (a test keeps them equal)
FSLM_PRESET_NAMES = ("fslm-small", "fslm-gpu", "fslm-babyai-small")


def _read_inputs(path: str) -> tuple[list[str], list[str] | None, list[list[str]] | None]:
    """(inputs, answers or None, candidates or None) from a .jsonl or .txt file; ``LondiError``
    naming the line for a bad row, or answers / candidates on some rows only."""
    import json
    from pathlib import Path

    from londi_jax.utils.errors import LondiError

    p = Path(path)
    text = p.read_text()
    if p.suffix.lower() != ".jsonl":
        rows = [{"input": line} for line in text.splitlines() if line.strip()]
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise LondiError(f"{p} line {i} is not JSON ({err})") from None
            if not isinstance(row, dict) or not isinstance(row.get("input"), str):
                raise LondiError(f"{p} line {i}: expected an object with an \"input\" text, got {line[:80]!r}")
            unknown = sorted(set(row) - {"input", "answer", "candidates"})
            if unknown:
                raise LondiError(f"{p} line {i}: unknown key(s) {unknown}; known: input, answer, candidates")
            if "answer" in row and not isinstance(row["answer"], str):
                raise LondiError(f"{p} line {i}: \"answer\" must be a text, got {row['answer']!r}")
            cands = row.get("candidates", [])
            if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands):
                raise LondiError(f"{p} line {i}: \"candidates\" must be a list of texts, got {cands!r}")
            rows.append(row)
    if not rows:
        raise LondiError(f"{p} holds no inputs")
    out: list[Any] = [[r["input"] for r in rows]]
    for key in ("answer", "candidates"):
        have = [key in r for r in rows]
        if any(have) and not all(have):
            raise LondiError(f"{p}: {key!r} is on {sum(have)} of {len(rows)} rows; give it on every row or none")
        out.append([r[key] for r in rows] if all(have) else None)
    return out[0], out[1], out[2]


def _distill(args: argparse.Namespace) -> int:
    import dataclasses

    from londi_jax.agents.distill import DistillConfig, distill
    from londi_jax.experiments.cli import _parse_set
    from londi_jax.experiments.config import with_overrides
    from londi_jax.fslm.stack import read_stack_file
    from londi_jax.lm.registry import load_lm

    read_stack_file(args.stack)  # a bad stack file fails before any model loads
    inputs, answers, candidates = _read_inputs(args.inputs)
    base = DistillConfig()
    config = DistillConfig(bc=with_overrides(base.bc, _parse_set(args.set)), stage_inputs=args.stage_inputs,
                           final_loss=base.final_loss)
    if candidates is not None:
        config = dataclasses.replace(config, bc=dataclasses.replace(
            config.bc, candidates=max(config.bc.candidates, max(len(c) for c in candidates))))
    teacher = load_lm(args.teacher, dtype=args.dtype, progress=not args.no_progress) if args.teacher else None
    res = distill(args.stack, teacher, inputs, args.workdir, config, candidates=candidates, dtype=args.dtype,
                  progress=not args.no_progress, answers=answers)
    out = {"stack": str(res.stack_path), "reused": res.reused,
           "final_loss": {k: (h[-1].get("train_loss") if h else None) for k, h in res.history.items()}}
    emit(out, args.json, lambda r: f"distilled stack: {r['stack']}" + (
        f" (stages already distilled, reused: {', '.join(r['reused'])})" if r["reused"] else "") + "".join(
        f"\n  {k}: final training loss {v:.4f}" for k, v in r["final_loss"].items() if v is not None))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from londi_jax.experiments.cli import _parse_set
    from londi_jax.experiments.config import with_overrides
    from londi_jax.experiments.fslm import FSLM_PRESETS, fslm_preset, run_fslm
    from londi_jax.experiments.fslm_babyai import babyai_preset, run_fslm_babyai

    benchmarks = args.preset in FSLM_PRESETS
    config = with_overrides(fslm_preset(args.preset) if benchmarks else babyai_preset(args.preset),
                            _parse_set(args.set))
    out = args.out or f"runs/{args.preset}"
    res = (run_fslm if benchmarks else run_fslm_babyai)(config, out, progress=not (args.no_progress or args.json))
    from pathlib import Path

    emit({**res, "out_dir": out}, args.json,
         lambda r: f"FSLM experiment ({r['preset']}) in {r['out_dir']}: {r['seconds']:.0f} s\n\n"
                   + (Path(out) / "report.md").read_text())
    return 0


def _show(args: argparse.Namespace) -> int:
    from londi_jax.fslm import load_stack
    from londi_jax.utils.errors import LondiError

    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise LondiError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    stack = load_stack(args.stack)
    out: dict[str, Any] = {"stack": stack.name, "stages": [s.name for s in stack.stages]}
    if args.candidate:
        res = stack.score([args.input], [args.candidate])
        out["scores"] = [[c, v] for c, v in zip(args.candidate, res.logprobs[0].tolist())]
    else:  # the final stage's own settings, as when it runs inside the stack
        fin = stack.final
        res = stack.generate([args.input], args.max_new_tokens or fin.max_new_tokens, temperature=fin.temperature,
                             stop=fin.stop)
        out["answer"] = res.texts[0]
    out["handoffs"], out["cost"] = res.handoffs[0], res.cost

    def render(r: dict[str, Any]) -> str:
        lines = [f"stack {r['stack']}: {' -> '.join(r['stages'])}", f"[input] {r['handoffs']['input']}"]
        for name in r["stages"][:-1]:
            lines.append(f"[{name}] {r['handoffs'][name]}")
        lines.append(f"[final prompt of {r['stages'][-1]}]\n{r['handoffs']['prompt']}")
        if "scores" in r:
            lines += [f"[{r['stages'][-1]}] log p({c!r}) = {v:.4f}" for c, v in r["scores"]]
        else:
            lines.append(f"[{r['stages'][-1]}] {r['answer']}")
        c = r["cost"]
        lines.append(f"cost: {c.seconds:.2f} s, {c.flops / 1e9:.3f} GFLOP, {c.prompt_tokens} prompt + "
                     f"{c.generated_tokens} generated + {c.scored_tokens} scored tokens over {len(r['stages'])} stages")
        return "\n".join(lines)

    emit(out, args.json, render)
    return 0
