"""utils.cache: the cache directory and JAX's persistent compilation cache (checked in fresh
interpreters, since JAX reads the setting once, at its first compilation)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A program that takes a measurable time to compile, run once; prints where the cache is.
PROBE = """
import sys
from londi_jax.utils.cache import enable_compilation_cache
where = enable_compilation_cache()
import jax, jax.numpy as jnp
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event)
                                       if event == "/jax/compilation_cache/cache_hits" else None)
f = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: jnp.tanh(y @ y.T) + i, x))
f(jnp.ones((64, 64))).block_until_ready()
print(where, jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
      len(hits))
"""

def _probe(env_extra: dict, import_jax_first: bool = False) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "LONDI_JAX"))}
    env.update(env_extra, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # cache even a fast compile
    code = ("import jax\n" if import_jax_first else "") + PROBE
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def _entries(path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith("-cache")) if path.exists() else []


@pytest.mark.parametrize("import_jax_first", [False, True])
def test_programs_persist_in_the_project_cache(tmp_path, import_jax_first):
    where, jax_dir, min_secs, hits = _probe({"LONDI_JAX_CACHE": str(tmp_path / "c")}, import_jax_first)
    assert where == jax_dir == str(tmp_path / "c" / "xla")
    assert float(min_secs) == 0.0  # the user's JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is kept
    first = _entries(tmp_path / "c" / "xla")
    assert first and hits == "0"  # compiled and written
    *_, hits = _probe({"LONDI_JAX_CACHE": str(tmp_path / "c")}, import_jax_first)
    assert int(hits) >= 1 and _entries(tmp_path / "c" / "xla") == first  # the second process loaded it


def test_off_switch_and_the_users_own_directory(tmp_path):
    where, jax_dir, *_ = _probe({"LONDI_JAX_CACHE": str(tmp_path / "c"), "LONDI_JAX_COMPILATION_CACHE": "0"})
    assert where == jax_dir == "None" and not (tmp_path / "c").exists()
    mine = tmp_path / "mine"
    where, jax_dir, *_ = _probe({"LONDI_JAX_CACHE": str(tmp_path / "c"), "JAX_COMPILATION_CACHE_DIR": str(mine)})
    assert where == jax_dir == str(mine) and _entries(mine) and not (tmp_path / "c").exists()


def test_unusable_cache_directory_leaves_it_off(tmp_path):
    """A file where the directory should be (as root, permissions stop no write): compiled, not cached."""
    (tmp_path / "c").write_text("not a directory")
    where, jax_dir, *_ = _probe({"LONDI_JAX_CACHE": str(tmp_path / "c")})
    assert where == jax_dir == "None"
