"""``londi-jax fslm show --stack FILE --input TEXT [--candidate TEXT ...] [--json]``: run an FSLM
stack on one input and print every stage's prompt and hand-off, then the final stage's answer
(its generation, or its scores of the candidates), with the stack's measured cost."""

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
