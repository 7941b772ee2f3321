"""Shared by the ScienceWorld test modules: tag their JVMs and check that none is left behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from londi_jax.envs import scienceworld as sw


def wait_no_jvms(tag: str, timeout: float = 15.0) -> list[int]:
    """PIDs of JVMs carrying ``tag`` still alive after waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (pids := sw.live_jvm_pids(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return pids


@contextlib.contextmanager
def tagged_jvms(tag: str, what: str) -> Iterator[str]:
    """Tag every JVM started inside (workers inherit the variable); afterwards none may be left."""
    old = os.environ.get(sw.JVM_TAG_ENV)
    os.environ[sw.JVM_TAG_ENV] = tag
    try:
        yield tag
    finally:
        if old is None:
            os.environ.pop(sw.JVM_TAG_ENV, None)
        else:
            os.environ[sw.JVM_TAG_ENV] = old
    assert wait_no_jvms(tag) == [], f"java processes left behind by {what}"
