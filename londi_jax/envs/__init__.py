"""londi_jax.envs: text environments (BabyAI-Text, ScienceWorld) behind one interface (``base``).

Submodules are imported lazily so that importing one environment does not pull in the others'
heavy dependencies (minigrid, Java-backed ScienceWorld).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "make_babyai_text": "londi_jax.envs.babyai_text",
    "BabyAITextEnv": "londi_jax.envs.babyai_text",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'londi_jax.envs' has no attribute {name!r}")
