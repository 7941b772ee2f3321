"""One finished ``tiny`` pipeline run per test session, shared by every pipeline test.

The run is made once through ``londi-jax demo --preset tiny`` with progress on (its stage lines
and bars are kept for the progress tests) under umask 022 (for the permission test). Under
pytest-xdist the workers share it through a file lock in the session's common temp directory,
so the suite pays for one tiny run, not one per worker. Tests must not change it: the ones that
resume, force or damage a run work on a copy (``run_copy``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TinyRun:
    path: Path
    stderr: str  # what the run printed: stage lines and progress bars
    stdout: str
    seconds: float


def _make_run(out: Path) -> TinyRun:
    from londi_jax.cli import main

    err, std = io.StringIO(), io.StringIO()
    old_mask = os.umask(0o022)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            code = main(["demo", "--preset", "tiny", "--out", str(out)])
    finally:
        os.umask(old_mask)
    assert code == 0, err.getvalue()[-3000:]
    return TinyRun(out, err.getvalue(), std.getvalue(), time.perf_counter() - t0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """A finished tiny run (read it, do not change it)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    try:
        from filelock import FileLock  # a dependency of huggingface_hub (transformers)
    except ImportError:  # no sharing between workers then
        worker = None
    if worker is None:
        return _make_run(tmp_path_factory.mktemp("tiny_run") / "run")
    root = tmp_path_factory.getbasetemp().parent  # common to all workers of this session
    out, info = root / "tiny_run" / "run", root / "tiny_run" / "made.json"
    with FileLock(str(root / "tiny_run.lock")):
        if not info.exists():
            out.parent.mkdir(exist_ok=True)
            run = _make_run(out)
            info.write_text(json.dumps({"stderr": run.stderr, "stdout": run.stdout, "seconds": run.seconds}))
            return run
    made = json.loads(info.read_text())
    return TinyRun(out, made["stderr"], made["stdout"], made["seconds"])


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny run, to resume, force or damage."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run.path, dst)
    return dst
