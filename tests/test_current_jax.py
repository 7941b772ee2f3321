"""Checks that hold on every JAX londi_jax supports. ``make test`` runs them twice: in the main
suite (Python 3.11, the pinned JAX) and in its current-JAX step (``make test-current-jax``: Python
3.12 with the newest jax / flax the index serves, no PyTorch) together with the tiny pipeline and
the two-process sweep and sharded-LM tests (the Makefile's ``CURRENT_JAX_TESTS``: import, toy
sweep, LM tier on SmolLM2, a tiny pipeline, and the sharding APIs that change between JAX versions).

SmolLM2's expected outputs are transformers' PyTorch model's, stored in
``tests/data/smollm2_reference.json``; ``tests/lm/test_real_smollm2.py`` recomputes them with
PyTorch in the main suite, so the file cannot drift from the reference.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REFERENCE = Path(__file__).parent / "data" / "smollm2_reference.json"

IMPORT_ALL = """
import importlib, pkgutil, warnings
import jax, flax
# our own use of an API the installed jax / flax deprecates fails here (the warning is attributed
# to the londi_jax line that calls it)
warnings.filterwarnings("error", category=DeprecationWarning, module=r"londi_jax")
warnings.filterwarnings("error", category=FutureWarning, module=r"londi_jax")
import londi_jax
names = [m.name for m in pkgutil.walk_packages(londi_jax.__path__, "londi_jax.")]
for name in names:
    importlib.import_module(name)
print(jax.__version__, flax.__version__, len(names))
"""


def test_every_module_imports_without_deprecated_apis():
    r = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    jax_version, flax_version, count = r.stdout.split()
    assert int(count) > 50
    print(f"jax {jax_version}, flax {flax_version}, Python {sys.version.split()[0]}: {count} modules")


@pytest.mark.slow
def test_smollm2_matches_the_pytorch_reference(smollm2_lm):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("with PyTorch installed (the main suite), tests/lm/test_real_smollm2.py compares with "
                    "PyTorch itself and the stored reference with both")
    from londi_jax.lm.demo import BABYAI_ACTIONS, GLAM_PROMPT

    sys.path.insert(0, str(Path(__file__).parent / "lm"))
    from test_real_smollm2 import PROMPTS

    ref = json.loads(REFERENCE.read_text())
    got = smollm2_lm.generate(PROMPTS, ref["max_new_tokens"]).token_ids
    assert got == ref["greedy_token_ids"]
    lps = smollm2_lm.score([GLAM_PROMPT], [list(BABYAI_ACTIONS)]).logprobs[0]
    assert list(lps) == pytest.approx(ref["glam_action_logprobs"], abs=2e-3)
