"""The project's cache directory and JAX's persistent compilation cache inside it.

``cache_dir()``: ``$LONDI_JAX_CACHE``, else ``$XDG_CACHE_HOME/londi_jax`` (an absolute
``XDG_CACHE_HOME`` only, per the XDG base-directory spec), else ``~/.cache/londi_jax``. Installed
models live in ``models/`` (``londi_jax.lm.fetch``), compiled XLA programs in ``xla/``.

Why a compilation cache: a pipeline compiles a few dozen programs (one per shape bucket of each
model, the BC step, the switch learners), and compiling is most of a short run's time on a CPU
(about 70% of the ``tiny`` preset). JAX's persistent cache keys each program by its HLO, the JAX /
XLA versions and the backend, so a rerun, a resumed or forked stage, or a second run with the same
shapes loads its programs instead of compiling them (``tiny`` preset: 121 s cold, 38 s warm on the
2-core CPU). The cache holds the compiled executables, so results do not change.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_ENV = "LONDI_JAX_CACHE"
# Set to 0 / off / false to leave JAX's compilation cache as JAX configures it (off by default).
COMPILATION_CACHE_ENV = "LONDI_JAX_COMPILATION_CACHE"
# Programs that compile faster than this are not worth a file (JAX's default is 1 s; ours are often 0.2-1 s).
MIN_COMPILE_SECONDS = 0.2
# Oldest entries are evicted past this size; eviction also makes JAX lock the cache across processes.
MAX_BYTES = 4 << 30


def cache_dir() -> Path:
    """``$LONDI_JAX_CACHE``, else ``$XDG_CACHE_HOME/londi_jax``, else ``~/.cache/londi_jax``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: relative paths are invalid
    return base / "londi_jax"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` (default ``cache_dir() / "xla"``).

    Returns the directory in use, or None when the cache stays off: ``$LONDI_JAX_COMPILATION_CACHE``
    is 0/off/false, or the directory cannot be created or written (a read-only home: nothing
    fails, programs are just compiled each time). A directory the user already chose through JAX
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept. Call it before the first compile:
    JAX reads the setting once, at its first compilation. Before JAX is imported it only sets the
    environment variables JAX reads at import, so the command line's start-up stays light.
    """
    if os.environ.get(COMPILATION_CACHE_ENV, "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    jax = sys.modules.get("jax")
    chosen = os.environ.get("JAX_COMPILATION_CACHE_DIR") or (jax.config.jax_compilation_cache_dir if jax else None)
    if chosen:
        return Path(chosen)
    path = Path(directory) if directory is not None else cache_dir() / "xla"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    settings = {"JAX_COMPILATION_CACHE_DIR": str(path),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": MIN_COMPILE_SECONDS,
                "JAX_COMPILATION_CACHE_MAX_SIZE": MAX_BYTES}
    for env, value in settings.items():
        if env != "JAX_COMPILATION_CACHE_DIR" and env in os.environ:
            continue  # the user's own setting wins
        if jax is None:
            os.environ[env] = str(value)  # JAX reads these when it is imported
        else:
            jax.config.update(env.lower(), value)
    return path
