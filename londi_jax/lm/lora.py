"""LoRA adapters for the NNX causal LMs: add, merge, train functionally, save and load.

``add_lora`` swaps the targeted ``nnx.Linear`` layers for ``LoRALinear`` (a subclass of flax's
``nnx.LoRALinear``): the forward is ``x @ W (+ b) + (alpha / rank) * (x @ A) @ B`` with ``A`` random
(He-uniform, flax's default) and ``B`` zero, so a freshly adapted model computes exactly what the
base model computes. ``A``/``B`` are ``nnx.LoRAParam`` (an ``nnx.Param`` subclass), the base kernel
keeps its path (``...q_proj.kernel``) and dtype, and the adapter lives at ``...q_proj.lora.lora_a/b``.

Training under plain ``jax.jit``: ``split_trainable(model, "lora")`` gives
``(graphdef, trainable, frozen)``; differentiate a loss of ``merge_trainable(graphdef, trainable,
frozen)`` w.r.t. ``trainable`` only.

**Adapter banks** (``add_lora_bank``): one base model carrying N adapters at once, each row of a
batch using its own (per-row adapter selection, as multi-adapter servers such as Punica and
S-LoRA do), so rows for different adapters, e.g. the stages of an FSLM stack, share one forward
and one compiled program. Each targeted Linear holds the adapters stacked, ``A (N, in, r)`` and
``B (N, r, out)`` (ranks zero-padded to the largest, layers an adapter does not target zero), and
one ``AdapterRows`` variable shared by all of them says which adapter each row uses: row ``i`` of
every Linear input's leading axis computes ``x W (+ b) + s[k] (x A[k]) B[k]`` with
``k = rows[i]``. The gathered product costs one adapter's FLOPs per token; zero-padding and zero
layers add exact zeros, so a row's output equals its adapter's alone up to float summation order.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from londi_jax.lm.layers import CausalLM
from londi_jax.utils.errors import LondiError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FORMAT = "londi_jax-lora"
TRAIN_MODES = ("full", "lora")
# ModelConfig fields an adapter depends on (recorded on save, checked on load)
BASE_FIELDS = ("family", "model_type", "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
               "head_dim", "intermediate_size", "tie_embeddings")


class LoRAError(LondiError):
    """A LoRA configuration, adapted model or adapter directory is invalid or does not fit."""


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Rank, scale numerator and the Linear attribute names to adapt.

    ``targets`` are attribute names of ``nnx.Linear`` layers in the model: Llama family q_proj,
    k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (+ lm_head when untied); GPT-NeoX the same
    without gate_proj. The adapter output is scaled by ``alpha / rank``.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        object.__setattr__(self, "targets", tuple(self.targets))
        problems = []
        if isinstance(self.rank, bool) or not isinstance(self.rank, (int, np.integer)) or self.rank <= 0:
            problems.append(f"rank must be a positive integer, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float, np.floating)) or not float(self.alpha) > 0:
            problems.append(f"alpha must be > 0, got {self.alpha!r}")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            problems.append(f"targets must be a non-empty tuple of Linear names, got {self.targets!r}")
        if problems:
            raise LoRAError("invalid LoRAConfig: " + "; ".join(problems))
        object.__setattr__(self, "rank", int(self.rank))
        object.__setattr__(self, "alpha", float(self.alpha))

    @property
    def scale(self) -> float:
        """``alpha / rank``, the factor on the adapter's output."""
        return self.alpha / self.rank


class LoRALinear(nnx.LoRALinear):
    """``nnx.LoRALinear`` with the usual ``alpha / rank`` scale; built from an existing ``nnx.Linear``
    (same kernel/bias arrays and dtypes, so the state is a superset of the Linear's)."""

    def __init__(self, linear: nnx.Linear, rank: int, alpha: float, rngs: nnx.Rngs):
        kernel, bias = linear.kernel[...], (linear.bias[...] if linear.bias is not None else None)
        super().__init__(
            linear.in_features, linear.out_features, lora_rank=rank, use_bias=linear.use_bias,
            dtype=linear.dtype, param_dtype=linear.param_dtype, precision=linear.precision,
            kernel_init=lambda *_: kernel,  # reuse the base weights instead of a random init
            bias_init=lambda *_: bias,
            dot_general=linear.dot_general, promote_dtype=linear.promote_dtype,
            preferred_element_type=linear.preferred_element_type, rngs=rngs,
        )
        self.lora_rank = int(rank)
        self.lora_alpha = float(alpha)

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank

    def __call__(self, x: jax.Array, out_sharding: Any = None) -> jax.Array:
        y = nnx.Linear.__call__(self, x, out_sharding=out_sharding)
        # the float32 adapter must not change the activation dtype of a bfloat16 model
        return y + (self.lora_scale * self.lora(x)).astype(y.dtype)

    def merged_kernel(self) -> jax.Array:
        """``W + (alpha / rank) A @ B`` in the base kernel's dtype (computed in float32)."""
        k = self.kernel[...]
        delta = self.lora.lora_a[...].astype(jnp.float32) @ self.lora.lora_b[...].astype(jnp.float32)
        return (k.astype(jnp.float32) + self.lora_scale * delta).astype(k.dtype)


