"""Static model configuration shared by every LM family, read from a transformers ``config.json``.

One frozen, hashable dataclass describes both families (``llama`` and ``gpt_neox``); it is part of
the NNX graph definition, so everything in it is static (shapes, counts, flags) and never traced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flax.core import FrozenDict

from londi_jax.utils.errors import LondiError

# model_type in config.json -> modeling family
SUPPORTED_MODEL_TYPES: dict[str, str] = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "gpt_neox": "gpt_neox",
}
SUPPORTED_ACTIVATIONS = ("silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")
SUPPORTED_DTYPES = ("float32", "bfloat16")


class UnsupportedArchitectureError(LondiError):
    """The checkpoint's architecture (or one of its options) is not implemented here."""


class ConfigError(LondiError):
    """A configuration value is missing or inconsistent."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything static about a decoder-only LM (shapes, flags, special token ids).

    ``rope_scaling`` is ``None`` or a mapping with ``rope_type`` ('llama3' or 'linear') and its
    parameters (Llama-3: factor, low_freq_factor, high_freq_factor,
    original_max_position_embeddings). ``rope_freq_factors`` (``rotary_dim // 2`` positive floats or
    None) divide the inverse frequencies one by one after any ``rope_scaling``: llama.cpp's
    ``rope_freqs`` encoding of Llama-3 scaling in GGUF files (config key ``rope_freq_factors``, not a
    transformers key). ``rotary_dim`` is the number of rotated dimensions per head
    (== ``head_dim`` for full rotary, smaller for GPT-NeoX partial rotary). ``qkv_bias`` adds biases
    to the q/k/v projections (Qwen2, GPT-NeoX, Llama ``attention_bias``); ``o_bias`` to the output
    projection. ``qk_norm``: an RMSNorm over ``head_dim`` on every query and key head before RoPE
    (Qwen3, ``self_attn.q_norm`` / ``k_norm``). ``dtype`` is the default parameter/activation dtype ('float32' or 'bfloat16').
    """

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rope_scaling: Mapping[str, Any] | None = None
    rope_freq_factors: tuple[float, ...] | None = None
    rotary_dim: int | None = None
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    parallel_residual: bool = False
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    dtype: str = "float32"
    model_type: str = ""

    def __post_init__(self) -> None:
        if self.family not in ("llama", "gpt_neox"):
            raise UnsupportedArchitectureError(
                f"unknown model family {self.family!r}; supported families: llama, gpt_neox"
            )
        if self.rotary_dim is None:
            object.__setattr__(self, "rotary_dim", self.head_dim)
        if self.rope_scaling is not None:
            object.__setattr__(self, "rope_scaling", FrozenDict(dict(self.rope_scaling)))
        if self.rope_freq_factors is not None:
            object.__setattr__(self, "rope_freq_factors", tuple(float(f) for f in self.rope_freq_factors))
        if isinstance(self.eos_token_id, (list, tuple)):
            object.__setattr__(self, "eos_token_id", tuple(int(i) for i in self.eos_token_id))
        problems = []
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "intermediate_size", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if not (0 < self.rotary_dim <= self.head_dim) or self.rotary_dim % 2:
            problems.append(
                f"rotary_dim ({self.rotary_dim}) must be even and in (0, head_dim={self.head_dim}]"
            )
        if self.rope_freq_factors is not None and (
                len(self.rope_freq_factors) != self.rotary_dim // 2
                or not all(0 < f < float("inf") for f in self.rope_freq_factors)):
            problems.append(f"rope_freq_factors must be rotary_dim/2 = {self.rotary_dim // 2} positive finite "
                            f"numbers, got {len(self.rope_freq_factors)} values")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            problems.append(
                f"hidden_act {self.hidden_act!r} unsupported (supported: {', '.join(SUPPORTED_ACTIVATIONS)})"
            )
        if self.dtype not in SUPPORTED_DTYPES:
            problems.append(f"dtype {self.dtype!r} unsupported (use one of {', '.join(SUPPORTED_DTYPES)})")
        if self.rope_scaling is not None:
            rtype = self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))
            if rtype not in SUPPORTED_ROPE_TYPES:
                raise UnsupportedArchitectureError(
                    f"rope scaling type {rtype!r} is not supported; supported: "
                    f"{', '.join(SUPPORTED_ROPE_TYPES)}"
                )
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    # ------------------------------------------------------------------ derived values
    @property
    def context_window(self) -> int:
        """Longest sequence this implementation computes exactly (sliding window not implemented,
        so a Mistral-style window caps the usable context)."""
        if self.sliding_window:
            return min(self.max_position_embeddings, int(self.sliding_window))
        return self.max_position_embeddings

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """EOS ids as a tuple (Llama-3 style configs list several)."""
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, tuple):
            return self.eos_token_id
        return (int(self.eos_token_id),)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (e.g. ``dtype``)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ transformers config.json
    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], dtype: str = "float32") -> ModelConfig:
        """Read a transformers ``config.json`` dict (model_type llama, mistral, qwen2, qwen3, gpt_neox).

        Accepts both the transformers v4 keys (``rope_theta``, ``rope_scaling``, ``rotary_pct``) and
        the v5 ``rope_parameters`` dict.
        """
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            archs = d.get("architectures") or []
            raise UnsupportedArchitectureError(
                f"unsupported architecture: model_type={model_type!r}"
                + (f" (architectures {archs})" if archs else "")
                + f"; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        family = SUPPORTED_MODEL_TYPES[model_type]

        def need(key: str) -> Any:
            if d.get(key) is None:
                raise ConfigError(f"config.json (model_type {model_type}) lacks required key {key!r}")
            return d[key]

        hidden = int(need("hidden_size"))
        heads = int(need("num_attention_heads"))
        head_dim = int(d.get("head_dim") or hidden // heads)

        rope_params = dict(d.get("rope_parameters") or {})
        legacy_scaling = d.get("rope_scaling")
        if legacy_scaling and not rope_params:
            rope_params = dict(legacy_scaling)
        rope_theta = float(
            rope_params.get("rope_theta", d.get("rope_theta", d.get("rotary_emb_base", 10000.0)))
        )
        rope_type = rope_params.get("rope_type", rope_params.get("type", "default"))
        rope_scaling = None
        if rope_type not in (None, "default"):
            rope_scaling = {k: v for k, v in rope_params.items() if k not in ("rope_theta", "partial_rotary_factor")}
            rope_scaling["rope_type"] = rope_type
            rope_scaling.pop("type", None)
        partial = rope_params.get("partial_rotary_factor", d.get("partial_rotary_factor", d.get("rotary_pct", 1.0)))
        rotary_dim = int(head_dim * float(partial))

        sliding = None
        if model_type == "mistral" or (model_type in ("qwen2", "qwen3") and d.get("use_sliding_window")):
            sliding = d.get("sliding_window")

        common = dict(
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            num_layers=int(need("num_hidden_layers")),
            num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            intermediate_size=int(need("intermediate_size")),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            rope_freq_factors=d.get("rope_freq_factors") or None,
            rotary_dim=rotary_dim,
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            hidden_act=str(d.get("hidden_act", "silu")),
            max_position_embeddings=int(d.get("max_position_embeddings") or 2048),
            sliding_window=int(sliding) if sliding else None,
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
            dtype=dtype,
            model_type=model_type,
        )
        if family == "gpt_neox":
            if heads * head_dim != hidden:
                raise ConfigError("gpt_neox needs hidden_size == num_attention_heads * head_dim")
            return cls(
                family=family,
                norm_eps=float(d.get("layer_norm_eps", 1e-5)),
                qkv_bias=bool(d.get("attention_bias", True)),
                o_bias=bool(d.get("attention_bias", True)),
                mlp_bias=True,
                parallel_residual=bool(d.get("use_parallel_residual", True)),
                **common,
            )
        attention_bias = bool(d.get("attention_bias", False))
        return cls(
            family=family,
            norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            qkv_bias=attention_bias or model_type == "qwen2",
            o_bias=attention_bias,
            mlp_bias=bool(d.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            **common,
        )
