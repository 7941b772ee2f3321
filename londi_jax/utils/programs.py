"""The one cache of jitted programs built per static configuration.

A builder ``f(config) -> jitted function`` decorated with :func:`program_cache` returns the same
jitted object for equal (hashable) configs, so every router, calibration or host loop built on
one config shares its compiled executables instead of tracing again. ``clear_program_caches()``
drops them all (e.g. to free device memory between experiments in one process).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_CACHES: list[Any] = []


def program_cache(maxsize: int = 32) -> Callable[[F], F]:
    """Memoise a program builder on its (hashable) arguments, keeping the ``maxsize`` newest."""

    def deco(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        _CACHES.append(cached)
        return cached  # type: ignore[return-value]

    return deco


def clear_program_caches() -> None:
    """Forget every cached program (they are rebuilt, and retraced, on next use)."""
    for cached in _CACHES:
        cached.cache_clear()


def program_cache_info() -> dict[str, Any]:
    """Hits, misses and sizes per cached builder (``module.name`` -> ``functools`` CacheInfo)."""
    return {f"{c.__wrapped__.__module__}.{c.__wrapped__.__qualname__}": c.cache_info() for c in _CACHES}
