"""BabyAI-Text in JAX: minigrid's BabyAI dynamics, GLAM's levels and text, inside ``jit``.

Pure functions over pytrees, in the gymnax style (``env``): ``reset(key, params)``,
``step(key, state, action, params)`` with auto-reset, ``vmap``-able; static shapes in
``StaticConfig``, level settings (room size, distractors, task-kind weights, phrase filter, step
limit) traced in ``EnvParams``. Observations carry the BabyAI-Text sentences as piece ids
(``phrases``); ``prompt_ids`` turns GLAM's prompt into token ids of a given tokenizer in ``jit``.
``convert.from_minigrid`` converts a running minigrid env, the reference the tests check against.
"""

from londi_jax.envs.babyai_jax.core import EnvState, Obs, StaticConfig, mission_text, observe, step_world
from londi_jax.envs.babyai_jax.levels import KINDS, EnvParams, generate, make_params

__all__ = ["KINDS", "EnvParams", "EnvState", "Obs", "StaticConfig", "generate", "make_params", "mission_text",
           "observe", "step_world"]
