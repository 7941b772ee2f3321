"""``londi-jax demo`` (the main job: the whole LONDI pipeline) and ``londi-jax experiment``."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

from londi_jax.utils.errors import LondiError
from londi_jax.utils.output import add_json_flag, emit


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise LondiError(f"--set expects KEY=VALUE (e.g. eval.episodes=32), got {item!r}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def _render(result: dict[str, Any]) -> str:
    lines = [f"LONDI pipeline ({result['preset']}) finished in {result['seconds']:.0f} s"]
    for stage, sec in result["timings"].items():
        lines.append(f"  {stage:<12} {sec:7.1f} s")
    table = Path(result["report"]) / "results_table.md"
    if table.exists():
        lines += ["", table.read_text().rstrip()]
    lines += ["", f"outputs:  {result['out_dir']}",
              f"  table:  {Path(result['report']) / 'results_table.md'}",
              f"  plot:   {Path(result['report']) / 'cost_quality.png'}",
              f"  raw:    {result['results']}",
              f"  logs:   {Path(result['out_dir']) / 'log.jsonl'} (TensorBoard: {Path(result['out_dir']) / 'tb'})"]
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from londi_jax.experiments.config import preset, with_overrides
    from londi_jax.experiments.pipeline import run_pipeline

    config = with_overrides(preset(args.preset), _parse_set(args.set))
    if args.no_progress or args.json:
        config = with_overrides(config, {"progress": False})
    out = args.out or f"runs/{args.preset}"
    result = run_pipeline(config, out, args.stages.split(",") if args.stages else None)
    result["preset"] = args.preset
    summary = Path(result["report"]) / "summary.json"
    if summary.exists():
        result["summary"] = json.loads(summary.read_text())
    emit(result, args.json, _render)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` (the main job) to ``londi-jax``."""
    from londi_jax.experiments.config import PRESETS

    p = subparsers.add_parser(
        "demo", help="the main job: demos -> BC of QUICK and DEEPTHINK -> LONDI / LONDI-B -> every baseline "
                     "-> table + plot (cpu-small preset by default)")
    p.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS),
                   help="cpu-small: tiny models, 2-core CPU in minutes; gpu: SmolLM2-135M as DEEPTHINK")
    p.add_argument("--out", default=None, help="output directory (default runs/<preset>); reruns resume it")
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of demos,models,switch_data,switchers,evaluate,report")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set eval.episodes=32 --set deep.bc.epochs=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars / stage messages")
    add_json_flag(p)
    p.set_defaults(func=_demo)
