"""The ``londi-jax`` console command. Each area registers its own subcommands."""

from __future__ import annotations

import argparse
import sys

from londi_jax.utils.errors import LondiError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser: ``lm``, ``env``, ``toy``, ``demo``, ..."""
    from londi_jax.envs import cli as env_cli
    from londi_jax.experiments import cli as experiments_cli
    from londi_jax.lm import cli as lm_cli
    from londi_jax.switcher import cli as switcher_cli

    parser = argparse.ArgumentParser(
        prog="londi-jax",
        description="LONDI in JAX: learn when a small LM (QUICK) should call a large one (DEEPTHINK).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in (lm_cli, env_cli, switcher_cli, experiments_cli):
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LondiError as err:
        print(f"londi-jax: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
