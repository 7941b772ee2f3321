"""Read a llama.cpp GGUF file as a Hugging Face-style checkpoint: config dict, tensors, tokenizer.

``read_gguf(path)`` gives a :class:`GGUFCheckpoint` whose ``config`` is a transformers
``config.json``-style dict, whose ``tensors`` is a lazy mapping from Hugging Face tensor names to
float32 numpy arrays in PyTorch layout (dequantized one tensor at a time, on access, so memory stays
about one copy of the weights), and whose ``tokenizer()`` builds the fast tokenizer.

llama.cpp stores the q/k projections of ``llama`` models with the rows of every head reordered for
its interleaved rotary layout; :func:`unpermute_rotary_rows` undoes that. Llama-3.1/3.2 files carry
``rope_freqs.weight`` (their RoPE scaling as per-frequency divisors); it becomes the config's
``rope_freq_factors``. ``GGUFCheckpoint.end_of_generation_ids`` gives llama.cpp's end-of-generation set.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from londi_jax.utils.errors import LondiError


class GGUFError(LondiError):
    """A GGUF file that cannot be read or converted (missing, corrupt, unsupported)."""


# Per-layer tensor names: GGUF suffix -> Hugging Face suffix (llama/mistral and qwen2 share them).
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",  # Qwen3
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# Gemma 3 names its four norms per block differently (llama.cpp's ``LLM_ARCH_GEMMA3``): ffn_norm is the
# norm before the MLP, and the outputs of attention and MLP have their own.
_GEMMA3_LAYER_NAMES = {
    **_LAYER_NAMES,
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# llama.cpp's encoding of Llama-3 RoPE scaling: one divisor per rotary frequency (see rope_freq_factors)
ROPE_FREQS = "rope_freqs.weight"
# GGUF architectures we convert -> (transformers model_type, architectures entry, q/k rows permuted?)
SUPPORTED_ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM", True),
    "qwen2": ("qwen2", "Qwen2ForCausalLM", False),
    "qwen3": ("qwen3", "Qwen3ForCausalLM", False),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM", False),
    "t5": ("t5", "T5ForConditionalGeneration", False),
}
T5_MAX_DISTANCE = 128  # llama.cpp's T5 relative-position buckets end here (not stored in its files)
# llama.cpp's Gemma 3 constants that its GGUF files do not store (``llama-model.cpp``, LLM_ARCH_GEMMA3):
# every 6th layer global, the others sliding with RoPE base 10000
GEMMA3_SLIDING_PATTERN, GEMMA3_LOCAL_ROPE_BASE = 6, 10000.0


def permute_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's reordering of q/k rows: in each head, row ``half*d/2 + i`` moves to ``2*i + half``.

    Hugging Face Llama rotates dimension ``i`` with ``i + d/2`` (rotate-half); llama.cpp rotates
    adjacent pairs ``(2i, 2i+1)``. Works on weights ``(n_heads*d, in)`` and biases ``(n_heads*d,)``.
    """
    d = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_rotary_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of :func:`permute_rotary_rows`: row ``2*i + half`` of each head goes back to ``half*d/2 + i``."""
    d = w.shape[0] // n_heads
    return w.reshape(n_heads, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field_value(field: Any) -> Any:
    try:
        return field.contents()
    except Exception as err:  # corrupt value table
        raise GGUFError(f"cannot decode GGUF metadata key {field.name!r}: {err}") from err


@functools.lru_cache(maxsize=1)
def _reader_class() -> type:
    """``gguf.GGUFReader`` holding its file mapping as a plain ndarray view (same pages, no copy).

    The reader slices its data once per metadata element (a 151k-token vocabulary and its merges:
    hundreds of thousands of slices), and every slice of an ``np.memmap`` runs memmap's Python-level
    view bookkeeping; on a plain view they are cheap. Opening Qwen2.5-0.5B's GGUF: 9.1 s -> 3.3 s."""
    from gguf.gguf_reader import GGUFReader

    class _Reader(GGUFReader):
        @property
        def data(self) -> np.ndarray:
            return self._data

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._data = value.view(np.ndarray) if isinstance(value, np.memmap) else value

    return _Reader


