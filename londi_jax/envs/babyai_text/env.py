"""BabyAI-Text environments on Farama minigrid 3.2.0.

Two faces of the same thing:

* ``BabyAITextWrapper``: a ``gymnasium.Wrapper`` around a BabyAI level that adds the fork's
  ``info["descriptions"]`` on reset and step (Gymnasium 5-tuple API, integer actions).
* ``BabyAITextEnv``: the project's ``TextEnv`` (``londi_jax.envs.base``): string actions,
  ``TextReset`` / ``TextStep`` with the sentences in ``info["descriptions"]``. Prompts are the
  policy's business (``agents.prompts.GlamFormat`` renders GLAM's from the episode history).

Rewards and step limits are minigrid's BabyAI ones, which match the original: reward
``1 - 0.9 * step_count / max_steps`` on success (episode terminates), 0 otherwise; on reaching
``max_steps`` (64 for goto/pickup, 128 for putnext, sequences and open) the episode is
truncated with reward 0.

Seeding follows Gymnasium: ``reset(seed=s)`` reseeds, ``reset()`` continues the stream. The
``seed`` given to ``make_babyai_text`` is used by the first ``reset()`` that gets no seed, and
also draws the task kind of a Mixed level (see ``levels``). A Mixed level made with neither
``seed`` nor ``kind`` is built on its first ``reset(seed=s)`` and draws its kind from ``s``
(with no seed at all the kind is random, as in the original).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import gymnasium as gym
import numpy as np

from londi_jax.envs.base import TextReset, TextStep
from londi_jax.envs.babyai_text.levels import MIXED_LEVELS, LevelParamError, instr_kind, make_level, resolve_level
from londi_jax.envs.babyai_text.prompt import ACTIONS
from londi_jax.envs.babyai_text.text import describe
from londi_jax.utils.errors import LondiError

ACTION_INDEX: dict[str, int] = {a: i for i, a in enumerate(ACTIONS)}


class InvalidActionError(LondiError, ValueError):
    """An action string that is not one of the six BabyAI-Text actions."""

    def __init__(self, action: object):
        super().__init__(
            f"invalid BabyAI-Text action {action!r}; valid actions: {', '.join(ACTIONS)}"
        )


@contextlib.contextmanager
def _quiet():
    """Swallow minigrid's "Sampling rejected: ..." prints during level generation."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def task_kind(env: Any) -> str:
    """The task kind of the env's current mission (GLAM levels carry their own)."""
    base = env.unwrapped
    return getattr(base, "kind", None) or instr_kind(base.instrs)


class BabyAITextWrapper(gym.Wrapper):
    """Adds ``descriptions`` (the text observation), ``mission`` and ``task_kind`` to ``info``.

    The observation is minigrid's unchanged (``image``, ``direction``, ``mission``); the
    ``success`` flag (terminated with a positive reward) is added on step.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._kind: str | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        with _quiet():
            obs, info = self.env.reset(seed=seed, options=options)
        self._kind = task_kind(self.env)  # fixed for the episode: computed once
        info = dict(info)
        info.update(descriptions=describe(obs["image"]), mission=obs["mission"], task_kind=self._kind)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info.update(
            descriptions=describe(obs["image"]),
            mission=obs["mission"],
            task_kind=self._kind,
            success=bool(terminated and reward > 0),
        )
        return obs, reward, terminated, truncated, info


def _check_seed(seed: Any) -> None:
    """Gymnasium and numpy seeds are ints >= 0; say so instead of failing deep inside them."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise LevelParamError(f"a BabyAI-Text seed must be an int >= 0 (or None), got {seed!r}")


def _join(descriptions: list[str]) -> str:
    return ", ".join(descriptions)


