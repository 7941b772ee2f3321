"""The one interface every text environment implements (BabyAI-Text, ScienceWorld)."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable


@dataclasses.dataclass
class TextReset:
    """What ``reset`` returns.

    observation: the observation text the agent sees now.
    mission: the task / mission text for the episode.
    valid_actions: action strings that are valid now (BabyAI-Text: always the six).
    info: environment-specific extras (e.g. BabyAI ``descriptions`` sentences).
    """

    observation: str
    mission: str
    valid_actions: list[str]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TextStep:
    """What ``step`` returns (Gymnasium semantics: terminated = task ended, truncated = step limit)."""

    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@runtime_checkable
class TextEnv(Protocol):
    """A text environment driven by action strings.

    ``info`` from ``step`` always carries ``success`` (bool); ``valid_actions`` is included
    only when the env was asked for it (it may be expensive, e.g. in ScienceWorld).

    Optional: ``expert_action() -> str | None``, the expert's action in the current state, or
    None where no expert applies (BabyAI-Text: the BabyAI bot advising from whatever state the
    agent reached; ScienceWorld: the gold path while the episode follows it). The oracle switch
    (``agents.routers.OracleRouter``) reads it through the rollout loop.
    """

    def reset(self, seed: int | None = None) -> TextReset: ...

    def step(self, action: str) -> TextStep: ...

    def valid_actions(self) -> list[str]: ...

    def close(self) -> None: ...