class AdapterRows(nnx.Variable):
    """Which adapter of a bank each row uses: int32 ``(R,)``, R = the leading axis of every Linear
    input in the current program (set by ``set_adapter_rows`` before a forward)."""


class MultiLoRALinear(nnx.Linear):
    """An ``nnx.Linear`` with a bank of N LoRA adapters, one chosen per row (see the module docstring).

    ``bank_a (N, in, r)`` and ``bank_b (N, r, out)`` are ``nnx.LoRAParam``; ``bank_scale (N,)`` holds
    each adapter's ``alpha / rank``; ``rows`` is the bank's shared ``AdapterRows``."""

    def __init__(self, linear: nnx.Linear, a: jax.Array, b: jax.Array, scale: jax.Array, rows: AdapterRows):
        kernel, bias = linear.kernel[...], (linear.bias[...] if linear.bias is not None else None)
        super().__init__(
            linear.in_features, linear.out_features, use_bias=linear.use_bias, dtype=linear.dtype,
            param_dtype=linear.param_dtype, precision=linear.precision,
            kernel_init=lambda *_: kernel, bias_init=lambda *_: bias,  # the base weights, not a random init
            dot_general=linear.dot_general, promote_dtype=linear.promote_dtype,
            preferred_element_type=linear.preferred_element_type, rngs=nnx.Rngs(0),
        )
        self.bank_a = nnx.LoRAParam(a)
        self.bank_b = nnx.LoRAParam(b)
        self.bank_scale = nnx.Variable(scale)
        self.rows = rows

    def __call__(self, x: jax.Array, out_sharding: Any = None) -> jax.Array:
        y = nnx.Linear.__call__(self, x, out_sharding=out_sharding)
        ids = self.rows[...]
        if ids.ndim != 1 or x.ndim < 2 or ids.shape[0] != x.shape[0]:
            raise LoRAError(f"an adapter bank's rows {tuple(ids.shape)} must name one adapter per row of the "
                            f"input's leading axis {tuple(x.shape)}; call set_adapter_rows(model, rows) with "
                            f"the program's row count first")
        a, b = self.bank_a[...][ids], self.bank_b[...][ids]  # (R, in, r), (R, r, out): one adapter per row
        xs = x.reshape(x.shape[0], -1, x.shape[-1]).astype(a.dtype)
        delta = jnp.einsum("rtk,rko->rto", jnp.einsum("rti,rik->rtk", xs, a), b)
        delta = delta * self.bank_scale[...][ids][:, None, None]
        return y + delta.reshape(y.shape).astype(y.dtype)


# ------------------------------------------------------------------------------ helpers
def _linears(model: nnx.Module) -> Iterator[tuple[tuple, nnx.Linear]]:
    """(path, module) of every ``nnx.Linear`` (LoRALinear included) reached by an attribute name."""
    for path, mod in nnx.iter_modules(model):
        if isinstance(mod, nnx.Linear) and path and isinstance(path[-1], str):
            yield tuple(path), mod


def _lora_layers(model: nnx.Module) -> list[tuple[tuple, LoRALinear]]:
    return [(p, m) for p, m in _linears(model) if isinstance(m, LoRALinear)]


def _bank_layers(model: nnx.Module) -> list[tuple[tuple, MultiLoRALinear]]:
    return [(p, m) for p, m in _linears(model) if isinstance(m, MultiLoRALinear)]