def _open_reader(path: str):

    if not os.path.exists(path):
        raise GGUFError(f"GGUF file not found: {path}. Pass an existing .gguf file, a model directory or a registered name.")
    if os.path.isdir(path):
        raise GGUFError(f"{path} is a directory, not a .gguf file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise GGUFError(f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    try:
        return _reader_class()(path, "r")
    except Exception as err:  # truncated / corrupt files fail deep inside numpy memmaps
        raise GGUFError(f"cannot read GGUF file {path} (truncated or corrupt?): {type(err).__name__}: {err}") from err


# Output bytes dequantized per gguf call. gguf's dequantizer holds a tensor's values twice (per-group
# pieces, then their concatenation); feeding it row blocks keeps that temporary to a few MiB.
_DEQUANT_BLOCK_BYTES = 1 << 22


def dequantize_tensor(t: Any) -> np.ndarray:
    """Float32 values of a ``gguf.GGUFReader`` tensor, dims reversed to PyTorch order (GGUF lists them
    fastest-first), through ``gguf.quants.dequantize``: every type the gguf package implements
    (F32, F16, BF16, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q2_K..Q6_K, the IQ types, ...). Rows are dequantized in
    blocks straight into one float32 array, so the peak is about one float32 copy of the tensor.

    Raises ``GGUFError`` for a type gguf cannot dequantize or data that does not fit the shape.
    """
    from gguf.quants import dequantize

    shape = tuple(int(s) for s in reversed(t.shape.tolist()))
    out = np.empty(shape, dtype=np.float32)
    rows_out = out.reshape(-1, shape[-1] if shape else 1)
    try:
        rows_in = np.asarray(t.data).reshape(rows_out.shape[0], -1)  # one row of (quant) bytes per output row
        step = max(1, _DEQUANT_BLOCK_BYTES // max(1, 4 * rows_out.shape[1]))
        for r0 in range(0, rows_out.shape[0], step):
            rows_out[r0:r0 + step] = dequantize(rows_in[r0:r0 + step], t.tensor_type)
    except NotImplementedError as err:
        raise GGUFError(f"tensor {t.name}: {err}; re-export the GGUF as F16/Q8_0/Q4_K etc.") from err
    except (ValueError, IndexError) as err:
        raise GGUFError(f"tensor {t.name} has corrupt data (truncated file?): {err}") from err
    return out


def _release_file_pages(mapped: Any, t: Any) -> None:
    """Drop the mapped file pages of tensor ``t`` from this process's resident memory once it has been
    dequantized (they stay in the OS page cache). Without this, loading counts the whole GGUF file on
    top of the float32 weights. Best effort: a no-op where ``madvise`` is unavailable."""
    # the reader's numpy.memmap (the base of its plain view, see _reader_class) keeps its mmap.mmap here
    mm = getattr(mapped, "_mmap", None) or getattr(getattr(mapped, "base", None), "_mmap", None)
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = int(t.data_offset) // mmap.PAGESIZE * mmap.PAGESIZE
    end = min(int(t.data_offset) + int(t.n_bytes), len(mm))
    with contextlib.suppress(OSError, ValueError):
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)


class GGUFTensors(Mapping[str, np.ndarray]):
    """Lazy mapping: Hugging Face tensor name -> float32 numpy array, dequantized when accessed."""

    def __init__(self, reader: Any, arch: str, n_heads: int, n_kv_heads: int, n_layers: int,
                 hf_name: Callable[[str], str | None] | None = None):
        # Keep the file mapping, not the reader: its parsed metadata (a numpy array per token string)
        # is ~0.5 GB for a 150k-token vocabulary and would stay alive for the whole load.
        self._mapped, self._arch = getattr(reader, "data", None), arch
        self._heads = {"q": n_heads, "k": n_kv_heads}
        self._permuted = SUPPORTED_ARCHITECTURES[arch][2]
        self._by_name: dict[str, Any] = {}
        self.rope_freqs: Any = None  # llama.cpp's per-dimension RoPE divisors, read into the config instead
        unknown = []
        # llama.cpp's converter stores Gemma's norm weights w as 1 + w (its RMSNorm multiplies by them)
        self._norm_offset = 1.0 if arch == "gemma3" else 0.0
        for t in reader.tensors:
            hf = hf_name(t.name) if hf_name is not None else _hf_name(t.name, n_layers, arch)
            if t.name == ROPE_FREQS:
                self.rope_freqs = t
            elif hf is None:
                unknown.append(t.name)
            else:
                self._by_name[hf] = t
        if unknown:
            raise GGUFError(f"GGUF {arch} tensors with no Hugging Face counterpart: {', '.join(unknown[:8])}"
                            + (" ..." if len(unknown) > 8 else ""))

    def __getitem__(self, name: str) -> np.ndarray:
        t = self._by_name[name]
        w = dequantize_tensor(t)
        _release_file_pages(self._mapped, t)
        if self._norm_offset and name.endswith("norm.weight"):
            w = w - np.float32(self._norm_offset)
        if self._permuted:
            for key, heads in self._heads.items():
                if f"self_attn.{key}_proj." in name:
                    w = unpermute_rotary_rows(w, heads)
        return w

    def get_shape(self, name: str) -> tuple[int, ...]:
        """Shape of a tensor without dequantizing it."""
        return tuple(int(s) for s in reversed(self._by_name[name].shape.tolist()))

    def __contains__(self, name: object) -> bool:  # Mapping's default would dequantize the tensor
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def quant_types(self) -> dict[str, str]:
        """Tensor name -> GGUF storage type (``Q4_1``, ``F32``, ...)."""
        return {k: t.tensor_type.name for k, t in self._by_name.items()}

    def n_params(self) -> int:
        return int(sum(int(np.prod(t.shape)) for t in self._by_name.values()))


def _hf_name(gguf_name: str, n_layers: int, arch: str = "llama") -> str | None:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and int(parts[1]) < n_layers:
        suffix = (_GEMMA3_LAYER_NAMES if arch == "gemma3" else _LAYER_NAMES).get(parts[2])
        if suffix is not None:
            return f"model.layers.{parts[1]}.{suffix}"
    return None


def _rope_scaling(meta: Mapping[str, Any], arch: str, tensors: GGUFTensors, head_dim: int, path: str) -> dict[str, Any]:
    """Config entries for the file's RoPE scaling (merged into the config dict).

    ``rope.scaling.type`` 'linear' (with ``rope.scaling.factor``) becomes transformers' linear rope
    parameters. A ``rope_freqs.weight`` tensor is how llama.cpp's converter stores Llama-3.1/3.2
    'llama3' scaling: ggml's rope divides inverse frequency i by ``rope_freqs[i]``; it becomes
    ``rope_freq_factors`` (read by ``ModelConfig``). Other scaling types raise ``GGUFError``.
    """
    out: dict[str, Any] = {}
    kind = meta.get(f"{arch}.rope.scaling.type") or "none"
    factor = float(meta.get(f"{arch}.rope.scaling.factor") or 1.0)
    if kind == "linear" and factor != 1.0:
        theta = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
        out["rope_parameters"] = {"rope_type": "linear", "factor": factor, "rope_theta": theta}
    elif kind not in ("none", "linear"):
        raise GGUFError(f"GGUF rope scaling {kind!r} in {path} is not supported (supported: none, linear, and "
                        f"Llama-3 scaling stored as {ROPE_FREQS})")
    t = tensors.rope_freqs
    if t is not None:
        if t.tensor_type.name != "F32":  # llama.cpp's converter always writes it as F32
            raise GGUFError(f"{ROPE_FREQS} in {path} is stored as {t.tensor_type.name}; expected F32")
        factors = np.array(t.data, dtype=np.float32).reshape(-1)
        if factors.shape[0] != head_dim // 2 or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
            raise GGUFError(f"{ROPE_FREQS} in {path} must hold head_dim/2 = {head_dim // 2} positive finite "
                            f"divisors; it has {factors.shape[0]} values")
        out["rope_freq_factors"] = [float(x) for x in factors]
    return out


@dataclass
class GGUFCheckpoint:
    """What a GGUF file holds, in Hugging Face terms."""

    path: str
    architecture: str
    config: dict[str, Any]
    tensors: GGUFTensors
    metadata: dict[str, Any]

    def tokenizer(self):
        """The file's tokenizer as ``transformers.PreTrainedTokenizerFast``."""
        from londi_jax.lm.tokenizer import build_tokenizer

        return build_tokenizer(self.metadata)

    @property
    def end_of_generation_ids(self) -> tuple[int, ...]:
        """Token ids that end generation, by llama.cpp's rule (``tokenizer.end_of_generation_ids``)."""
        from londi_jax.lm.tokenizer import end_of_generation_ids

        return end_of_generation_ids(self.metadata) if "tokenizer.ggml.tokens" in self.metadata else ()


def _t5_hf_names(n_enc: int, n_dec: int, gated: bool) -> dict[str, str]:
    """GGUF tensor name -> transformers T5 name, from the gguf package's own name map (``ffn_up``
    is ``wi_1`` in gated MLPs, ``wi`` otherwise)."""
    import gguf

    names = ["shared", "lm_head", "encoder.final_layer_norm", "decoder.final_layer_norm"]
    for stack, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            b = f"{stack}.block.{i}.layer"
            names += [f"{b}.0.SelfAttention.{p}" for p in "qkvo"] + [f"{b}.0.layer_norm"]
            if i == 0:
                names.append(f"{b}.0.SelfAttention.relative_attention_bias")
            if stack == "decoder":
                names += [f"{b}.1.EncDecAttention.{p}" for p in "qkvo"] + [f"{b}.1.layer_norm"]
            ff = f"{b}.{2 if stack == 'decoder' else 1}"
            names += [f"{ff}.DenseReluDense.{p}" for p in (("wi_0", "wi_1") if gated else ("wi",))]
            names += [f"{ff}.DenseReluDense.wo", f"{ff}.layer_norm"]
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5, max(n_enc, n_dec))
    return {f"{table.get_name(n)}.weight": f"{n}.weight" for n in names}


