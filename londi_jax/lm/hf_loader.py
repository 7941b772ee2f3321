"""Load Hugging Face checkpoints (config.json + safetensors + tokenizer) into the NNX models.

``build_model(config, tensors)`` takes Hugging Face tensor names in PyTorch layout (any mapping,
lazy ones welcome: the GGUF loader reuses it) and returns the NNX module. The abstract model comes
from ``nnx.eval_shape`` (no random init); each tensor name goes through a table of regexes to its
NNX path(s) plus a transform; every shape is checked against the config first and ALL problems are
reported together in one ``CheckpointError``. Tensors are converted one at a time, so peak memory
stays about one copy of the weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util
from jax.sharding import Mesh, NamedSharding
from tqdm.auto import tqdm

from londi_jax.lm.config import SUPPORTED_DTYPES, ConfigError, ModelConfig
from londi_jax.lm.gemma3 import Gemma3ForCausalLM
from londi_jax.lm.gpt_neox import GPTNeoXForCausalLM
from londi_jax.lm.layers import CausalLM, jnp_dtype
from londi_jax.lm.llama import LlamaForCausalLM
from londi_jax.lm.sharding import partition_spec
from londi_jax.lm.t5 import T5ForConditionalGeneration
from londi_jax.utils.errors import LondiError


class CheckpointError(LondiError):
    """A checkpoint is missing, corrupt, or does not match its config."""


MODEL_CLASSES: dict[str, type[CausalLM]] = {"llama": LlamaForCausalLM, "gpt_neox": GPTNeoXForCausalLM,
                                             "gemma3": Gemma3ForCausalLM, "t5": T5ForConditionalGeneration}


def model_class(config: Any) -> type[CausalLM]:
    """The NNX class implementing ``config.family``."""
    return MODEL_CLASSES[config.family]


def init_model(config: ModelConfig, seed: int = 0) -> CausalLM:
    """A randomly initialised model (tests, benchmarks)."""
    return model_class(config)(config, nnx.Rngs(seed))


# ------------------------------------------------------------------------------ weight-name table
Dim = tuple[int, str]  # (expected size, the config expression responsible)


def _dims(cfg: ModelConfig, *names: str) -> tuple[Dim, ...]:
    env = dataclasses.asdict(cfg)
    env["q_out"] = cfg.num_heads * cfg.head_dim
    env["kv_out"] = getattr(cfg, "num_kv_heads", cfg.num_heads) * cfg.head_dim
    env["qkv_out"] = 3 * cfg.num_heads * cfg.head_dim
    # labels use the config.json (transformers) key names the user can check
    labels = {"q_out": "num_attention_heads*head_dim", "kv_out": "num_key_value_heads*head_dim",
              "qkv_out": "3*num_attention_heads*head_dim"}
    return tuple((int(env[n]), labels.get(n, n)) for n in names)


def _transpose(a: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return a.T


def _identity(a: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    return a


def _neox_split(j: int) -> Callable[[np.ndarray, ModelConfig], np.ndarray]:
    """GPT-NeoX fused query_key_value rows are interleaved per head: [h0: q k v | h1: q k v | ...]."""

    def f(a: np.ndarray, cfg: ModelConfig) -> np.ndarray:
        h, d = cfg.num_heads, cfg.head_dim
        if a.ndim == 1:
            return a.reshape(h, 3, d)[:, j].reshape(h * d)
        return a.reshape(h, 3, d, a.shape[-1])[:, j].reshape(h * d, a.shape[-1]).T

    return f


@dataclasses.dataclass(frozen=True)
class _Rule:
    pattern: str  # regex over the HF name; group "i" is the layer index
    targets: tuple[tuple[str, Callable[[np.ndarray, ModelConfig], np.ndarray]], ...]  # NNX path template
    shape: Callable[[ModelConfig], tuple[Dim, ...]]  # expected HF (PyTorch-layout) shape
    when: Callable[[ModelConfig], bool] = lambda cfg: True  # rule applies only if this holds


def _lin(pattern: str, target: str, out: str, inp: str, when=lambda c: True, bias_when=None) -> list[_Rule]:
    rules = [_Rule(pattern + r"\.weight", ((target + ".kernel", _transpose),), lambda c: _dims(c, out, inp), when)]
    if bias_when is not None:
        rules.append(_Rule(pattern + r"\.bias", ((target + ".bias", _identity),), lambda c: _dims(c, out), bias_when))
    return rules


def _norm(pattern: str, target: str, with_bias: bool, size: str = "hidden_size", when=lambda c: True) -> list[_Rule]:
    rules = [_Rule(pattern + r"\.weight", ((target + ".scale", _identity),), lambda c: _dims(c, size), when)]
    if with_bias:
        rules.append(_Rule(pattern + r"\.bias", ((target + ".bias", _identity),), lambda c: _dims(c, "hidden_size")))
    return rules


L = r"(?P<i>\d+)"
_G = rf"model\.layers\.{L}"
# what every decoder-only family stored under transformers' Llama names shares: embeddings, head,
# final norm, attention projections (+ per-head q/k norms), gated MLP; the families differ in the
# block's norms
_DECODER_RULES: list[_Rule] = [
    _Rule(r"model\.embed_tokens\.weight", (("embed.embedding", _identity),),
          lambda c: _dims(c, "vocab_size", "hidden_size")),
    *_lin(r"lm_head", "lm_head", "vocab_size", "hidden_size", when=lambda c: not c.tie_embeddings),
    *_norm(r"model\.norm", "final_norm", False),
    *_lin(rf"{_G}\.self_attn\.q_proj", "layers.{i}.attn.q_proj", "q_out", "hidden_size", bias_when=lambda c: c.qkv_bias),
    *_lin(rf"{_G}\.self_attn\.k_proj", "layers.{i}.attn.k_proj", "kv_out", "hidden_size", bias_when=lambda c: c.qkv_bias),
    *_lin(rf"{_G}\.self_attn\.v_proj", "layers.{i}.attn.v_proj", "kv_out", "hidden_size", bias_when=lambda c: c.qkv_bias),
    *_lin(rf"{_G}\.self_attn\.o_proj", "layers.{i}.attn.o_proj", "hidden_size", "q_out", bias_when=lambda c: c.o_bias),
    *_norm(rf"{_G}\.self_attn\.q_norm", "layers.{i}.attn.q_norm", False, "head_dim", when=lambda c: c.qk_norm),
    *_norm(rf"{_G}\.self_attn\.k_norm", "layers.{i}.attn.k_norm", False, "head_dim", when=lambda c: c.qk_norm),
    *_lin(rf"{_G}\.mlp\.gate_proj", "layers.{i}.mlp.gate_proj", "intermediate_size", "hidden_size",
          bias_when=lambda c: c.mlp_bias),
    *_lin(rf"{_G}\.mlp\.up_proj", "layers.{i}.mlp.up_proj", "intermediate_size", "hidden_size",
          bias_when=lambda c: c.mlp_bias),
    *_lin(rf"{_G}\.mlp\.down_proj", "layers.{i}.mlp.down_proj", "hidden_size", "intermediate_size",
          bias_when=lambda c: c.mlp_bias),
]
LLAMA_RULES: tuple[_Rule, ...] = tuple(
    _DECODER_RULES + [
        *_norm(rf"{_G}\.input_layernorm", "layers.{i}.attn_norm", False),
        *_norm(rf"{_G}\.post_attention_layernorm", "layers.{i}.mlp_norm", False),
    ]
)
GEMMA3_RULES: tuple[_Rule, ...] = tuple(
    _DECODER_RULES + [  # four norms per block: before and after attention and the MLP
        *_norm(rf"{_G}\.input_layernorm", "layers.{i}.attn_norm", False),
        *_norm(rf"{_G}\.post_attention_layernorm", "layers.{i}.post_attn_norm", False),
        *_norm(rf"{_G}\.pre_feedforward_layernorm", "layers.{i}.mlp_norm", False),
        *_norm(rf"{_G}\.post_feedforward_layernorm", "layers.{i}.post_mlp_norm", False),
    ]
)

def _t5_stack(stack: str, decoder: bool) -> list[_Rule]:
    B = rf"{stack}\.block\.{L}\.layer"
    attn = [(0, "SelfAttention", "self_attn")] + ([(1, "EncDecAttention", "cross_attn")] if decoder else [])
    ff = 2 if decoder else 1
    rules = [
        _Rule(rf"{stack}\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
              ((f"{stack}.rel_bias.embedding", _identity),),
              lambda c: _dims(c, "relative_attention_num_buckets", "num_heads")),
        *_norm(rf"{stack}\.final_layer_norm", f"{stack}.final_norm", False),
        *_norm(rf"{B}\.{ff}\.layer_norm", f"{stack}.layers.{{i}}.ff_norm", False),
        *_lin(rf"{B}\.{ff}\.DenseReluDense\.wi", f"{stack}.layers.{{i}}.ff.wi", "intermediate_size", "hidden_size",
              when=lambda c: c.feed_forward in ("relu", "gelu")),
        *_lin(rf"{B}\.{ff}\.DenseReluDense\.wi_0", f"{stack}.layers.{{i}}.ff.wi_0", "intermediate_size",
              "hidden_size", when=lambda c: c.feed_forward.startswith("gated")),
        *_lin(rf"{B}\.{ff}\.DenseReluDense\.wi_1", f"{stack}.layers.{{i}}.ff.wi_1", "intermediate_size",
              "hidden_size", when=lambda c: c.feed_forward.startswith("gated")),
        *_lin(rf"{B}\.{ff}\.DenseReluDense\.wo", f"{stack}.layers.{{i}}.ff.wo", "hidden_size", "intermediate_size"),
    ]
    for k, hf, ours in attn:
        norm = "attn_norm" if k == 0 else "cross_norm"
        rules += _norm(rf"{B}\.{k}\.layer_norm", f"{stack}.layers.{{i}}.{norm}", False)
        rules += [r for p in "qkv" for r in _lin(rf"{B}\.{k}\.{hf}\.{p}", f"{stack}.layers.{{i}}.{ours}.{p}", "q_out",
                                                 "hidden_size")]
        rules += _lin(rf"{B}\.{k}\.{hf}\.o", f"{stack}.layers.{{i}}.{ours}.o", "hidden_size", "q_out")
    return rules


T5_RULES: tuple[_Rule, ...] = tuple(
    [
        _Rule(r"shared\.weight", (("shared.embedding", _identity),), lambda c: _dims(c, "vocab_size", "hidden_size")),
        *_lin(r"lm_head", "lm_head", "vocab_size", "hidden_size", when=lambda c: not c.tie_embeddings),
        *_t5_stack("encoder", decoder=False),
        *_t5_stack("decoder", decoder=True),
    ]
)
# the stacks' own embedding entries are the shared matrix again (tied in every T5)
T5_IGNORED = (r"(encoder|decoder)\.embed_tokens\.weight",)

# buffers some exporters store; they carry no learned weights
LLAMA_IGNORED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)

_QKV = rf"gpt_neox\.layers\.{L}\.attention\.query_key_value"
NEOX_RULES: tuple[_Rule, ...] = tuple(
    [
        _Rule(r"gpt_neox\.embed_in\.weight", (("embed.embedding", _identity),),
              lambda c: _dims(c, "vocab_size", "hidden_size")),
        *_lin(r"embed_out", "lm_head", "vocab_size", "hidden_size", when=lambda c: not c.tie_embeddings),
        *_norm(r"gpt_neox\.final_layer_norm", "final_norm", True),
        *_norm(rf"gpt_neox\.layers\.{L}\.input_layernorm", "layers.{i}.attn_norm", True),
        *_norm(rf"gpt_neox\.layers\.{L}\.post_attention_layernorm", "layers.{i}.mlp_norm", True),
        _Rule(_QKV + r"\.weight", tuple((f"layers.{{i}}.attn.{p}_proj.kernel", _neox_split(j))
                                        for j, p in enumerate("qkv")), lambda c: _dims(c, "qkv_out", "hidden_size")),
        _Rule(_QKV + r"\.bias", tuple((f"layers.{{i}}.attn.{p}_proj.bias", _neox_split(j))
                                      for j, p in enumerate("qkv")), lambda c: _dims(c, "qkv_out"),
              lambda c: c.qkv_bias),
        *_lin(rf"gpt_neox\.layers\.{L}\.attention\.dense", "layers.{i}.attn.o_proj", "hidden_size", "q_out",
              bias_when=lambda c: c.o_bias),
        *_lin(rf"gpt_neox\.layers\.{L}\.mlp\.dense_h_to_4h", "layers.{i}.mlp.up_proj", "intermediate_size",
              "hidden_size", bias_when=lambda c: c.mlp_bias),
        *_lin(rf"gpt_neox\.layers\.{L}\.mlp\.dense_4h_to_h", "layers.{i}.mlp.down_proj", "hidden_size",
              "intermediate_size", bias_when=lambda c: c.mlp_bias),
    ]
)
NEOX_IGNORED = (
    r"gpt_neox\.layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)",
)

WEIGHT_RULES = {"llama": (LLAMA_RULES, LLAMA_IGNORED), "gpt_neox": (NEOX_RULES, NEOX_IGNORED),
                "gemma3": (GEMMA3_RULES, LLAMA_IGNORED), "t5": (T5_RULES, T5_IGNORED)}


def _path(template: str, i: str | None) -> tuple[str | int, ...]:
    parts = template.format(i=i).split(".")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def _shape_of(tensors: Mapping[str, Any], name: str) -> tuple[int, ...]:
    getter = getattr(tensors, "get_shape", None)  # lazy mappings can answer without loading
    return tuple(getter(name)) if getter is not None else tuple(np.shape(tensors[name]))


def build_model(config: ModelConfig, tensors: Mapping[str, Any], dtype: str = "float32",
                progress: bool = False, mesh: Mesh | None = None) -> CausalLM:
    """Build the NNX model for ``config`` from Hugging Face-named, PyTorch-layout ``tensors``.

    With a ``mesh`` every parameter is created directly in its shards (``lm.sharding`` rules):
    each device's slice is read from ``tensors`` on its own (``tensors.get_slice`` where the
    mapping has it, as safetensors files do, for the tensors whose transform is a transpose or
    nothing), so no device and, for sliced reads, no host ever holds a whole sharded tensor; on
    several processes each reads only its own devices' slices.

    Raises one ``CheckpointError`` listing every missing tensor, unexpected tensor and shape
    mismatch (with the expected shape and the config field responsible).
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ConfigError(f"dtype {dtype!r} unsupported (use one of {', '.join(SUPPORTED_DTYPES)})")
    if mesh is not None:  # a bad mesh fails before any tensor is read
        from londi_jax.utils.mesh import as_mesh

        mesh = as_mesh(mesh)
    config = config.replace(dtype=dtype)
    cls = model_class(config)
    abstract = nnx.eval_shape(lambda: cls(config, nnx.Rngs(0)))
    graphdef, abs_state = nnx.split(abstract)
    expected = traverse_util.flatten_dict(nnx.to_pure_dict(abs_state))
    rules, ignored = WEIGHT_RULES[config.family]
    compiled = [(re.compile(r.pattern + r"\Z"), r) for r in rules]
    ignored_re = [re.compile(p + r"\Z") for p in ignored]
    if config.tie_embeddings:  # exporters sometimes still write the tied head
        ignored_re.append(re.compile(r"(lm_head|embed_out)\.weight\Z"))

    errors: list[str] = []
    reported: set[tuple] = set()
    plan: list[tuple[str, _Rule, str | None]] = []
    for name in sorted(tensors.keys()):
        match = next(((m, r) for cre, r in compiled if (m := cre.match(name)) and r.when(config)), None)
        if match is None:
            if not any(p.match(name) for p in ignored_re):
                errors.append(f"unexpected tensor {name!r} (no parameter of a {config.model_type or config.family} "
                              f"model with this config takes it)")
            continue
        m, rule = match
        layer = m.groupdict().get("i")
        if layer is not None and _path(rule.targets[0][0], layer) not in expected:
            errors.append(f"unexpected tensor {name!r}: layer {layer} but the config has fewer layers "
                          f"(num_layers {config.num_layers}"
                          + (f", num_decoder_layers {config.num_decoder_layers})" if hasattr(config, "num_decoder_layers")
                             else ")"))
            continue
        want = rule.shape(config)
        got = _shape_of(tensors, name)
        if got != tuple(s for s, _ in want):
            why = ", ".join(f"{label}={size}" for size, label in want)
            bad = [f"dim {k} is {g} but {lbl}={s}" for k, (g, (s, lbl)) in enumerate(zip(got, want)) if g != s]
            detail = "; ".join(bad) if len(got) == len(want) else f"rank {len(got)} instead of {len(want)}"
            errors.append(f"shape mismatch for {name!r}: checkpoint has {got}, config expects "
                          f"{tuple(s for s, _ in want)} = ({why}) ({detail})")
            reported.update(_path(t, layer) for t, _ in rule.targets)  # not "missing" as well
            continue
        plan.append((name, rule, layer))

    filled = {_path(t, layer) for _, rule, layer in plan for t, _ in rule.targets}
    for path in sorted(set(expected) - filled - reported, key=str):
        errors.append(f"missing tensor for parameter {'.'.join(map(str, path))} "
                      f"({_hf_name_hint(rules, path, config)})")
    if errors:
        raise CheckpointError(f"checkpoint does not match the {config.model_type or config.family} config "
                              f"({len(errors)} problem{'s' * (len(errors) > 1)}):\n  - " + "\n  - ".join(errors))

    target_dtype = jnp_dtype(dtype)
    values: dict[tuple, Any] = {}
    for name, rule, layer in tqdm(plan, desc="loading weights", disable=not progress, leave=False):
        if mesh is not None:
            for template, transform in rule.targets:
                path = _path(template, layer)
                values[path] = _load_sharded(tensors, name, transform, config, expected[path].shape, target_dtype,
                                             NamedSharding(mesh, partition_spec(path, expected[path].shape, mesh)))
            continue
        arr = np.asarray(tensors[name])
        for template, transform in rule.targets:
            path = _path(template, layer)
            out = np.ascontiguousarray(transform(arr, config))
            assert out.shape == expected[path].shape, (name, path, out.shape, expected[path].shape)
            values[path] = jnp.asarray(out, dtype=target_dtype)
        del arr
    nnx.replace_by_pure_dict(abs_state, traverse_util.unflatten_dict(values))
    return nnx.merge(graphdef, abs_state)


