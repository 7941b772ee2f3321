"""Save an NNX causal LM as a Hugging Face model directory (config.json + model.safetensors + tokenizer).

The tensor names and layouts are the exact inverse of ``hf_loader``'s weight table (kernels
transposed back to PyTorch ``(out, in)``, GPT-NeoX q/k/v fused into ``query_key_value`` interleaved
per head, the head omitted when embeddings are tied); every tensor is checked by running the
loader's own transform on it and comparing with the model's array. The written ``config.json`` is
checked the same way: ``ModelConfig.from_hf_dict`` must read back the model's config. The result
loads with ``load_hf_directory`` and with transformers' ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx, traverse_util

from londi_jax.lm.config import ModelConfig, UnsupportedArchitectureError
from londi_jax.lm.hf_loader import WEIGHT_RULES, _identity, _path, _transpose
from londi_jax.lm.layers import CausalLM
from londi_jax.utils.errors import LondiError

WRITE_DTYPES = ("float32", "bfloat16", "float16")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM", "gemma3_text": "Gemma3ForCausalLM", "gpt_neox": "GPTNeoXForCausalLM"}


class HFWriteError(LondiError):
    """A model cannot be written as a Hugging Face directory (or the target directory is unusable)."""


# ------------------------------------------------------------------------------ atomic directories
@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike, marker: str) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``directory`` in one rename.

    An existing ``directory`` is replaced only if it is empty or holds ``marker`` (i.e. an earlier
    save of the same kind), so unrelated files are never deleted. On error nothing changes.
    """
    target = Path(directory)
    if target.exists():
        if not target.is_dir():
            raise HFWriteError(f"{target} exists and is not a directory; choose a directory path")
        contents = sorted(p.name for p in target.iterdir())
        if contents and marker not in contents:
            raise HFWriteError(f"refusing to replace {target}: it holds other files ({', '.join(contents[:5])}"
                               f"{', ...' if len(contents) > 5 else ''}) and no {marker}; choose a new or empty "
                               f"directory")
    from londi_jax.utils.io import apply_default_permissions, make_temp_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, prefix=f".{target.name}.tmp-")
    try:
        yield tmp
        apply_default_permissions(tmp)  # mkdtemp-style 0700 dirs / 0600 files would become the output's
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------ config.json
def _llama_model_type(c: ModelConfig) -> str:
    """The transformers model_type that expresses ``c``'s biases / sliding window (prefers c.model_type)."""

    def fits(mt: str) -> bool:
        if c.qk_norm != (mt == "qwen3"):  # only Qwen3 normalises q and k per head
            return False
        if mt == "qwen3":
            return not (c.qkv_bias or c.o_bias or c.mlp_bias)
        if mt == "llama":
            return c.qkv_bias == c.o_bias and c.layer_types is None
        if mt == "qwen2":
            return c.qkv_bias and not c.o_bias and not c.mlp_bias
        if mt == "mistral":
            return not (c.qkv_bias or c.o_bias or c.mlp_bias)
        return False

    for mt in (c.model_type, "llama", "qwen2", "mistral", "qwen3"):
        if fits(mt):
            return mt
    raise UnsupportedArchitectureError(
        f"no transformers Llama-family config expresses qkv_bias={c.qkv_bias}, o_bias={c.o_bias}, "
        f"mlp_bias={c.mlp_bias}, qk_norm={c.qk_norm}, sliding_window={c.sliding_window}; such a model cannot be saved as a "
        f"Hugging Face directory")


