"""londi_jax.lm: Flax NNX language models (Llama/Mistral/Qwen2, GPT-NeoX) from HF directories or GGUF files.

>>> from londi_jax.lm import load_lm
>>> lm = load_lm("smollm2-135m-instruct")
>>> lm.score(["Action 0: "], [["turn left", "go forward"]]).logprobs
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names -> the submodule defining them. Imported on first use (PEP 562), so importing a
# light submodule (``londi_jax.lm.cli`` for ``londi-jax --help``) does not load JAX, Flax and
# transformers.
_LAZY = {
    "ModelConfig": "config",
    "LanguageModel": "engine",
    "GGUFError": "gguf_loader", "read_gguf": "gguf_loader",
    "save_hf_directory": "hf_writer", "save_language_model": "hf_writer",
    "LM": "interface", "CostReport": "interface", "GenerateResult": "interface", "ScoreResult": "interface",
    **{name: "lora" for name in ("LoRAConfig", "LoRAError", "add_lora", "load_lora", "merge_lora",
                                 "merge_trainable", "save_lora", "split_trainable")},
    **{name: "registry" for name in ("load_gguf", "load_lm", "register_model", "registered_models")},
    "train_word_tokenizer": "tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
