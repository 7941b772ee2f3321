"""londi_jax.lm: Flax NNX language models (Llama/Mistral/Qwen2, GPT-NeoX) from HF directories or GGUF files.

>>> from londi_jax.lm import load_lm
>>> lm = load_lm("smollm2-135m-instruct")
>>> lm.score(["Action 0: "], [["turn left", "go forward"]]).logprobs
"""

from londi_jax.lm.config import ModelConfig
from londi_jax.lm.engine import LanguageModel
from londi_jax.lm.gguf_loader import GGUFError, read_gguf
from londi_jax.lm.hf_writer import save_hf_directory, save_language_model
from londi_jax.lm.interface import LM, CostReport, GenerateResult, ScoreResult
from londi_jax.lm.lora import (
    LoRAConfig,
    LoRAError,
    add_lora,
    load_lora,
    merge_lora,
    merge_trainable,
    save_lora,
    split_trainable,
)
from londi_jax.lm.registry import load_gguf, load_lm, register_model, registered_models
from londi_jax.lm.tokenizer import train_word_tokenizer

__all__ = [
    "LM",
    "CostReport",
    "GGUFError",
    "GenerateResult",
    "LanguageModel",
    "LoRAConfig",
    "LoRAError",
    "ModelConfig",
    "ScoreResult",
    "add_lora",
    "load_gguf",
    "load_lm",
    "load_lora",
    "merge_lora",
    "merge_trainable",
    "read_gguf",
    "register_model",
    "registered_models",
    "save_hf_directory",
    "save_language_model",
    "save_lora",
    "split_trainable",
    "train_word_tokenizer",
]
