"""ScienceWorld episodes as specs for the rollout loop (``agents.rollout.run_episodes``).

A spec names one variation of one task; ``start(env)`` reuses the slot's env (and its JVM) when
it has the same split and simplifications, switching the task in place (milliseconds) instead
of starting a new JVM (seconds) per episode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from londi_jax.envs.base import TextReset
from londi_jax.envs.scienceworld.env import ScienceWorldTextEnv
from londi_jax.envs.scienceworld.tasks import SPLITS, ScienceWorldError, _check_simplifications, resolve_task
from londi_jax.utils.errors import UnknownNameError

__all__ = ["ScienceWorldEpisode", "scienceworld_episodes"]


@dataclasses.dataclass(frozen=True)
class ScienceWorldEpisode:
    """One ScienceWorld episode: task, variation (in ``split``), settings. ``kind`` = the task id."""

    task: str
    variation: int
    split: str = "test"
    simplifications: str = "easy"
    step_limit: int = 100
    with_valid: bool = True
    gold_path: bool = False  # the simulator computes the gold path on reset (the expert, ``expert_action``)

    def __post_init__(self) -> None:
        # checked here, before any JVM starts (a reused env would otherwise skip the env's own checks)
        info = resolve_task(self.task)
        object.__setattr__(self, "task", info.id)
        if self.split not in SPLITS:
            raise UnknownNameError("split", str(self.split), SPLITS)
        _check_simplifications(self.simplifications, info)
        for name in ("variation", "step_limit"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "variation" else 1):
                raise ScienceWorldError(f"{name} must be an int >= {0 if name == 'variation' else 1}, got {v!r}")

    @property
    def seed(self) -> int:
        return self.variation

    @property
    def kind(self) -> str:
        return self.task

    def _fits(self, env: Any) -> bool:
        return (isinstance(env, ScienceWorldTextEnv) and env.split == self.split
                and env.simplifications == self.simplifications and env.jvm_pid is not None)

    def start(self, env: Any | None = None) -> tuple[ScienceWorldTextEnv, TextReset]:
        """Begin this episode in ``env`` if it fits (else a new env; the old one is closed)."""
        if env is not None and not self._fits(env):
            env.close()
            env = None
        if env is None:
            env = ScienceWorldTextEnv(self.task, split=self.split, simplifications=self.simplifications,
                                      step_limit=self.step_limit, with_look_inventory=True)
        else:
            env.set_task(self.task)
            env.step_limit, env.with_look_inventory = self.step_limit, True
        first = env.reset(variation=self.variation, with_valid=self.with_valid, gold_path=self.gold_path)
        first.info["max_steps"] = self.step_limit
        return env, first

    def make(self) -> tuple[ScienceWorldTextEnv, TextReset]:
        return self.start(None)


def scienceworld_episodes(tasks: Sequence[str], split: str = "test", variations: int = 3, **kw: Any
                          ) -> list[ScienceWorldEpisode]:
    """The first ``variations`` variations of ``split`` for each task (one JVM to list them)."""
    tasks = [tasks] if isinstance(tasks, (str, int)) else list(tasks)
    if not tasks or isinstance(variations, bool) or not isinstance(variations, int) or variations < 1:
        raise ScienceWorldError(f"give at least one task and variations >= 1, got tasks={tasks!r}, variations={variations!r}")
    out: list[ScienceWorldEpisode] = []
    with ScienceWorldTextEnv(tasks[0], split=split, simplifications=kw.get("simplifications", "easy")) as env:
        for t in tasks:
            env.set_task(t)
            out += [ScienceWorldEpisode(env.task.id, v, split, **kw) for v in env.variations[:variations]]
    return out