def _read_t5(path: str, reader: Any, meta: dict[str, Any], need: Callable[[str], Any]) -> GGUFCheckpoint:
    """A llama.cpp T5 / Flan-T5 file in transformers' T5 terms (``T5Config.from_hf_dict``)."""
    n_enc = int(need("block_count"))
    n_dec = int(meta.get("t5.decoder_block_count", n_enc))
    gated = any(t.name.endswith("ffn_gate.weight") for t in reader.tensors)
    table = _t5_hf_names(n_enc, n_dec, gated)
    n_heads = int(need("attention.head_count"))
    tensors = GGUFTensors(reader, "t5", n_heads, n_heads, n_enc, hf_name=table.get)
    if "shared.weight" not in tensors:
        raise GGUFError(f"GGUF file {path} has no token_embd.weight tensor")
    tied = "lm_head.weight" not in tensors
    config: dict[str, Any] = {
        "model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
        "vocab_size": int(meta.get("t5.vocab_size", tensors._by_name["shared.weight"].shape[1])),
        "d_model": int(need("embedding_length")), "d_kv": int(need("attention.key_length")),
        "d_ff": int(need("feed_forward_length")), "num_layers": n_enc, "num_decoder_layers": n_dec,
        "num_heads": n_heads, "relative_attention_num_buckets": int(meta.get("t5.attention.relative_buckets_count", 32)),
        "relative_attention_max_distance": T5_MAX_DISTANCE,
        "layer_norm_epsilon": float(meta.get("t5.attention.layer_norm_rms_epsilon", 1e-6)),
        "feed_forward_proj": "gated-gelu" if gated else "relu",
        # a file without output.weight ties the head: T5 v1.0, which also rescales (v1.1 / Flan store a head)
        "tie_word_embeddings": tied, "scale_decoder_outputs": tied,
        "decoder_start_token_id": int(meta.get("t5.decoder_start_token_id", meta.get("tokenizer.ggml.padding_token_id", 0))),
        "n_positions": int(meta.get("t5.context_length", 512)),
    }
    for key, hf_key in (("eos_token_id", "eos_token_id"), ("padding_token_id", "pad_token_id")):
        if f"tokenizer.ggml.{key}" in meta:
            config[hf_key] = int(meta[f"tokenizer.ggml.{key}"])
    return GGUFCheckpoint(path=path, architecture="t5", config=config, tensors=tensors, metadata=meta)


