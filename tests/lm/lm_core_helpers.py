"""Tiny random Hugging Face models + an offline tokenizer for the LM-core tests (no network)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

CORPUS = [
    "go forward", "turn left", "turn right", "pick up the key", "open the door", "toggle the ball",
    "you see a red ball and a green key", "the goal is to open the blue door", "a wall is two steps forward",
    "drop the box", "go to the purple box", "put the key next to the ball",
] * 4
SPECIALS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2 -> pad, bos, eos in every tiny config
VOCAB = 320  # model vocabulary (>= tokenizer size, like real padded vocabularies)


@functools.lru_cache(maxsize=None)
def tokenizer_files(tmp_root: str) -> str:
    """Train a small byte-level BPE once and save it as a transformers tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    out = Path(tmp_root) / "tokenizer"
    fast.save_pretrained(out)
    return str(out)


def make_tokenizer(tmp_root: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_files(tmp_root))


LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.1,
              max_position_embeddings=128)
KINDS = ("llama", "llama3_tied", "qwen2", "qwen3", "mistral", "mistral_window", "gemma3", "neox_parallel",
         "neox_sequential")
WINDOW = 4  # sliding window of the windowed kinds: the test rows (up to 13 tokens) reach past it


def hf_config(kind: str):
    """A tiny transformers config of the given kind (see KINDS)."""
    import transformers as T

    if kind == "llama":
        return T.LlamaConfig(num_key_value_heads=2, rope_theta=500.0, **COMMON)
    if kind == "llama3_tied":
        return T.LlamaConfig(num_key_value_heads=1, tie_word_embeddings=True, rope_scaling=dict(LLAMA3_SCALING),
                             **COMMON)
    if kind == "qwen2":
        return T.Qwen2Config(num_key_value_heads=2, **COMMON)
    if kind == "qwen3":  # heads wider than hidden / heads, as in the real Qwen3 models
        return T.Qwen3Config(num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, **COMMON)
    if kind == "mistral":
        return T.MistralConfig(num_key_value_heads=2, sliding_window=None, **COMMON)
    if kind == "mistral_window":
        return T.MistralConfig(num_key_value_heads=2, sliding_window=WINDOW, **COMMON)
    if kind == "gemma3":  # one sliding layer then one global, wide heads, its own logit scale
        return T.Gemma3TextConfig(num_key_value_heads=2, head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=24,
                                  layer_types=["sliding_attention", "full_attention"],
                                  rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                                                   "full_attention": {"rope_type": "default", "rope_theta": 1e4}},
                                  **COMMON)
    if kind.startswith("neox"):
        return T.GPTNeoXConfig(rotary_pct=0.5, use_parallel_residual=kind == "neox_parallel", **COMMON)
    raise KeyError(kind)


def save_tiny(root: Path, kind: str, seed: int = 0, max_shard_size: str | None = None):
    """Save a random tiny model + the tokenizer into ``root/kind``; return (dir, torch model)."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(hf_config(kind)).eval()
    if kind == "gemma3":  # Gemma's norms start at w = 0 (a scale of 1 + w): make the + 1 matter
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.normal_(0.0, 0.2)
    out = root / kind
    kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kw)
    make_tokenizer(str(root)).save_pretrained(out)
    return out, model


def save_tiny_without_torch(root: Path, kind: str, seed: int = 0) -> Path:
    """``save_tiny``'s config and tokenizer, random weights from our own initialiser written by our
    own HF writer: for tests that run where PyTorch is not installed (the current-JAX smoke step)."""
    from londi_jax.lm.config import ModelConfig
    from londi_jax.lm.hf_loader import init_model
    from londi_jax.lm.hf_writer import save_hf_directory

    config = ModelConfig.from_hf_dict(hf_config(kind).to_dict())
    return save_hf_directory(init_model(config, seed), root / kind, make_tokenizer(str(root)))


def torch_logits(model, rows: list[list[int]]) -> list[np.ndarray]:
    """Reference logits from the PyTorch model on a LEFT-padded batch (mask + position ids)."""
    import torch

    T_ = max(map(len, rows))
    ids = torch.zeros((len(rows), T_), dtype=torch.long)
    mask = torch.zeros((len(rows), T_), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T_ - len(r):] = torch.tensor(r)
        mask[i, T_ - len(r):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float().numpy()
    return [out[i, T_ - len(r):] for i, r in enumerate(rows)]


_LOADED: dict = {}


def load_tiny(kind: str, seed: int = 0):
    """(LanguageModel, torch model) for a tiny model of ``kind``, built once per process and shared by
    the test modules (so compiled programs are reused too)."""
    import tempfile

    from londi_jax.lm.hf_loader import load_hf_directory

    if (kind, seed) not in _LOADED:
        root = Path(tempfile.mkdtemp(prefix="londi_lm_core_"))
        path, ref = save_tiny(root, kind, seed=seed)
        _LOADED[(kind, seed)] = (load_hf_directory(path, progress=False), ref)
    return _LOADED[(kind, seed)]


def torch_greedy(model, rows: list[list[int]], max_new_tokens: int, eos: int = 2) -> list[list[int]]:
    """transformers' own greedy ``generate`` on a left-padded batch; each row cut after its EOS."""
    import torch

    T_ = max(map(len, rows))
    ids = torch.zeros((len(rows), T_), dtype=torch.long)
    mask = torch.zeros((len(rows), T_), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T_ - len(r):] = torch.tensor(r)
        mask[i, T_ - len(r):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos, pad_token_id=0, min_new_tokens=0)
    res = []
    for row in out[:, T_:].tolist():
        res.append(row[: row.index(eos) + 1] if eos in row else row)
    return res
