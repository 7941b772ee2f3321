"""``londi-jax`` help and start-up: every option documented (with its default), ``--help`` light
(no JAX / Flax / transformers / PyTorch imported), and no "PyTorch was not found" noise."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import pytest

from londi_jax.cli import build_parser

HEAVY = ("jax", "flax", "transformers", "torch", "optax", "orbax")


def _commands(parser: argparse.ArgumentParser, path=()):
    """(argv path, parser) for the top parser and every sub-command, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _run(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_every_option_of_every_command_has_help_and_shows_its_default():
    commands = list(_commands(build_parser()))
    names = {" ".join(p) for p, _ in commands}
    assert {"lm score", "lm generate", "env show", "env demos", "toy", "toy-sweep", "demo"} <= names
    missing = []
    for path, parser in commands:
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"londi-jax {' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(f"{where}: no help")
            default = action.default
            if action.option_strings and default not in (None, False, argparse.SUPPRESS) and default != []:
                shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
                flat = " ".join(text.split())
                if shown not in flat:
                    missing.append(f"{where}: default {shown!r} not shown")
    assert not missing, "\n".join(missing)


def test_help_imports_no_heavy_module():
    """``londi-jax --help`` and every ``<command> --help`` build the parser and print help without
    importing JAX, Flax, transformers or PyTorch (they took ~5 s before any help appeared)."""
    out = _run(f"""
        import contextlib, io, json, sys, argparse
        sys.argv = ["londi-jax"]
        from londi_jax.cli import build_parser

        def commands(parser, path=()):
            yield path
            for a in parser._actions:
                if isinstance(a, argparse._SubParsersAction):
                    for name, sub in a.choices.items():
                        yield from commands(sub, (*path, name))

        paths = list(commands(build_parser()))
        for path in paths:
            with contextlib.redirect_stdout(io.StringIO()) as buf:
                try:
                    build_parser().parse_args([*path, "--help"])
                except SystemExit as e:
                    assert e.code == 0, (path, e.code)
            assert "usage: londi-jax" in buf.getvalue(), path
        print(json.dumps({{"commands": len(paths),
                          "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
    """)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["commands"] >= 10
    assert r["heavy"] == [], f"--help imported {r['heavy']}"


def test_no_pytorch_advice_on_a_plain_install():
    """transformers prints "PyTorch was not found. Models won't be available ..." when it is first
    imported without torch. The test environment has torch (the parity tests need it), so the
    subprocess hides it: ``sys.modules["torch"] = None`` makes ``import torch`` fail and
    ``importlib.util.find_spec("torch")`` return None, which is how transformers decides that
    torch is missing -- the same state as a plain ``pip install londi_jax``."""
    out = _run("""
        import sys
        sys.modules["torch"] = None  # hide PyTorch (see the docstring)
        from londi_jax.cli import main
        rc = main(["lm", "models", "--json"])
        import transformers  # imported by `lm models` or now: its import-time advice would print here
        assert not transformers.is_torch_available()
        sys.exit(rc)
    """)
    assert out.returncode == 0, out.stderr
    assert "PyTorch was not found" not in out.stderr
    assert "PyTorch was not found" not in out.stdout


def test_other_transformers_warnings_still_show():
    # the filter drops that one advisory message only
    out = _run("""
        import sys
        sys.modules["torch"] = None
        import londi_jax
        from transformers.utils import logging
        logging.get_logger("transformers").warning("PyTorch is not needed, but this message is kept")
    """)
    assert "this message is kept" in out.stderr


@pytest.mark.parametrize("argv", [["--help"], ["toy", "--help"], ["lm", "generate", "--help"]])
def test_console_help_exits_zero(argv, capsys):
    from londi_jax.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0 and "usage: londi-jax" in capsys.readouterr().out