def read_gguf(path: str | os.PathLike) -> GGUFCheckpoint:
    """Open a GGUF file: metadata -> transformers-style config, lazy HF-named tensors, tokenizer metadata."""
    path = os.fspath(path)
    reader = _open_reader(path)
    meta = {name: _field_value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(
            f"GGUF architecture {arch!r} in {path} is not supported; supported: {', '.join(sorted(SUPPORTED_ARCHITECTURES))}"
        )
    model_type, hf_arch, _ = SUPPORTED_ARCHITECTURES[arch]

    def need(key: str) -> Any:
        full = f"{arch}.{key}"
        if full not in meta:
            raise GGUFError(f"GGUF file {path} lacks the metadata key {full!r}")
        return meta[full]

    if arch == "t5":
        return _read_t5(path, reader, meta, need)

    n_layers, hidden, n_heads = int(need("block_count")), int(need("embedding_length")), int(need("attention.head_count"))
    n_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_heads))
    tensors = GGUFTensors(reader, arch, n_heads, n_kv, n_layers)
    if "model.embed_tokens.weight" not in tensors:
        raise GGUFError(f"GGUF file {path} has no token_embd.weight tensor")
    embed_rows = int(tensors._by_name["model.embed_tokens.weight"].shape[1])
    vocab = int(meta.get(f"{arch}.vocab_size", embed_rows))
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // n_heads))
    theta = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
    config: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [hf_arch],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "max_position_embeddings": int(meta.get(f"{arch}.context_length", 2048)),
        "rms_norm_eps": float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "hidden_act": "silu",
        "mlp_bias": False,
        # llama.cpp drops output.weight when the LM head shares the embedding matrix.
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "torch_dtype": "float32",
    }
    for key, hf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("padding_token_id", "pad_token_id")):
        if f"tokenizer.ggml.{key}" in meta:
            config[hf_key] = int(meta[f"tokenizer.ggml.{key}"])
    config.update(_rope_scaling(meta, arch, tensors, head_dim, path))
    if model_type == "gemma3_text":
        config.update(
            hidden_activation="gelu_pytorch_tanh", sliding_window=int(need("attention.sliding_window")),
            sliding_window_pattern=GEMMA3_SLIDING_PATTERN, rope_local_base_freq=GEMMA3_LOCAL_ROPE_BASE,
            # llama.cpp scales attention logits by 1/sqrt(key_length) (its 27B exception aside)
            query_pre_attn_scalar=head_dim, attention_bias=False, rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        )
        config.pop("hidden_act")
    elif model_type in ("qwen2", "qwen3"):
        config["use_sliding_window"] = False  # Qwen2 always has q/k/v biases; no attention_bias key
    else:
        config["attention_bias"] = "model.layers.0.self_attn.q_proj.bias" in tensors
    return GGUFCheckpoint(path=path, architecture=arch, config=config, tensors=tensors, metadata=meta)