class BabyAITextEnv:
    """BabyAI-Text as a ``TextEnv``: six action strings, observations as sentences.

    ``observation`` is the sentences joined by ``", "``; ``info`` carries ``descriptions``
    (the sentence list), ``mission``, ``success``, ``task_kind``, ``step_count``, ``max_steps``
    and ``level``.
    """

    actions: tuple[str, ...] = ACTIONS

    def __init__(self, level: str, seed: int | None = None, **level_kwargs: Any):
        _check_seed(seed)
        self.level = resolve_level(level)
        self._pending_seed = seed
        self._level_kwargs = level_kwargs
        self.gym_env: BabyAITextWrapper | None = None
        # A Mixed level with neither ``seed`` nor ``kind`` draws its kind from the seed of its
        # first reset (so batched runners that only seed resets stay reproducible).
        if not (self.level in MIXED_LEVELS and seed is None and "kind" not in level_kwargs):
            self._build(seed)
        self._mission = ""
        self._done = True
        self._advisor: Any = None  # the bot advising this episode (built on the first expert_action)
        self._last_action: str | None = None

    def _build(self, seed: int | None) -> None:
        self.gym_env = BabyAITextWrapper(make_level(self.level, seed=seed, **self._level_kwargs))

    # minigrid's env (for the bot, rendering and inspection)
    @property
    def unwrapped(self):
        if self.gym_env is None:
            raise LondiError(f"{self.level}: the level is built on the first reset(); call reset() first")
        return self.gym_env.unwrapped

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        base = self.unwrapped
        info["step_count"] = base.step_count
        info["max_steps"] = base.max_steps
        info["level"] = self.level
        return info

    def reset(self, seed: int | None = None) -> TextReset:
        """Start an episode; ``seed`` reseeds (else the constructor's seed once, then the stream).
        A seed must be None or an int >= 0 (``LevelParamError``)."""
        _check_seed(seed)
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        if self.gym_env is None:
            self._build(seed)
        obs, info = self.gym_env.reset(seed=seed)
        self._mission = obs["mission"]
        self._done = False
        self._advisor, self._last_action = None, None
        info["success"] = False
        return TextReset(
            observation=_join(info["descriptions"]),
            mission=self._mission,
            valid_actions=list(ACTIONS),
            info=self._info(info),
        )

    def step(self, action: str) -> TextStep:
        """Apply one of the six action strings."""
        idx = ACTION_INDEX.get(action) if isinstance(action, str) else None
        if idx is None:
            raise InvalidActionError(action)
        if self._done:
            raise LondiError("BabyAI-Text episode is over (or never started): call reset() before step()")
        obs, reward, terminated, truncated, info = self.gym_env.step(idx)
        self._done = terminated or truncated
        self._last_action = action
        return TextStep(
            observation=_join(info["descriptions"]),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
            info=self._info(info),
        )

    def valid_actions(self) -> list[str]:
        return list(ACTIONS)

    def expert_action(self) -> str | None:
        """The BabyAI bot's action in the current state (``bot.BotAdvisor``: the bot told of
        every action this episode took, so it advises from off its own path too), or None where
        it has no advice (its rare failures, or "done" before the mission is achieved). Call it at
        every step of an episode from the first: the bot follows the episode through these calls.
        Raises ``LondiError`` outside an episode."""
        if self._done or self.gym_env is None:
            raise LondiError("expert_action() needs an episode in progress: call reset() first")
        if self._advisor is None:
            from londi_jax.envs.babyai_text.bot import BotAdvisor  # bot.py builds on this module

            self._advisor = BotAdvisor(self)
        return self._advisor.action(int(self.unwrapped.step_count), self._last_action)

    def close(self) -> None:
        if self.gym_env is not None:
            self.gym_env.close()


def make_babyai_text(level: str = "BabyAI-MixedTrainLocal-v0", seed: int | None = None, **kwargs: Any) -> BabyAITextEnv:
    """A BabyAI-Text ``TextEnv`` for ``level`` (see ``known_levels()``; short names like
    ``GoToLocal`` work). Extra keyword arguments go to the level (e.g. ``kind="open"`` for
    the Mixed levels, ``max_steps=``). Unknown levels raise ``UnknownNameError``."""
    return BabyAITextEnv(level, seed=seed, **kwargs)
