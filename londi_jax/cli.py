"""The ``londi-jax`` console command. Each area registers its own subcommands.

Start-up stays light: building the parser imports no JAX, Flax or transformers (each command
imports what it uses when it runs), so ``londi-jax --help`` answers at once. transformers'
advisory "PyTorch was not found" message is silenced in ``londi_jax/__init__.py``: our models
never need PyTorch.
"""

from __future__ import annotations

import sys

from londi_jax.utils.cache import enable_compilation_cache
from londi_jax.utils.errors import LondiError


def build_parser():
    """The full argument parser: ``lm``, ``env``, ``toy``, ``demo``, ``eval``, ..."""
    from londi_jax.envs import cli as env_cli
    from londi_jax.evaluation import cli as eval_cli
    from londi_jax.experiments import cli as experiments_cli
    from londi_jax.fslm import cli as fslm_cli
    from londi_jax.lm import cli as lm_cli
    from londi_jax.switcher import cli as switcher_cli
    from londi_jax.utils.cli_args import LondiParser

    parser = LondiParser(
        prog="londi-jax",
        description="LONDI in JAX: learn when a small LM (QUICK) should call a large one (DEEPTHINK).",
    )

    from londi_jax.utils.cli_args import count

    multi = parser.add_argument_group("multi-process runs (utils/distributed.py; SLURM, Open MPI and TPU pods "
                                      "are detected without flags)")
    multi.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="process 0's address: join a multi-process run (with --num-processes, --process-id)")
    multi.add_argument("--num-processes", type=count(), default=None, help="processes in the run")
    multi.add_argument("--process-id", type=count(0), default=None, help="this process's index, 0 .. N-1")
    multi.add_argument("--local-devices", type=count(), default=None,
                       help="virtual CPU devices in this process (trials of a mesh on one machine)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in (lm_cli, env_cli, switcher_cli, experiments_cli, fslm_cli, eval_cli):
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    enable_compilation_cache()  # reruns and resumed stages load their XLA programs (utils/cache.py)
    try:
        if args.coordinator or args.num_processes or args.process_id is not None or args.local_devices \
                or _cluster_launch():
            from londi_jax.utils.distributed import initialize

            initialize(args.coordinator, args.num_processes, args.process_id, args.local_devices)
        return int(args.func(args) or 0)
    except LondiError as err:
        print(f"londi-jax: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or folder that cannot be read or written: say which, no traceback
        print(f"londi-jax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("londi-jax: interrupted", file=sys.stderr)
        return 130


def _cluster_launch() -> bool:
    from londi_jax.utils.distributed import cluster_launch

    return cluster_launch() is not None


if __name__ == "__main__":
    sys.exit(main())