def _load_sharded(tensors: Mapping[str, Any], name: str, transform: Callable, config: Any,
                  shape: tuple[int, ...], dtype: Any, sharding: NamedSharding) -> jax.Array:
    """One parameter built from its devices' slices (``build_model`` with a mesh)."""
    get_slice = getattr(tensors, "get_slice", None)
    if get_slice is not None and transform is _identity:
        read = lambda index: get_slice(name, index)  # noqa: E731
    elif get_slice is not None and transform is _transpose:  # the slice of a.T is a's slice, transposed
        read = lambda index: get_slice(name, tuple(reversed(index))).T  # noqa: E731
    else:  # other transforms (fused-qkv splits, dequantized GGUF blocks) need the whole tensor once
        whole = np.ascontiguousarray(transform(np.asarray(tensors[name]), config))
        read = lambda index: whole[index]  # noqa: E731
    return jax.make_array_from_callback(
        shape, sharding, lambda index: np.ascontiguousarray(np.asarray(read(index)).astype(dtype)))


def _hf_name_hint(rules: Sequence[_Rule], path: tuple, config: ModelConfig) -> str:
    """The HF tensor name that would fill ``path`` (for the 'missing' message)."""
    dotted = ".".join(map(str, path))
    layer = next((str(p) for p in path if isinstance(p, int)), None)
    for r in rules:
        for t, _ in r.targets:
            if t.format(i=layer) == dotted and r.when(config):
                name = r.pattern.replace(r"(?P<i>\d+)", layer or "").replace("\\.", ".")
                extra = " (config has tie_word_embeddings=false)" if "lm_head" in dotted else ""
                return f"expected HF tensor {name}{extra}"
    return "no HF tensor maps to it"