def _no_bank(model: CausalLM, what: str) -> None:
    if _bank_layers(model):
        raise LoRAError(f"{what} works on one adapter; this model holds an adapter bank (add_lora_bank). "
                        f"Apply {what} to the single adapted models the bank was built from")


def _parent(root: nnx.Module, path: tuple) -> Any:
    node = root
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def _check_model(model: Any, what: str) -> None:
    if not isinstance(model, CausalLM):
        raise LoRAError(f"{what} needs a londi_jax CausalLM (e.g. LanguageModel.model), got {type(model).__name__}")


def has_lora(model: CausalLM) -> bool:
    """Whether ``model`` carries LoRA adapters."""
    return bool(_lora_layers(model))


def lora_config_of(model: CausalLM) -> LoRAConfig:
    """The ``LoRAConfig`` an adapted model was built with."""
    layers = _lora_layers(model)
    if not layers:
        raise LoRAError("the model has no LoRA adapters; call add_lora(model, LoRAConfig(...)) first")
    ranks = {(m.lora_rank, m.lora_alpha) for _, m in layers}
    if len(ranks) != 1:
        raise LoRAError(f"the model's LoRA layers use different (rank, alpha) pairs {sorted(ranks)}; "
                        f"save_lora supports one LoRAConfig per model")
    rank, alpha = ranks.pop()
    targets = tuple(dict.fromkeys(p[-1] for p, _ in layers))
    return LoRAConfig(rank=rank, alpha=alpha, targets=targets)


# ------------------------------------------------------------------------------ add / merge
def add_lora(model: CausalLM, config: LoRAConfig, seed: int = 0) -> CausalLM:
    """A copy of ``model`` whose targeted Linear layers carry LoRA adapters (B = 0: same outputs).

    The input model is left untouched (the copy shares its immutable weight arrays).
    """
    _check_model(model, "add_lora")
    if not isinstance(config, LoRAConfig):
        raise LoRAError(f"add_lora needs a LoRAConfig, got {type(config).__name__}")
    _no_bank(model, "add_lora")
    if has_lora(model):
        raise LoRAError("the model already has LoRA adapters; merge_lora(model) first to stack another adapter")
    out = nnx.clone(model)
    found = list(_linears(out))
    known = sorted({p[-1] for p, _ in found})
    missing = [t for t in config.targets if t not in known]
    if missing:
        raise LoRAError(f"LoRA target(s) {missing} match no Linear layer of this {out.config.family} model; "
                        f"known targets: {', '.join(known)}")
    rngs = nnx.Rngs(seed)
    for path, lin in found:
        if path[-1] in config.targets:
            setattr(_parent(out, path), path[-1], LoRALinear(lin, config.rank, config.alpha, rngs))
    return out


def merge_lora(model: CausalLM) -> CausalLM:
    """A new plain (LoRA-free) model of the same class with ``W + (alpha/rank) A @ B`` folded in."""
    _check_model(model, "merge_lora")
    _no_bank(model, "merge_lora")
    layers = _lora_layers(model)
    if not layers:
        raise LoRAError("the model has no LoRA adapters to merge; it is already a plain model")
    values = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    for path, mod in layers:
        del values[(*path, "lora", "lora_a")], values[(*path, "lora", "lora_b")]
        values[(*path, "kernel")] = mod.merged_kernel()
    config = model.config
    cls = type(model)
    abstract = nnx.eval_shape(lambda: cls(config, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values))
    return nnx.merge(graphdef, state)


# ------------------------------------------------------------------------------ adapter banks
def adapter_bank_size(model: CausalLM) -> int:
    """How many adapters ``model``'s bank holds (0: no bank)."""
    layers = _bank_layers(model)
    return int(layers[0][1].bank_a.shape[0]) if layers else 0


