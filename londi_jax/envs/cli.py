"""Subcommands of this area for the ``londi-jax`` command."""

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to ``londi-jax``."""