# ------------------------------------------------------------------------------ safetensors files
class SafetensorsTensors(Mapping[str, np.ndarray]):
    """Lazy name -> numpy array mapping over one or more safetensors files (opened on access)."""

    def __init__(self, files: Sequence[Path], weight_map: Mapping[str, str] | None = None):
        from safetensors import safe_open

        self._open = safe_open
        self._handles: dict[Path, Any] = {}
        self._where: dict[str, Path] = {}
        for f in files:
            h = self._handle(f)
            for k in h.keys():
                self._where[k] = f
        if weight_map is not None:
            listed = {k: files[0].parent / v for k, v in weight_map.items()}
            missing = sorted(k for k in listed if k not in self._where)
            if missing:
                raise CheckpointError(
                    f"model.safetensors.index.json lists {len(missing)} tensors not found in the shard files "
                    f"(e.g. {missing[:3]}); the download is incomplete: fetch the checkpoint again"
                )

    def _handle(self, f: Path) -> Any:
        if f not in self._handles:
            try:
                self._handles[f] = self._open(str(f), framework="numpy")
            except Exception as err:  # safetensors raises its own error types for truncated files
                raise CheckpointError(
                    f"cannot read safetensors file {f} ({type(err).__name__}: {err}); the file is corrupt or "
                    f"truncated: download the checkpoint again"
                ) from err
        return self._handles[f]

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._handle(self._where[name]).get_tensor(name)
        except KeyError:
            raise
        except Exception as err:
            raise CheckpointError(f"cannot read tensor {name!r} from {self._where[name]} ({err}); "
                                  f"the file is corrupt: download the checkpoint again") from err

    def get_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """``self[name][index]`` read from the file alone (a device's shard; ``build_model``)."""
        return self._handle(self._where[name]).get_slice(name)[index]

    def get_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(self._where[name]).get_slice(name).get_shape())

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def open_safetensors_dir(path: Path) -> SafetensorsTensors:
    """The weights of an HF directory: ``model.safetensors`` or an index + shards."""
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index} is not a valid safetensors index ({err})") from err
        shards = sorted({path / f for f in weight_map.values()})
        absent = [s.name for s in shards if not s.exists()]
        if absent:
            raise CheckpointError(f"{index.name} refers to missing shard files {absent} in {path}; "
                                  f"download the complete checkpoint")
        return SafetensorsTensors(shards, weight_map)
    if single.exists():
        return SafetensorsTensors([single])
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        return SafetensorsTensors(shards)
    others = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack"))
    hint = f" (found {others}: only safetensors is supported; convert with transformers' save_pretrained(" \
           f"safe_serialization=True))" if others else ""
    raise CheckpointError(f"no weights in {path}: expected model.safetensors or "
                          f"model-0000x-of-0000y.safetensors + model.safetensors.index.json{hint}")