def _int_if_whole(x: float | None) -> float | int | None:
    """transformers' strict configs type some scalars as int (Gemma 3's query_pre_attn_scalar)."""
    return int(x) if x is not None and float(x).is_integer() else x


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
    """A transformers ``config.json`` dict that ``ModelConfig.from_hf_dict`` reads back as ``config``."""
    c = config
    rope: dict[str, Any] = {"rope_theta": float(c.rope_theta), "rope_type": "default"}
    if c.rope_scaling is not None:
        rope.update({k: v for k, v in dict(c.rope_scaling).items() if k != "type"})
        rope["rope_type"] = c.rope_scaling.get("rope_type", c.rope_scaling.get("type"))
    d: dict[str, Any] = dict(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, intermediate_size=c.intermediate_size, hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings, tie_word_embeddings=c.tie_embeddings,
        bos_token_id=c.bos_token_id, pad_token_id=c.pad_token_id,
        eos_token_id=list(c.eos_token_id) if isinstance(c.eos_token_id, tuple) else c.eos_token_id,
        dtype="float32", use_cache=True,
    )
    if c.family == "gemma3":
        if c.qkv_bias != c.o_bias or c.mlp_bias:
            raise UnsupportedArchitectureError(f"transformers' Gemma 3 has equal q/k/v/o biases and none in the MLP; "
                                               f"this model has qkv_bias={c.qkv_bias}, o_bias={c.o_bias}, "
                                               f"mlp_bias={c.mlp_bias}")
        d.update(model_type="gemma3_text", head_dim=c.head_dim, num_key_value_heads=c.num_kv_heads,
                 rms_norm_eps=c.norm_eps, hidden_activation=c.hidden_act, attention_bias=c.qkv_bias,
                 query_pre_attn_scalar=_int_if_whole(c.query_pre_attn_scalar), sliding_window=c.sliding_window or 4096,
                 layer_types=list(c.layer_types or ("full_attention",) * c.num_layers),
                 final_logit_softcapping=None, attn_logit_softcapping=None, use_bidirectional_attention=False,
                 rope_parameters={"full_attention": rope,
                                  "sliding_attention": {"rope_type": "default", "rope_theta": c.rope_local_theta}})
    elif c.family == "gpt_neox":
        if c.qkv_bias != c.o_bias or not c.mlp_bias or c.num_kv_heads != c.num_heads:
            raise UnsupportedArchitectureError(
                f"transformers' GPT-NeoX needs equal q/k/v and output biases, MLP biases and no GQA; this "
                f"model has qkv_bias={c.qkv_bias}, o_bias={c.o_bias}, mlp_bias={c.mlp_bias}, "
                f"num_kv_heads={c.num_kv_heads} (num_heads={c.num_heads})")
        if c.head_dim * c.num_heads != c.hidden_size:
            raise UnsupportedArchitectureError("transformers' GPT-NeoX needs hidden_size == num_heads * head_dim")
        rope["partial_rotary_factor"] = c.rotary_dim / c.head_dim
        d.update(model_type="gpt_neox", layer_norm_eps=c.norm_eps, attention_bias=c.qkv_bias,
                 use_parallel_residual=c.parallel_residual, rope_parameters=rope)
    else:
        if c.rotary_dim != c.head_dim:
            raise UnsupportedArchitectureError(
                f"the Llama family rotates the whole head; rotary_dim={c.rotary_dim} != head_dim={c.head_dim}")
        mt = _llama_model_type(c)
        d.update(model_type=mt, head_dim=c.head_dim, num_key_value_heads=c.num_kv_heads, rms_norm_eps=c.norm_eps,
                 rope_parameters=rope)
        if c.layer_types is not None:  # which layers slide (read back before any model-type default)
            d["layer_types"] = list(c.layer_types)
        if mt == "llama":
            d.update(attention_bias=c.qkv_bias, mlp_bias=c.mlp_bias)
        elif mt == "mistral":
            d["sliding_window"] = c.sliding_window
        else:  # qwen2 / qwen3: q/k/v biases (qwen2) or q/k norms (qwen3) are implied by the model type
            if mt == "qwen3":
                d["attention_bias"] = False
            d.update(use_sliding_window=c.sliding_window is not None, sliding_window=c.sliding_window,
                     max_window_layers=0)
    d["architectures"] = [ARCHITECTURES[d["model_type"]]]
    # guarantee the round trip through our own reader
    back = ModelConfig.from_hf_dict(d, dtype=c.dtype)
    diff = [f"{f.name}: {getattr(back, f.name)!r} != {getattr(c, f.name)!r}" for f in dataclasses.fields(c)
            if f.name not in ("model_type",) and getattr(back, f.name) != getattr(c, f.name)]
    if diff:
        raise HFWriteError(f"cannot express this model config in config.json ({'; '.join(diff)})")
    return dict(sorted(d.items()))


# ------------------------------------------------------------------------------ tensors
def _neox_fuse(parts: list[np.ndarray], cfg: ModelConfig) -> np.ndarray:
    """Inverse of the loader's split: NNX q/k/v kernels (in, h*d) or biases (h*d,) -> fused rows
    interleaved per head ``[h0: q k v | h1: q k v | ...]`` in PyTorch layout."""
    h, d = cfg.num_heads, cfg.head_dim
    if parts[0].ndim == 1:
        return np.stack([p.reshape(h, d) for p in parts], axis=1).reshape(3 * h * d)
    rows = [p.T.reshape(h, d, p.shape[0]) for p in parts]  # each (h, d, in)
    return np.stack(rows, axis=1).reshape(3 * h * d, parts[0].shape[0])


