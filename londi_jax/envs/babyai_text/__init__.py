"""BabyAI-Text (GLAM's text BabyAI) on Farama minigrid 3.2.0.

Public API: ``make_babyai_text(level, seed=None, **kw)`` -> ``BabyAITextEnv`` (a ``TextEnv``),
``BabyAITextWrapper`` (Gymnasium wrapper adding ``info["descriptions"]``), ``describe(image)``
(the sentences), ``build_glam_prompt(mission, observations, actions)``, ``ACTIONS``,
``known_levels()``, and expert demos in ``demos``.
"""

from londi_jax.envs.babyai_text.env import (
    ACTION_INDEX,
    BabyAITextEnv,
    BabyAITextWrapper,
    InvalidActionError,
    make_babyai_text,
    task_kind,
)
from londi_jax.envs.babyai_text.levels import (
    GLAM_LEVELS,
    LOCAL_LEVELS,
    MIXED_KINDS,
    known_levels,
    register_gym_levels,
    resolve_level,
)
from londi_jax.envs.babyai_text.prompt import ACTIONS, GlamHistory, build_glam_prompt
from londi_jax.envs.babyai_text.text import all_sentences, describe

register_gym_levels()

__all__ = [
    "ACTIONS",
    "ACTION_INDEX",
    "BabyAITextEnv",
    "BabyAITextWrapper",
    "GLAM_LEVELS",
    "GlamHistory",
    "InvalidActionError",
    "LOCAL_LEVELS",
    "MIXED_KINDS",
    "all_sentences",
    "build_glam_prompt",
    "describe",
    "known_levels",
    "make_babyai_text",
    "register_gym_levels",
    "resolve_level",
    "task_kind",
]