def read_config(path: Path, dtype: str = "float32") -> ModelConfig:
    """``ModelConfig`` from ``path/config.json``."""
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"{path} has no config.json; point to a Hugging Face model directory "
                              f"(config.json + *.safetensors + tokenizer files)")
    try:
        d = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({err})") from err
    return ModelConfig.from_hf_dict(d, dtype=dtype)


def load_tokenizer(path: Path) -> Any:
    """The directory's tokenizer via ``AutoTokenizer`` (local files only)."""
    from transformers import AutoTokenizer

    files = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "sentencepiece.bpe.model")
    if not any((path / f).exists() for f in files):  # transformers would build an empty default tokenizer
        raise CheckpointError(f"{path} has no tokenizer files (one of {', '.join(files)}); save the tokenizer "
                              f"with the model (tokenizer.save_pretrained(dir))")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot load a tokenizer from {path} ({type(err).__name__}: {err}); the "
                              f"directory needs tokenizer.json / tokenizer_config.json") from err


def generation_eos_ids(path: Path) -> tuple[int, ...]:
    """``eos_token_id`` of ``path/generation_config.json`` (an int or a list; () without the file):
    the ids transformers' ``generate()`` stops on for this directory (it falls back to config.json's
    ``eos_token_id`` when the file is absent; the engine adds those in any case)."""
    f = path / "generation_config.json"
    if not f.exists():
        return ()
    try:
        eos = json.loads(f.read_text()).get("eos_token_id")
    except (json.JSONDecodeError, AttributeError) as err:
        raise CheckpointError(f"{f} is not a valid JSON object ({err}); fix or delete it") from err
    if eos is None:
        return ()
    ids = eos if isinstance(eos, list) else [eos]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise CheckpointError(f"{f}: eos_token_id must be a token id or a list of ids, got {eos!r}")
    return tuple(ids)