def add_lora_bank(base_model: CausalLM, adapted: Sequence[CausalLM]) -> CausalLM:
    """A copy of ``base_model`` carrying the adapters of ``adapted`` (each ``add_lora``/``load_lora``
    of this base) as one bank, adapter ``k`` = ``adapted[k]``; choose per row with ``set_adapter_rows``.

    Adapters may differ in rank, alpha and targets (smaller ranks are zero-padded, untargeted
    layers get zero adapters: exact zeros). Raises ``LoRAError`` for no adapters, a model without
    LoRA, one on a different base (its base weights must be ``base_model``'s) or a bank input."""
    _check_model(base_model, "add_lora_bank")
    _no_bank(base_model, "add_lora_bank")
    if has_lora(base_model):
        raise LoRAError("add_lora_bank needs the plain base model, not an adapted one; pass the base the "
                        "adapters were added to")
    adapted = list(adapted)
    if not adapted:
        raise LoRAError("add_lora_bank needs at least one adapted model")
    base_params = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(base_model, nnx.Param)))
    per: list[dict[tuple, LoRALinear]] = []
    for k, m in enumerate(adapted):
        _check_model(m, "add_lora_bank")
        _no_bank(m, "add_lora_bank")
        layers = dict(_lora_layers(m))
        if not layers:
            raise LoRAError(f"adapter {k} has no LoRA layers; give models from add_lora or load_lora")
        if _base_summary(m) != _base_summary(base_model):
            raise LoRAError(f"adapter {k} was added to a different base model ({_base_summary(m)} vs "
                            f"{_base_summary(base_model)}); build every adapter on this base")
        own = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(m, nnx.Param)))
        for path, arr in base_params.items():  # the same base weights (arrays are shared after add_lora)
            mine = own.get(path)
            if mine is None or (mine is not arr and not np.array_equal(np.asarray(mine), np.asarray(arr))):
                raise LoRAError(f"adapter {k}'s base weight {'.'.join(map(str, path))} differs from the base "
                                f"model's; an adapter bank shares one base")
        per.append(layers)
    out = nnx.clone(base_model)
    targets = sorted({p for layers in per for p in layers}, key=str)
    rank = max(m.lora_rank for layers in per for m in layers.values())
    rows = AdapterRows(jnp.zeros((1,), jnp.int32))
    linears = dict(_linears(out))
    for path in targets:
        lin = linears[path]
        a = np.zeros((len(per), lin.in_features, rank), np.float32)
        b = np.zeros((len(per), rank, lin.out_features), np.float32)
        scale = np.zeros((len(per),), np.float32)
        for k, layers in enumerate(per):
            if path in layers:
                m = layers[path]
                a[k, :, :m.lora_rank] = np.asarray(m.lora.lora_a[...], np.float32)
                b[k, :m.lora_rank] = np.asarray(m.lora.lora_b[...], np.float32)
                scale[k] = m.lora_scale
        setattr(_parent(out, path), path[-1],
                MultiLoRALinear(lin, jnp.asarray(a), jnp.asarray(b), jnp.asarray(scale), rows))
    return out


def set_adapter_rows(model: CausalLM, rows: jax.Array) -> None:
    """Make row ``i`` of ``model``'s next forward use adapter ``rows[i]`` (int ``(R,)``; in ``jit``
    set it on the model merged inside the program). Out-of-range ids are a ``LoRAError`` on the host;
    inside ``jit`` they are clamped (JAX gathers do not raise)."""
    layers = _bank_layers(model)
    if not layers:
        raise LoRAError("set_adapter_rows needs a model with an adapter bank (add_lora_bank)")
    n = int(layers[0][1].bank_a.shape[0])
    if not isinstance(rows, jax.core.Tracer):
        ids = np.asarray(rows)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or (ids.size and (ids.min() < 0 or ids.max() >= n)):
            raise LoRAError(f"adapter rows must be integers in [0, {n}), one per row; got {ids.tolist()!r}")
    layers[0][1].rows.set_value(jnp.asarray(rows, jnp.int32))  # the variable every bank layer shares


