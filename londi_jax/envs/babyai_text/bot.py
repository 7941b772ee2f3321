"""Expert BabyAI-Text trajectories from minigrid's BabyAI bot, with the bot's subgoal as text.

The bot (``minigrid.utils.baby_ai_bot.BabyAIBot``) plans with a stack of subgoals; after each
``replan`` the top of the stack is the subgoal that produced the suggested action. It is
rendered as a short instruction (``subgoal_text``): ``go next to the red ball``, ``pick up``,
``drop``, ``open the door``, ``close the door``, ``explore``, ``go to an empty cell``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from minigrid.core.world_object import WorldObj
from minigrid.envs.babyai.core.verifier import ObjDesc
from minigrid.utils import baby_ai_bot as bb

from londi_jax.envs.babyai_text.env import BabyAITextEnv, make_babyai_text
from londi_jax.envs.babyai_text.prompt import ACTIONS, GlamHistory


def _obj_phrase(type_: str | None, color: str | None) -> str:
    return "the " + " ".join(x for x in (color, type_ or "object") if x)


def subgoal_text(subgoal: bb.Subgoal | None, env: Any) -> str:
    """Short English text for one bot subgoal (no side effects on the mission's objects)."""
    if subgoal is None:
        return "done"
    if isinstance(subgoal, bb.GoNextToSubgoal):
        datum = subgoal.datum
        if isinstance(datum, ObjDesc):  # rendered by hand: ObjDesc.surface() resets obj_set
            return f"go next to {_obj_phrase(datum.type, datum.color)}"
        if isinstance(datum, WorldObj):
            return f"go next to {_obj_phrase(datum.type, datum.color)}"
        if subgoal.reason == "Explore":
            return "explore"
        cell = env.unwrapped.grid.get(*(int(v) for v in np.asarray(datum)))
        if cell is not None and cell.type != "wall":
            return f"go next to {_obj_phrase(cell.type, cell.color)}"
        return "go to an empty cell"
    if isinstance(subgoal, bb.OpenSubgoal):
        return "open the door"
    if isinstance(subgoal, bb.CloseSubgoal):
        return "close the door"
    if isinstance(subgoal, bb.PickupSubgoal):
        return "pick up"
    if isinstance(subgoal, bb.DropSubgoal):
        return "drop"
    if isinstance(subgoal, bb.ExploreSubgoal):
        return "explore"
    return type(subgoal).__name__.removesuffix("Subgoal").lower()


class BotAdvisor:
    """The BabyAI bot in advising mode: the expert's action from whatever state the agent reached.

    minigrid's bot plans with a subgoal stack and, told the action the agent actually took
    (``replan(action_taken)``), undoes or replans around it (``Subgoal.replan_after_action``), so
    it advises an agent that does not follow it. ``action(step, last_action)`` must be called
    once per env step, from the episode's first step on (the bot only sees the actions it is
    told of). A bot that raises in a corner case gives ``None`` (no advice) for the rest of the
    episode, as does its "done" when the mission is not yet achieved. Following the advice at
    every step reproduces ``run_bot_episode``'s actions.
    """

    def __init__(self, env: BabyAITextEnv):
        self.bot = bb.BabyAIBot(env.unwrapped)
        self.error: str | None = None
        self._step, self._action = -1, None

    def action(self, step: int, last_action: str | None) -> str | None:
        """The bot's action at ``step`` (the env's step count), ``last_action`` being the action
        the agent took to get there (None at the first step). Repeated calls at one step give the
        same answer without replanning again."""
        if step == self._step:
            return self._action
        action = None
        if self._step < 0:  # the bot's first plan: it has no previous state to judge an action by
            last_action = None
        if self.error is None:
            try:
                idx = int(self.bot.replan(None if last_action is None else ACTIONS.index(last_action)))
                action = ACTIONS[idx] if idx < len(ACTIONS) else None  # "done": no valid action to advise
            except Exception as exc:  # noqa: BLE001 - the bot's rare unsolvable corner cases
                self.error = f"{type(exc).__name__}: {exc}"
        self._step, self._action = step, action
        return action


@dataclasses.dataclass
class ExpertStep:
    """One expert step: what the agent saw and what the bot did (and why)."""

    prompt: str
    observation: str
    descriptions: list[str]
    action: str
    subgoal: str
    reward: float


@dataclasses.dataclass
class ExpertEpisode:
    """A full bot episode; ``success`` = terminated with positive reward."""

    level: str
    seed: int
    mission: str
    task_kind: str
    max_steps: int
    steps: list[ExpertStep]
    reward: float
    success: bool
    terminated: bool
    truncated: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["length"] = len(self.steps)
        return d


def run_bot_episode(env: BabyAITextEnv, seed: int | None = None) -> ExpertEpisode:
    """Reset ``env`` (with ``seed``) and let the BabyAI bot play one episode to its end."""
    first = env.reset(seed=seed)
    bot = bb.BabyAIBot(env.unwrapped)
    history = GlamHistory()  # the demos record the GLAM prompt the expert's step answers
    history.reset(first.info["descriptions"])
    prompt, observation, descriptions = history.prompt(first.mission), first.observation, first.info["descriptions"]
    steps: list[ExpertStep] = []
    reward, terminated, truncated, error = 0.0, False, False, None
    while True:
        try:
            action_idx = int(bot.replan())
        except Exception as exc:  # the bot has rare unsolvable corner cases; record, don't crash
            error = f"{type(exc).__name__}: {exc}"
            break
        if action_idx >= len(ACTIONS):  # "done": the bot thinks it finished but the env disagrees
            error = "bot returned 'done' before the mission succeeded"
            break
        subgoal = subgoal_text(bot.stack[-1] if bot.stack else None, env)
        action = ACTIONS[action_idx]
        out = env.step(action)
        steps.append(ExpertStep(prompt, observation, descriptions, action, subgoal, out.reward))
        reward, terminated, truncated = out.reward, out.terminated, out.truncated
        if out.done:
            break
        history.push(action, out.info["descriptions"])
        prompt, observation, descriptions = history.prompt(first.mission), out.observation, out.info["descriptions"]
    return ExpertEpisode(
        level=env.level,
        seed=-1 if seed is None else int(seed),
        mission=first.mission,
        task_kind=first.info["task_kind"],
        max_steps=int(first.info["max_steps"]),
        steps=steps,
        reward=float(reward),
        success=bool(terminated and reward > 0),
        terminated=bool(terminated),
        truncated=bool(truncated),
        error=error,
    )


def expert_episode(level: str, seed: int, **level_kwargs: Any) -> ExpertEpisode:
    """One bot episode on a fresh env built with ``seed`` (so a Mixed level's kind also
    follows the seed) and reset with ``seed``: reproducible from ``(level, seed)`` alone."""
    env = make_babyai_text(level, seed=seed, **level_kwargs)
    try:
        return run_bot_episode(env, seed=seed)
    finally:
        env.close()