def model_type_of(path: Path) -> str | None:
    """``model_type`` in ``path/config.json`` (None when unreadable: ``read_config`` reports why)."""
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None  # read_config reports it


def load_t5_directory(path: str | os.PathLike, dtype: str = "float32", progress: bool = True,
                      mesh: Mesh | None = None) -> tuple[Any, Any]:
    """A local T5 / Flan-T5 Hugging Face directory as ``(T5ForConditionalGeneration, T5Config)``; a
    stored ``lm_head.weight`` is the LM head even where the config says tied (transformers v5
    writes every T5 config tied)."""
    from londi_jax.lm.t5 import T5Config

    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"model directory {p} does not exist (or is not a directory)")
    if not (p / "config.json").exists():
        raise CheckpointError(f"{p} has no config.json; point to a Hugging Face T5 directory")
    try:
        d = json.loads((p / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{p / 'config.json'} is not valid JSON ({err})") from err
    config = T5Config.from_hf_dict(d, dtype=dtype)
    tensors = open_safetensors_dir(p)
    if config.tie_embeddings and "lm_head.weight" in tensors:
        config = config.replace(tie_embeddings=False)
    return build_model(config, tensors, dtype=dtype, progress=progress, mesh=mesh), config.replace(dtype=dtype)


def load_hf_directory(path: str | os.PathLike, dtype: str = "float32", progress: bool = True,
                      mesh: Mesh | None = None):
    """Load a local Hugging Face model directory as a ``LanguageModel`` (see engine.py); generation
    stops on generation_config.json's and config.json's EOS ids (and the tokenizer's EOS). A T5 /
    Flan-T5 directory gives a ``seq2seq.Seq2SeqLanguageModel`` (the same interface). ``mesh``: load
    the parameters straight into their shards over it (``build_model``) and run there."""
    from londi_jax.lm.engine import LanguageModel  # engine builds on this module

    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"model directory {p} does not exist (or is not a directory)")
    if model_type_of(p) == "t5":  # encoder-decoder: the seq2seq engine
        from londi_jax.lm.seq2seq import Seq2SeqLanguageModel

        model, t5_config = load_t5_directory(p, dtype, progress, mesh)
        return Seq2SeqLanguageModel(t5_config, model, load_tokenizer(p), name=p.name, mesh=mesh)
    config = read_config(p, dtype)
    tensors = open_safetensors_dir(p)
    model = build_model(config, tensors, dtype=dtype, progress=progress, mesh=mesh)
    tokenizer = load_tokenizer(p)
    return LanguageModel(config.replace(dtype=dtype), model, tokenizer, name=p.name,
                         eog_token_ids=generation_eos_ids(p), mesh=mesh)
