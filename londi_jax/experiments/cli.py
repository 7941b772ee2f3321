"""``londi-jax demo``: the main job, the whole LONDI pipeline (resumable, forkable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from londi_jax.utils import cli_args as A
from londi_jax.utils.errors import LondiError
from londi_jax.utils.output import add_json_flag, emit

DEFAULT_PRESET = "cpu-small"

DESCRIPTION = """\
Run the LONDI pipeline on BabyAI-Text or ScienceWorld: expert demos -> behaviour cloning of QUICK
and DEEPTHINK -> switch data -> offline LONDI / LONDI-B switchers -> (online switchers, trained
in one compiled program on device) -> evaluation of every method on the same episodes -> results
table, cost-quality plot and summary (in OUT/report).

Presets: cpu-small (the default; BabyAI-Text, tiny from-scratch models, about 13 minutes on a
2-core CPU), sw-small (ScienceWorld, four short task types, tiny from-scratch models on gold
paths; needs Java; about 30 minutes on a 2-core CPU), tiny (a smoke run of every stage in a few
minutes; numbers meaningless), gpu (SmolLM2-135M fine-tuned with LoRA as DEEPTHINK, all five task
kinds; needs an accelerator), real-small (a real pretrained pair, both with LoRA; needs an
accelerator), sw-gpu (ScienceWorld, eight task types, SmolLM2-135M vs Qwen2.5-0.5B with LoRA;
needs an accelerator), jax-online (cpu-small plus LONDI / LONDI-B switches trained online with
BabyAI-Text, QUICK, DEEPTHINK and the learner in one JAX program, compared with the offline ones).