def hf_tensors(model: CausalLM) -> dict[str, np.ndarray]:
    """The model's weights under Hugging Face names, PyTorch layout, in the model's dtype."""
    cfg: ModelConfig = model.config
    values = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    rules, _ = WEIGHT_RULES[cfg.family]
    out: dict[str, np.ndarray] = {}
    used: set[tuple] = set()
    for rule in rules:
        if not rule.when(cfg):
            continue
        layers = range(cfg.num_layers) if "(?P<i>" in rule.pattern else [None]
        for i in layers:
            layer = None if i is None else str(i)
            name = rule.pattern.replace(r"(?P<i>\d+)", layer or "").replace("\\.", ".")
            paths = [_path(t, layer) for t, _ in rule.targets]
            arrays = [np.asarray(values[p]) for p in paths]
            if len(rule.targets) == 3:  # GPT-NeoX fused query_key_value (the only multi-target rule)
                hf = _neox_fuse(arrays, cfg)
            elif rule.targets[0][1] is _transpose:
                hf = arrays[0].T
            elif rule.targets[0][1] is _identity:
                hf = arrays[0]
            else:  # a new transform in hf_loader needs its inverse here
                raise HFWriteError(f"no inverse known for the loader transform of {name}")
            hf = np.ascontiguousarray(hf)
            for (_, transform), p, a in zip(rule.targets, paths, arrays):
                if not np.array_equal(transform(hf, cfg), a):  # exact inverse of the loader, checked
                    raise HFWriteError(f"internal error: {name} does not load back into {'.'.join(map(str, p))}")
            out[name] = hf
            used.update(paths)
    left = sorted(".".join(map(str, p)) for p in set(values) - used)
    if left:
        raise HFWriteError(f"parameters with no Hugging Face name: {left}")
    return out


def save_hf_directory(model: CausalLM, directory: str | os.PathLike, tokenizer: Any = None, *,
                      dtype: str = "float32", eog_token_ids: Sequence[int] = ()) -> Path:
    """Write ``model`` (and ``tokenizer`` via ``save_pretrained``) as a Hugging Face directory.

    ``dtype`` is the stored tensor dtype ('float32', 'bfloat16' or 'float16'). LoRA adapters are
    folded in first (``lora.merge_lora``). ``eog_token_ids`` (ids that end generation, e.g. a GGUF's
    ``<|eot_id|>`` beside its EOS) go to generation_config.json's ``eos_token_id`` list, where
    transformers' ``generate()`` and our loader read them, so a saved model stops where its source
    did. The directory is built in a temporary sibling and renamed into place; an existing
    directory is replaced only if it is empty or holds a config.json.
    """
    import ml_dtypes
    from safetensors.numpy import save_file

    if not isinstance(model, CausalLM):
        raise HFWriteError(f"save_hf_directory needs a londi_jax CausalLM (e.g. LanguageModel.model), "
                           f"got {type(model).__name__}")
    if dtype not in WRITE_DTYPES:
        raise HFWriteError(f"dtype {dtype!r} unsupported for saving; use one of {', '.join(WRITE_DTYPES)}")
    from londi_jax.lm.lora import has_lora, merge_lora  # lora imports this module

    if has_lora(model):
        model = merge_lora(model)
    config_dict = hf_config_dict(model.config)
    config_dict["dtype"] = dtype
    np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[dtype]
    tensors = {k: v.astype(np_dtype) for k, v in hf_tensors(model).items()}
    with atomic_directory(directory, marker="config.json") as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if eog_token_ids:
            gen = {"eos_token_id": sorted({int(i) for i in eog_token_ids})}
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    return Path(directory)


def save_language_model(lm: Any, directory: str | os.PathLike, *, dtype: str = "float32") -> Path:
    """``save_hf_directory`` for a ``LanguageModel`` (its current weights, tokenizer and
    end-of-generation ids)."""
    return save_hf_directory(lm.model, directory, lm.tokenizer, dtype=dtype, eog_token_ids=lm.eog_token_ids)
