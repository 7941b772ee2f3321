"""Partitioning rules for LM parameters: logical axis names per parameter, logical -> mesh axes.

Every family's NNX modules use the same names for the same roles (the weight-mapping tables in
``hf_loader`` map each checkpoint's names onto them), so one table serves Llama, Qwen2, Mistral,
Gemma 3, GPT-NeoX and T5. A parameter's logical axes come from the module that owns it
(``LINEAR_AXES``: a linear layer's (input, output) roles; ``EMBED_AXES`` for embedding tables) and
its leaf (kernel, bias, LoRA factors, adapter banks); ``LOGICAL_RULES`` then maps each logical
axis to a mesh axis, as MaxText and bonsai do:

* ``embed`` (the residual width) -> ``fsdp``: parameters are stored split along it and gathered
  per layer by the compiler (fully sharded data parallel);
* ``heads`` / ``kv`` / ``mlp`` / ``vocab`` -> ``model``: tensor parallelism (Megatron-LM's column-
  then row-parallel split: q/k/v, gate and up split their outputs, o and down their inputs).

A dimension whose size the mesh axis does not divide is kept whole (replicated along that axis)
rather than refused, and ``plan`` reports it. LoRA factors and adapter banks follow their base
kernel's input/output axes; their rank and bank axes are never split. Optimizer states built
with optax from sharded parameters (``zeros_like``) inherit the parameters' shardings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx, traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from londi_jax.utils.mesh import place

# module name -> (input role, output role) of its kernel (nnx.Linear layout: (in, out))
LINEAR_AXES: Mapping[str, tuple[str, str]] = {
    "q_proj": ("embed", "heads"), "k_proj": ("embed", "kv"), "v_proj": ("embed", "kv"),
    "o_proj": ("heads", "embed"),
    "gate_proj": ("embed", "mlp"), "up_proj": ("embed", "mlp"), "down_proj": ("mlp", "embed"),
    "lm_head": ("embed", "vocab"),
    # T5 (encoder-decoder): the same roles under its own names
    "q": ("embed", "heads"), "k": ("embed", "heads"), "v": ("embed", "heads"), "o": ("heads", "embed"),
    "wi": ("embed", "mlp"), "wi_0": ("embed", "mlp"), "wi_1": ("embed", "mlp"), "wo": ("mlp", "embed"),
}
# module name -> axes of its embedding table (rows, width); T5's relative-position bias is tiny
EMBED_AXES: Mapping[str, tuple[str | None, str | None]] = {
    "embed": ("vocab", "embed"), "shared": ("vocab", "embed"), "rel_bias": (None, None),
}
LOGICAL_RULES: Mapping[str, str] = {"embed": "fsdp", "heads": "model", "kv": "model", "mlp": "model",
                                    "vocab": "model"}


def logical_axes(path: tuple[Any, ...], ndim: int) -> tuple[str | None, ...]:
    """The logical axis name of each dimension of the parameter at NNX ``path`` (``None``: never
    split). Norm scales, biases of row-parallel layers' outputs etc. follow from the tables; a
    leaf the tables do not know is replicated."""
    names = [str(p) for p in path]
    leaf, owner = names[-1], names[-2] if len(names) > 1 else ""
    if leaf in ("lora_a", "lora_b") and len(names) > 2:  # flax LoRALinear keeps its factors in .lora
        owner = names[-3]
    io = LINEAR_AXES.get(owner)
    if leaf == "embedding" and owner in EMBED_AXES:
        axes: tuple[str | None, ...] = EMBED_AXES[owner]
    elif io is None:
        axes = ()
    elif leaf == "kernel":
        axes = io
    elif leaf == "bias":
        axes = (io[1],)
    elif leaf == "lora_a":  # (in, rank)
        axes = (io[0], None)
    elif leaf == "lora_b":  # (rank, out)
        axes = (None, io[1])
    elif leaf == "bank_a":  # (adapters, in, rank)
        axes = (None, io[0], None)
    elif leaf == "bank_b":  # (adapters, rank, out)
        axes = (None, None, io[1])
    else:
        axes = ()
    return axes if len(axes) == ndim else (None,) * ndim


def partition_spec(path: tuple[Any, ...], shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """The ``PartitionSpec`` of the parameter at ``path`` with ``shape`` on ``mesh``: each logical
    axis on its ``LOGICAL_RULES`` mesh axis when that axis has size > 1 and divides the dimension,
    and no mesh axis used twice."""
    spec: list[str | None] = []
    used: set[str] = set()
    for size, name in zip(shape, logical_axes(path, len(shape))):
        axis = LOGICAL_RULES.get(name) if name else None
        n = mesh.shape.get(axis, 1) if axis else 1
        ok = axis is not None and n > 1 and size % n == 0 and axis not in used
        spec.append(axis if ok else None)
        if ok:
            used.add(axis)  # type: ignore[arg-type]
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def _flat(state: Any) -> dict[tuple, Any]:
    return traverse_util.flatten_dict(nnx.to_pure_dict(state))


def shard_state(state: nnx.State, mesh: Mesh) -> nnx.State:
    """``state``'s arrays placed per the rules on ``mesh`` (a no-op for arrays already there); works
    across processes (``utils.mesh.place``)."""
    flat = _flat(state)
    placed = {k: place(v, NamedSharding(mesh, partition_spec(k, tuple(v.shape), mesh))) for k, v in flat.items()}
    out = jax.tree.map(lambda x: x, state)
    nnx.replace_by_pure_dict(out, traverse_util.unflatten_dict(placed))
    return out


def plan(state: nnx.State, mesh: Mesh) -> dict[str, Any]:
    """How ``state`` splits over ``mesh``: ``{"params", "split" (tensors split at all), "replicated":
    [names of tensors with a dimension kept whole on a mesh axis of size > 1 that its rule names,
    because the axis does not divide it: "layers.0.attn.k_proj.kernel (dim 1: 192 on model=5)"],
    "largest_shard_bytes", "bytes_per_device"}`` (bytes of one device's share). A split that
    divides the size but not the head count (model=8 over 9 heads) is valid and not listed."""
    split, kept, per_device, largest = 0, [], 0, 0
    for path, v in _flat(state).items():
        spec = partition_spec(path, tuple(v.shape), mesh)
        spec = tuple(spec) + (None,) * (len(v.shape) - len(spec))
        wanted = [LOGICAL_RULES.get(n) if n else None for n in logical_axes(path, len(v.shape))]
        parts = 1
        for axis in spec:
            parts *= mesh.shape[axis] if axis else 1
        split += parts > 1
        whole = [f"dim {d}: {v.shape[d]} on {a}={mesh.shape[a]}" for d, (a, got) in enumerate(zip(wanted, spec))
                 if a and mesh.shape.get(a, 1) > 1 and got is None]
        if whole:
            kept.append(f"{'.'.join(map(str, path))} ({'; '.join(whole)})")
        shard = v.size * v.dtype.itemsize // parts
        per_device += shard
        largest = max(largest, shard)
    return {"params": len(_flat(state)), "split": split, "replicated": kept, "largest_shard_bytes": largest,
            "bytes_per_device": per_device}
