"""GLAM's BabyAI-Text prompt (``generate_prompt`` in GLAM's ``experiments/agents/base_agent.py``).

Format, reproduced character for character (note the asymmetric spacing around ``\\n``)::

    Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \\n Goal of the agent: {mission} \\n Observation 0: {s1}, {s2}, \\n Action 0: {a0} \\n Observation 1: ...\\n Action 2: 

Every observation sentence is followed by ``", "`` (also the last one); the newest
observation's action slot is empty so the prompt ends with ``"Action {k}: "``. GLAM keeps the
last 3 observations and the last 2 actions and clears both when an episode ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

ACTIONS: tuple[str, ...] = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")
"""The six BabyAI-Text action strings; the index is MiniGrid's ``Actions`` value."""

HISTORY_OBS, HISTORY_ACTIONS = 3, 2  # GLAM's deque lengths


def build_glam_prompt(
    mission: str,
    observations: Sequence[Sequence[str] | str],
    actions: Sequence[str],
    action_space: Sequence[str] = ACTIONS,
) -> str:
    """GLAM's prompt from the mission, the observation history and the action history.

    ``observations``: oldest first, each a list of sentences (``info["descriptions"]``); a plain
    string counts as one sentence, so an env ``observation`` (sentences joined by ``", "``)
    gives the same text. Only the last 3 observations and last 2 actions are used, as GLAM's
    deques do; pass the actions taken *after* each of those observations (one fewer than
    observations), so the newest observation's action slot stays empty.
    """
    obs = list(observations)[-HISTORY_OBS:]
    acts = list(actions)[-HISTORY_ACTIONS:] if HISTORY_ACTIONS else []
    parts = ["Possible action of the agent:", ",".join(f" {a}" for a in action_space)]
    parts.append(f" \n Goal of the agent: {mission}")
    for k, sentences in enumerate(obs):
        if isinstance(sentences, str):
            sentences = (sentences,)
        parts.append(f" \n Observation {k}: ")
        parts.extend(f"{s}, " for s in sentences)
        parts.append(f"\n Action {k}: ")
        if k < len(acts):
            parts.append(acts[k])
    return "".join(parts)


class GlamHistory:
    """GLAM's per-environment observation/action deques, with the prompt built on demand."""

    def __init__(self) -> None:
        self.observations: deque[Sequence[str]] = deque(maxlen=HISTORY_OBS)
        self.actions: deque[str] = deque(maxlen=HISTORY_ACTIONS)

    def reset(self, descriptions: Sequence[str]) -> None:
        """Start a new episode with its first observation."""
        self.observations.clear()
        self.actions.clear()
        self.observations.append(descriptions)

    def push(self, action: str, descriptions: Sequence[str]) -> None:
        """Record the action taken and the observation that followed it."""
        self.actions.append(action)
        self.observations.append(descriptions)

    def prompt(self, mission: str, action_space: Sequence[str] = ACTIONS) -> str:
        return build_glam_prompt(mission, self.observations, self.actions, action_space)