# ------------------------------------------------------------------------------ functional training
def split_trainable(model: CausalLM, mode: str) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, trainable, frozen)``: mode "full" trains every ``nnx.Param``, "lora" only the
    ``nnx.LoRAParam`` adapters. Rebuild with ``merge_trainable``."""
    _check_model(model, "split_trainable")
    if mode not in TRAIN_MODES:
        raise LoRAError(f"unknown training mode {mode!r}; known modes: {', '.join(TRAIN_MODES)}")
    if mode == "lora":
        if not has_lora(model):
            raise LoRAError("mode 'lora' needs a model with LoRA adapters; call add_lora(model, LoRAConfig(...)) "
                            "first, or use mode 'full'")
        return nnx.split(model, nnx.LoRAParam, ...)
    return nnx.split(model, nnx.Param, ...)


def merge_trainable(graphdef: nnx.GraphDef, trainable: nnx.State, frozen: nnx.State) -> CausalLM:
    """Inverse of ``split_trainable`` (use inside jitted loss functions)."""
    return nnx.merge(graphdef, trainable, frozen)


# ------------------------------------------------------------------------------ save / load
def _base_summary(model: CausalLM) -> dict[str, Any]:
    return {f: getattr(model.config, f) for f in BASE_FIELDS}


def save_lora(model: CausalLM, directory: str | os.PathLike, base: str | None = None) -> Path:
    """Write the adapter only: ``adapter_model.safetensors`` (float32 A/B by NNX path) and
    ``adapter_config.json`` (LoRAConfig, base ModelConfig summary, optional ``base`` identifier).

    The directory is written to a temporary sibling and renamed into place (see
    ``hf_writer.atomic_directory``); returns its path.
    """
    from safetensors.numpy import save_file

    from londi_jax.lm.hf_writer import atomic_directory

    _check_model(model, "save_lora")
    _no_bank(model, "save_lora")
    cfg = lora_config_of(model)
    tensors = {".".join(map(str, k)): np.asarray(v)
               for k, v in traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam))).items()}
    meta = {"format": ADAPTER_FORMAT, "version": 1, "lora": dataclasses.asdict(cfg),
            "base_model": _base_summary(model), "base": base}
    with atomic_directory(directory, marker=ADAPTER_CONFIG) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "np"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return Path(directory)


def read_lora_config(directory: str | os.PathLike) -> tuple[LoRAConfig, dict[str, Any]]:
    """``(LoRAConfig, metadata dict)`` of a saved adapter directory."""
    d = Path(directory)
    cfg_file, weights = d / ADAPTER_CONFIG, d / ADAPTER_WEIGHTS
    if not d.is_dir() or not cfg_file.exists() or not weights.exists():
        raise LoRAError(f"{d} holds no LoRA adapter (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}, "
                        f"as written by save_lora)")
    try:
        meta = json.loads(cfg_file.read_text())
        lora = meta["lora"]
        return LoRAConfig(rank=lora["rank"], alpha=lora["alpha"], targets=tuple(lora["targets"])), meta
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise LoRAError(f"{cfg_file} is not a valid adapter config ({type(err).__name__}: {err}); "
                        f"re-save the adapter with save_lora") from err


def load_lora(base_model: CausalLM, directory: str | os.PathLike) -> CausalLM:
    """``base_model`` with the adapter saved in ``directory`` applied (the base model is not mutated)."""
    from safetensors.numpy import load_file

    _check_model(base_model, "load_lora")
    cfg, meta = read_lora_config(directory)
    saved = meta.get("base_model") or {}
    have = _base_summary(base_model)
    diff = [f"{k}: adapter {saved[k]!r} vs model {have[k]!r}" for k in BASE_FIELDS
            if k in saved and saved[k] != have[k] and not (k == "model_type" and not (saved[k] and have[k]))]
    if diff:
        raise LoRAError(f"the adapter in {directory} was trained on a different base model ({'; '.join(diff)}); "
                        f"load it onto the base it was saved from" + (f" ({meta['base']})" if meta.get("base") else ""))
    adapted = add_lora(base_model, cfg)
    state = nnx.state(adapted, nnx.LoRAParam)
    expected = {".".join(map(str, k)): v for k, v in traverse_util.flatten_dict(nnx.to_pure_dict(state)).items()}
    tensors = load_file(str(Path(directory) / ADAPTER_WEIGHTS))
    problems = [f"missing tensor {n!r}" for n in sorted(set(expected) - set(tensors))]
    problems += [f"unexpected tensor {n!r}" for n in sorted(set(tensors) - set(expected))]
    problems += [f"tensor {n!r} has shape {tuple(tensors[n].shape)} but the model expects {tuple(expected[n].shape)}"
                 for n in sorted(set(tensors) & set(expected)) if tuple(tensors[n].shape) != tuple(expected[n].shape)]
    if problems:
        raise LoRAError(f"the adapter in {directory} does not fit this {base_model.config.family} model "
                        f"({len(problems)} problem{'s' * (len(problems) > 1)}):\n  - " + "\n  - ".join(problems))
    values = {tuple(int(p) if p.isdigit() else p for p in n.split(".")): jnp.asarray(a, expected[n].dtype)
              for n, a in tensors.items()}
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(values))
    nnx.update(adapted, state)
    return adapted
