"""Static model configuration shared by every LM family, read from a transformers ``config.json``.

One frozen, hashable dataclass describes every family (``llama``, ``gpt_neox``, ``gemma3``); it is part of
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
    "gemma3_text": "gemma3",
    "gpt_neox": "gpt_neox",
}
FAMILIES = ("llama", "gpt_neox", "gemma3")
LAYER_TYPES = ("full_attention", "sliding_attention")
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
    (Qwen3, Gemma 3, ``self_attn.q_norm`` / ``k_norm``).

    Sliding-window attention: ``layer_types[i]`` is ``"sliding_attention"`` (query at position p
    attends keys at positions ``p - sliding_window < q <= p``, transformers' rule) or
    ``"full_attention"``; None = every layer full. Gemma 3 interleaves them (5 sliding, 1 global)
    with their own RoPE bases: ``rope_local_theta`` for sliding layers, ``rope_theta`` (and
    ``rope_scaling``) for global ones. ``query_pre_attn_scalar``: attention logits scale by its
    ``-1/2`` power instead of ``head_dim``'s. ``embed_scale``: token embeddings times
    ``sqrt(hidden_size)`` (Gemma; the tied LM head reads them unscaled). ``post_norms``: RMSNorms
    on the attention and MLP outputs before the residual adds (Gemma 2/3's "sandwich"). ``dtype`` is the default parameter/activation dtype ('float32' or 'bfloat16').
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
    layer_types: tuple[str, ...] | None = None
    rope_local_theta: float | None = None
    query_pre_attn_scalar: float | None = None
    embed_scale: bool = False
    post_norms: bool = False
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
        if self.family not in FAMILIES:
            raise UnsupportedArchitectureError(
                f"unknown model family {self.family!r}; supported families: {', '.join(FAMILIES)}"
            )
        if self.layer_types is not None:
            object.__setattr__(self, "layer_types", tuple(str(t) for t in self.layer_types))
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
        if self.query_pre_attn_scalar is not None and not self.query_pre_attn_scalar > 0:
            problems.append(f"query_pre_attn_scalar must be positive, got {self.query_pre_attn_scalar}")
        if self.layer_types is not None:
            bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
            if len(self.layer_types) != self.num_layers or bad:
                problems.append(f"layer_types must give one of {', '.join(LAYER_TYPES)} for each of the "
                                f"{self.num_layers} layers, got {len(self.layer_types)} entries"
                                + (f" with unknown types {bad}" if bad else ""))
            elif "sliding_attention" in self.layer_types and not (self.sliding_window or 0) > 0:
                problems.append("sliding_attention layers need a positive sliding_window")
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
        """Longest sequence the model was built for (sliding-window layers are exact at any length)."""
        return self.max_position_embeddings

    def is_sliding(self, layer: int) -> bool:
        """Whether layer ``layer`` attends through the sliding window."""
        return self.layer_types is not None and self.layer_types[layer] == "sliding_attention"

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
        """Read a transformers ``config.json`` dict (model_type llama, mistral, qwen2, qwen3, gemma3_text,
        gpt_neox).

        Accepts both the transformers v4 keys (``rope_theta``, ``rope_scaling``, ``rotary_pct``) and
        the v5 ``rope_parameters`` dict. Raises ``ConfigError`` for missing or mistyped values.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"config.json must hold a JSON object, got {type(d).__name__}")
        try:
            return cls._from_hf_dict(d, dtype)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config.json (model_type {d.get('model_type')!r}) has a value of the wrong type: "
                              f"{err}") from err

    @classmethod
    def _from_hf_dict(cls, d: Mapping[str, Any], dtype: str) -> ModelConfig:
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
        local_params: dict[str, Any] = {}
        if "full_attention" in rope_params or "sliding_attention" in rope_params:  # v5: one set per layer type
            local_params = dict(rope_params.get("sliding_attention") or {})
            rope_params = dict(rope_params.get("full_attention") or {})
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

        n_layers = int(need("num_hidden_layers"))
        sliding, layer_types = None, None
        if model_type in ("mistral", "gemma3_text") or (model_type in ("qwen2", "qwen3") and d.get("use_sliding_window")):
            sliding = d.get("sliding_window")
        if not sliding and "sliding_attention" in (d.get("layer_types") or ()):
            raise ConfigError(f"config.json lists sliding_attention layers but sliding_window is {sliding!r}; "
                              "give the window's size (a positive int)")
        if sliding:  # which layers slide: the config's list, else transformers' rule for the model type
            if d.get("layer_types"):
                layer_types = tuple(d["layer_types"])
            elif model_type == "gemma3_text":  # every `pattern`-th layer global
                pattern = int(d.get("sliding_window_pattern") or d.get("_sliding_window_pattern") or 6)
                layer_types = tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                                    for i in range(n_layers))
            elif model_type == "mistral":
                layer_types = ("sliding_attention",) * n_layers
            else:  # Qwen: layers from max_window_layers on
                first = int(d.get("max_window_layers") or 0)
                layer_types = tuple("sliding_attention" if i >= first else "full_attention" for i in range(n_layers))
            if "sliding_attention" not in layer_types:
                sliding, layer_types = None, None

        common = dict(
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            num_layers=n_layers,
            num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            intermediate_size=int(need("intermediate_size")),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            rope_freq_factors=d.get("rope_freq_factors") or None,
            rotary_dim=rotary_dim,
            tie_embeddings=bool(d.get("tie_word_embeddings", False)),
            hidden_act=str(d.get("hidden_act") or d.get("hidden_activation") or "silu"),
            max_position_embeddings=int(d.get("max_position_embeddings") or 2048),
            sliding_window=int(sliding) if sliding else None,
            layer_types=layer_types,
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
        if family == "gemma3":
            for key in ("final_logit_softcapping", "attn_logit_softcapping"):
                if d.get(key) is not None:
                    raise UnsupportedArchitectureError(f"{key}={d[key]} (Gemma 2) is not implemented; Gemma 3 has none")
            if d.get("use_bidirectional_attention"):
                raise UnsupportedArchitectureError("use_bidirectional_attention=True (EmbeddingGemma, an encoder) is not "
                                                   "a causal LM; only causal Gemma 3 models are supported")
            local = float(local_params.get("rope_theta", d.get("rope_local_base_freq", 10000.0)))
            return cls(
                family=family,
                norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                qkv_bias=attention_bias,
                o_bias=attention_bias,
                qk_norm=True,
                rope_local_theta=local,
                query_pre_attn_scalar=float(head_dim if d.get("query_pre_attn_scalar") is None
                                            else d["query_pre_attn_scalar"]),
                embed_scale=True,
                post_norms=True,
                **common,
            )
        return cls(
            family=family,
            norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            qkv_bias=attention_bias or model_type == "qwen2",
            o_bias=attention_bias,
            mlp_bias=bool(d.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            **common,
        )
