"""londi_jax.lm: Flax NNX language models (Llama/Mistral/Qwen2, GPT-NeoX) from HF directories or GGUF files.

>>> from londi_jax.lm import load_lm
>>> lm = load_lm("smollm2-135m-instruct")
>>> lm.score(["Action 0: "], [["turn left", "go forward"]]).logprobs
"""

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.gguf_loader import GGUFError, read_gguf
from londi_jax.lm.interface import LM, CostReport, GenerateResult, ScoreResult
from londi_jax.lm.registry import load_gguf, load_lm, register_model, registered_models

__all__ = [
    "LM",
    "CostReport",
    "GGUFError",
    "GenerateResult",
    "LanguageModel",
    "ModelConfig",
    "ScoreResult",
    "load_gguf",
    "load_lm",
    "read_gguf",
    "register_model",
    "registered_models",
]