Every stage writes OUT/<stage>.done.json; rerunning resumes where it stopped. A run keeps its
configuration in OUT/config.json, so `londi-jax demo --out OUT` resumes it without repeating the
flags. To change a finished run's configuration: --fork-from OLD --out NEW (reuses the stages the
change does not affect) or --force-stages STAGE (reruns it and every later stage in place).
"""


def _parse_set(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings -> ``{KEY: VALUE}``; values stay text and are parsed as the field's
    type by ``with_overrides``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise LondiError(f"--set expects KEY=VALUE (e.g. eval.episodes=32), got {item!r}")
        out[key.strip()] = raw
    return out


def _stage_list(text: str | None, flag: str) -> list[str]:
    from londi_jax.experiments.pipeline import STAGES

    if not text:
        return []
    names = [s.strip() for s in text.split(",") if s.strip()]
    for s in names:
        if s not in STAGES:
            raise LondiError(f"{flag}: unknown stage {s!r}; stages: {', '.join(STAGES)}")
    return names


def _render(result: dict[str, Any]) -> str:
    lines = [f"LONDI pipeline ({result['preset']}) in {result['out_dir']}: {result['seconds']:.0f} s"]
    for stage, sec in result["timings"].items():
        lines.append(f"  {stage:<12} {sec:7.1f} s")
    if result["copied"]:
        lines.append(f"  reused from {result['forked_from']}: {', '.join(result['copied'])}")
    if result["skipped"]:
        lines.append(f"  already done (skipped): {', '.join(result['skipped'])}; rerun with --force-stages")
    not_done = [s for s in result["all_stages"] if s not in result["stages_done"]]
    if not_done:
        lines.append(f"  not run yet: {', '.join(not_done)} (rerun `londi-jax demo --out {result['out_dir']}`)")
    outputs = result["outputs"]
    if "table" in outputs:
        lines += ["", Path(outputs["table"]).read_text().rstrip()]
    labels = {"table": "table", "plot": "plot", "summary": "summary", "results": "raw", "models": "models",
              "demos": "demos", "log": "logs"}
    shown = [(labels[k], outputs[k]) for k in labels if k in outputs]
    if shown:
        lines += ["", f"outputs:  {result['out_dir']}"]
        for label, path in shown:
            extra = f" (TensorBoard: {outputs['tensorboard']})" if label == "logs" and "tensorboard" in outputs else ""
            lines.append(f"  {label + ':':<9}{path}{extra}")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from londi_jax.experiments.config import preset, with_overrides
    from londi_jax.experiments.pipeline import STAGES, Pipeline, accelerator_warning, read_run_config, time_estimate
    from londi_jax.utils.io import read_json

    # everything is parsed and checked before any work: a bad --set fails here, in one line
    overrides = _parse_set(args.set)
    if args.mesh:  # the same field as --set mesh=...
        overrides["mesh"] = ",".join(f"{k}={v}" for k, v in args.mesh.items())
    stages = _stage_list(args.stages, "--stages") or None
    force = _stage_list(args.force_stages, "--force-stages")
    out = args.out or f"runs/{args.preset or DEFAULT_PRESET}"
    if args.preset:
        base = preset(args.preset)
    else:  # resume: the configuration stored in the run (or the one forked from), else the default preset
        base = read_run_config(out) or (read_run_config(args.fork_from) if args.fork_from else None) \
            or preset(DEFAULT_PRESET)
    config = with_overrides(base, {**overrides, "progress": not (args.no_progress or args.json)})
    warning = accelerator_warning(config)
    if warning:
        print(f"londi-jax: warning: {warning}", file=sys.stderr, flush=True)
        print(f"londi-jax: warning: {time_estimate(config)}", file=sys.stderr, flush=True)
    pipe = Pipeline(config, out, force=force, fork_from=args.fork_from)
    result = pipe.run(stages)
    result["all_stages"] = list(STAGES)
    if "summary" in result["outputs"]:
        result["summary"] = read_json(result["outputs"]["summary"])
    emit(result, args.json, _render)
    return 0


PRESET_NAMES = ("cpu-small", "tiny", "gpu", "real-small", "sw-small", "sw-gpu", "jax-online")  # config.PRESETS' keys (a test keeps them equal); named
# here so that building the parser for --help imports no JAX (config.py imports the BC trainer)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` (the main job) to ``londi-jax``."""
    from londi_jax.utils.cli_args import HelpFormatter

    class Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Defaults shown (as every command) and the description's layout kept."""

    p = subparsers.add_parser(
        "demo", help="the main job: demos -> BC of QUICK and DEEPTHINK -> LONDI / LONDI-B -> every baseline "
                     "-> table + plot (cpu-small preset by default)",
        description=DESCRIPTION, formatter_class=Formatter)
    p.add_argument("--preset", default=None, choices=PRESET_NAMES,
                   help="cpu-small (default for a new run): tiny models, 2-core CPU in minutes; tiny: a smoke "
                        "run of every stage; gpu: SmolLM2-135M as DEEPTHINK; real-small: a real pretrained pair; sw-small: "
                        "ScienceWorld, about 30 minutes on a 2-core CPU; sw-gpu: ScienceWorld with a real pair; jax-online: "
                        "cpu-small plus switches trained online on device in one program. "
                        "Omitted on an existing --out: the run's stored configuration")
    p.add_argument("--out", default=None,
                   help=f"output directory (default runs/<preset>, i.e. runs/{DEFAULT_PRESET}); rerunning resumes it")
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of demos,models,switch_data,switchers,online,evaluate,report (default all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (checked before any work), e.g. --set eval.episodes=32 "
                        "--set switch.c_grid=0.01,0.05 --set deep.source=PATH/TO/HF_DIR_OR.gguf; every field: "
                        "python experiments/run.py --help")
    p.add_argument("--force-stages", default=None, metavar="STAGES",
                   help="comma-separated stages to rerun even if finished, e.g. evaluate,report; every later "
                        "stage reruns too. Also accepts a changed configuration that affects only these stages "
                        "and later ones")
    p.add_argument("--fork-from", default=None, metavar="RUN_DIR",
                   help="start --out as a copy of the finished stages of RUN_DIR that the configuration change "
                        "does not affect (without --preset: RUN_DIR's configuration plus --set)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars / stage messages")
    A.add_mesh_flag(p)
    add_json_flag(p)
    p.set_defaults(func=_demo)
