"""Run (or resume) the LONDI BabyAI-Text pipeline from a preset, with any field overridden.

    python experiments/run.py --preset cpu-small                      # = londi-jax demo
    python experiments/run.py --preset cpu-small --out runs/a --config.eval.episodes 64
    python experiments/run.py --preset gpu --stages demos models       # train only
    python experiments/run.py --preset cpu-small --help                # every field

Typed CLI by tyro over ``londi_jax.experiments.config.PipelineConfig``; the preset gives the
defaults. Reruns with the same --out resume (finished stages are skipped); --force-stages reruns
chosen stages, --fork-from OLD starts --out from OLD's finished stages (see ``londi-jax demo --help``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import tyro

from londi_jax.experiments.config import PRESETS, PipelineConfig, preset
from londi_jax.experiments.pipeline import Pipeline
from londi_jax.utils.cache import enable_compilation_cache


@dataclasses.dataclass
class Run:
    """One pipeline run."""

    config: PipelineConfig
    out: str = "runs/cpu-small"
    stages: tuple[str, ...] = Pipeline.STAGES
    force_stages: tuple[str, ...] = ()  # rerun these even if finished (and every later stage)
    fork_from: str | None = None  # copy the finished stages of this run that the config change does not affect


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
    known, rest = pre.parse_known_args(argv)
    default = Run(config=preset(known.preset), out=f"runs/{known.preset}")
    run = tyro.cli(Run, default=default, args=rest, description=__doc__)
    enable_compilation_cache()  # as `londi-jax demo`: reruns load their compiled programs
    result = Pipeline(run.config, run.out, force=run.force_stages, fork_from=run.fork_from).run(run.stages)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
