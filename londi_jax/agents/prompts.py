"""Prompts built by the policy from structured episode states, one format per environment family.

The rollout loop keeps each episode's history as data (:class:`EpisodeState`: mission, every
observation with its env extras, the actions taken, rewards); a :class:`PromptFormat` renders
what a model sees from it and names the candidate actions it scores. Nothing is parsed back out
of a prompt: switch encoders read the same structured state.

* :class:`GlamFormat`: GLAM's BabyAI-Text prompt (``envs.babyai_text.prompt.build_glam_prompt``),
  last 3 observations and 2 actions, the six actions as candidates.
* :class:`SwiftSageFormat`: SwiftSage's Swift input for ScienceWorld (Lin et al. 2023, the
  ``fast_agent`` data utilities): task; ``Time: t; Score: s``; the last 10 (action, reward,
  observation) triples; the current look; the inventory; the visited rooms; the question. Sections
  are joined by ``sep`` (``" </s> "`` as in the original); newlines and tabs become ``" | "``; the
  phrases "(that is open)" and "(containing nothing)" are dropped. Candidates: the valid actions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from londi_jax.envs.babyai_text.prompt import ACTIONS, HISTORY_ACTIONS, HISTORY_OBS, build_glam_prompt
from londi_jax.utils.errors import LondiError, UnknownNameError

__all__ = ["Observation", "EpisodeState", "PromptFormat", "GlamFormat", "SwiftSageFormat", "FORMATS",
           "get_format"]


@dataclasses.dataclass(frozen=True)
class Observation:
    """One observation of an episode: its text, the env's extras (BabyAI ``descriptions``;
    ScienceWorld ``look``, ``inventory``, ``score``) and the reward that came with it."""

    text: str
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    reward: float = 0.0


@dataclasses.dataclass(frozen=True)
class EpisodeState:
    """Everything a policy may read at one step of one episode (immutable; ``then`` extends it).

    ``observations[k]`` was seen before ``actions[k]`` was taken; the newest observation has no
    action yet (``len(actions) == len(observations) - 1``). ``valid_actions``: the env's valid
    actions now (empty where the env was not asked). ``max_steps``: the episode's step limit.
    """

    mission: str
    observations: tuple[Observation, ...]
    actions: tuple[str, ...] = ()
    valid_actions: tuple[str, ...] = ()
    max_steps: int = 0
    task_kind: str = ""

    def __post_init__(self) -> None:
        if len(self.actions) != len(self.observations) - 1:
            raise LondiError(f"an episode state needs one action fewer than observations, got "
                             f"{len(self.observations)} observations and {len(self.actions)} actions")

    @property
    def step(self) -> int:
        """Steps taken so far in the episode."""
        return len(self.actions)

    @property
    def current(self) -> Observation:
        return self.observations[-1]

    def then(self, action: str, observation: Observation, valid_actions: Sequence[str] = ()) -> EpisodeState:
        """The state after taking ``action`` and seeing ``observation``."""
        return dataclasses.replace(self, observations=(*self.observations, observation),
                                   actions=(*self.actions, action), valid_actions=tuple(valid_actions))


@runtime_checkable
class PromptFormat(Protocol):
    """How an environment family's states become model input."""

    name: str

    def prompt(self, state: EpisodeState) -> str:
        """The text a model reads at ``state``."""
        ...

    def candidates(self, state: EpisodeState) -> Sequence[str]:
        """The actions a model scores at ``state`` (non-empty)."""
        ...


def _sentences(obs: Observation) -> Sequence[str] | str:
    return obs.info.get("descriptions", obs.text)


@dataclasses.dataclass(frozen=True)
class GlamFormat:
    """GLAM's BabyAI-Text prompt over the last 3 observations and 2 actions (see the module doc)."""

    name: str = "glam"
    action_space: tuple[str, ...] = ACTIONS

    def prompt(self, state: EpisodeState) -> str:
        obs = state.observations[-HISTORY_OBS:]
        # the actions taken after the kept observations, except the newest (its slot stays empty)
        acts = state.actions[len(state.observations) - len(obs):][-HISTORY_ACTIONS:]
        return build_glam_prompt(state.mission, [_sentences(o) for o in obs], acts, self.action_space)

    def candidates(self, state: EpisodeState) -> Sequence[str]:
        return self.action_space


_DROP = re.compile(r" ?\((that is open|containing nothing)\)")
_ROOM = re.compile(r"This room is called the ([^.]+)\.")


def _clean(text: str) -> str:
    return _DROP.sub("", text.replace("\r", "").replace("\n", " | ").replace("\t", " | ")).strip()


@dataclasses.dataclass(frozen=True)
class SwiftSageFormat:
    """SwiftSage's Swift input for ScienceWorld (see the module doc).

    ``history``: triples kept (10 in SwiftSage). ``sep``: section separator. ``t5_sentinels``:
    introduce the triples with T5 sentinel tokens counting down from ``<extra_id_{history}>``
    as the original does (only meaningful for T5 tokenizers); otherwise ``"Action k:"``.
    """

    name: str = "swiftsage"
    history: int = 10
    sep: str = " </s> "
    t5_sentinels: bool = False

    def prompt(self, state: EpisodeState) -> str:
        cur = state.current
        score = cur.info.get("score", 0)
        parts = [_clean(state.mission), f"Time: {state.step}; Score: {score};"]
        k0 = max(len(state.actions) - self.history, 0)
        triples = []
        for j, k in enumerate(range(k0, len(state.actions))):
            head = f"<extra_id_{self.history - j}>" if self.t5_sentinels else f"Action {k}:"
            nxt = state.observations[k + 1]
            triples.append(f"{head} {state.actions[k]} (+{nxt.reward:g}) --> {_clean(nxt.text)}")
        parts.append("Action history: " + (" ".join(triples) if triples else "none"))
        parts.append("Current environment: " + _clean(str(cur.info.get("look", cur.text))))
        parts.append("Current inventory: " + _clean(str(cur.info.get("inventory", ""))))
        rooms = list(dict.fromkeys(m for o in state.observations for m in _ROOM.findall(str(o.info.get("look", o.text)))))
        parts.append("Visited rooms: " + (", ".join(rooms) if rooms else "none"))
        parts.append("What action should you do next?")
        return self.sep.join(parts)

    def candidates(self, state: EpisodeState) -> Sequence[str]:
        if not state.valid_actions:
            raise LondiError("the SwiftSage format scores the valid actions, but this state has none: "
                             "step the env with with_valid=True")
        return state.valid_actions


FORMATS: dict[str, type] = {"glam": GlamFormat, "swiftsage": SwiftSageFormat}


def get_format(name: str) -> PromptFormat:
    """A prompt format by name (``FORMATS``)."""
    if name not in FORMATS:
        raise UnknownNameError("prompt format", name, tuple(FORMATS))
    return FORMATS[name]()
