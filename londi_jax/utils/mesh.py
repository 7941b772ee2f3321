"""Device meshes and the member axis of sweeps, on ``jax.sharding``.

A mesh is named by its axes' sizes, ``"data=4,model=2"`` (``parse_mesh``). The axes, by role
(the logical names MaxText and bonsai use):

* ``data``:  sweep members, env batches and BC minibatches (embarrassingly parallel rows);
* ``fsdp``:  parameter shards gathered per layer (fully sharded data parallel);
* ``model``: tensor parallelism inside a layer (attention heads, MLP width).

``make_mesh()`` with no shape puts every visible device on ``data``. A sweep's member axis is
sharded over ``data`` by ``shard_members``: members are padded up to a multiple of the axis size
with copies of the last member (whose outputs are then dropped, ``unpad``), so any member count
runs on any mesh. Each member's arithmetic is the same program on every device, so results equal
the one-device run (``tests/utils/test_mesh.py`` checks this on 8 virtual CPU devices).

Virtual devices for tests and trials: ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(or ``jax.config.update("jax_num_cpu_devices", 8)``) set before JAX first touches a backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from londi_jax.utils.errors import LondiError, UnknownNameError

AXES = ("data", "fsdp", "model")
MEMBER_AXIS = "data"


class MeshError(LondiError):
    """A mesh that cannot be built on the visible devices."""


def parse_mesh(text: str | dict[str, int] | None) -> dict[str, int]:
    """``"data=4,model=2"`` -> ``{"data": 4, "model": 2}`` (axis order kept).

    One size may be ``-1``: it takes the devices the others leave. Raises ``UnknownNameError``
    for an axis not in ``AXES`` and ``MeshError`` for a malformed entry, a repeated axis or a size
    that is not a positive integer.
    """
    if text is None:
        return {}
    if isinstance(text, dict):
        items = list(text.items())
    else:
        items = []
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            name, eq, size = part.partition("=")
            if not eq:
                raise MeshError(f"mesh entry {part!r} is not AXIS=SIZE (e.g. --mesh data=4,model=2)")
            try:
                items.append((name.strip(), int(size)))
            except ValueError:
                raise MeshError(f"mesh axis {name.strip()!r}: size {size.strip()!r} is not an integer") from None
    shape: dict[str, int] = {}
    for name, size in items:
        if name not in AXES:
            raise UnknownNameError("mesh axis", name, AXES,
                                   "data shards sweep members and batches, fsdp and model shard LM parameters")
        if name in shape:
            raise MeshError(f"mesh axis {name!r} given twice")
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or (size < 1 and size != -1):
            raise MeshError(f"mesh axis {name!r}: size must be a positive integer (or -1 for the rest), got {size!r}")
        shape[name] = int(size)
    if sum(v == -1 for v in shape.values()) > 1:
        raise MeshError("at most one mesh axis may be -1 (it takes the devices the others leave)")
    return shape


def make_mesh(shape: str | dict[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``jax.sharding.Mesh`` over ``devices`` (default: every visible device).

    ``shape`` as for ``parse_mesh``; None or empty puts all devices on ``data``. Axes not named get
    size 1, so every mesh has all of ``AXES`` (code can name any axis in a ``PartitionSpec``).
    The product of the sizes must divide the device count; a smaller mesh uses the first devices.
    Raises ``MeshError`` naming the device count when it does not.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = parse_mesh(shape) or {MEMBER_AXIS: -1}
    known = math.prod(v for v in sizes.values() if v != -1)
    if -1 in sizes.values():
        if len(devices) % known:
            raise MeshError(f"mesh {format_mesh(sizes)}: the fixed axes' product {known} does not divide "
                            f"the {len(devices)} visible devices; make N virtual CPU devices with "
                            "londi-jax --local-devices N (or XLA_FLAGS=--xla_force_host_platform_device_count=N)")
        sizes = {k: (len(devices) // known if v == -1 else v) for k, v in sizes.items()}
    total = math.prod(sizes.values())
    if total > len(devices) or len(devices) % total:
        raise MeshError(f"mesh {format_mesh(sizes)} needs {total} devices, which does not divide the "
                        f"{len(devices)} visible ({devices[0].platform}); choose sizes whose product "
                        f"divides {len(devices)}, or make N virtual CPU devices (londi-jax --local-devices N, "
                        "or XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    full = {a: sizes.get(a, 1) for a in AXES}
    grid = np.asarray(devices[:total], dtype=object).reshape(tuple(full.values()))
    return Mesh(grid, tuple(full))


def as_mesh(mesh: Any) -> Mesh:
    """A ``Mesh`` as given, or built from its shape (``"fsdp=2,model=4"`` or a dict: ``make_mesh``).
    Raises ``MeshError`` for anything else."""
    if isinstance(mesh, Mesh):
        return mesh
    if isinstance(mesh, (str, dict)) and mesh:
        return make_mesh(mesh)
    raise MeshError(f"expected a jax.sharding.Mesh or a mesh shape such as 'fsdp=2,model=4', got {mesh!r}")


def default_mesh(shape: str | dict[str, int] | None = None) -> Mesh | None:
    """The mesh a command runs on: ``shape`` when given; else every visible device on ``data``, or
    None (the plain one-device path) when only one device is visible."""
    if shape or len(jax.devices()) > 1:
        return make_mesh(shape)
    return None


def format_mesh(shape: dict[str, int] | Mesh) -> str:
    """``{"data": 4, "model": 2}`` or a mesh -> ``"data=4,model=2"`` (axes of size 1 left out)."""
    if isinstance(shape, Mesh):
        shape = dict(shape.shape)
    text = ",".join(f"{k}={v}" for k, v in shape.items() if v != 1)
    return text or ",".join(f"{k}={v}" for k, v in list(shape.items())[:1])


def mesh_info(mesh: Mesh | None) -> dict[str, Any]:
    """What a result records about where it ran: ``{"devices": [...], "platform", "mesh"}``."""
    devices = list(mesh.devices.flat) if mesh is not None else jax.devices()[:1]
    return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "devices": len(devices), "mesh": format_mesh(mesh) if mesh is not None else "one device",
            "processes": jax.process_count()}


def pad_members(tree: Any, multiple: int) -> tuple[Any, int]:
    """Pad every leaf's leading (member) axis up to a multiple of ``multiple`` with copies of the
    last member; returns ``(padded, real_count)``. All leaves must share the leading size."""
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise MeshError(f"member arrays disagree on the member count: {sorted(sizes)}")
    (n,) = sizes
    extra = -n % multiple
    if not extra:
        return tree, n
    pad = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)])  # noqa: E731
    return jax.tree.map(pad, tree), n


def unpad(tree: Any, n: int) -> Any:
    """The first ``n`` members of every leaf (drops ``pad_members``'s copies)."""
    return jax.tree.map(lambda x: x[:n], tree)


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis over ``data``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))


def members_sharding_of(tree: Any) -> NamedSharding | None:
    """The member sharding of a tree placed by ``shard_members`` (its first leaf's), else None.

    Programs whose outputs are derived from random keys (a fresh train state) may not inherit
    the inputs' sharding; callers place such outputs with it explicitly."""
    leaves = jax.tree.leaves(tree)
    s = getattr(leaves[0], "sharding", None) if leaves else None
    if isinstance(s, NamedSharding) and len(s.spec) and s.spec[0] == MEMBER_AXIS:
        return s
    return None


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def mesh_spans_processes(mesh: Mesh) -> bool:
    """Whether ``mesh`` holds devices of other processes (multi-host)."""
    return not replicated(mesh).is_fully_addressable


def replicated_constraint(tree: Any, mesh: Mesh) -> Any:
    """Inside a jitted program: ``tree``'s arrays replicated over ``mesh`` (outputs every process
    reads back)."""
    return jax.lax.with_sharding_constraint(tree, replicated(mesh))


def split_rows(mesh: Mesh | None, *xs: jax.Array) -> tuple[jax.Array, ...]:
    """Inside a jitted program: arrays with their leading (row) axis split over ``mesh``'s
    ``data`` axis (a sharding constraint; the compiler partitions the work that follows). Left
    as they are without a mesh, with ``data`` of size 1, or where the rows do not divide evenly."""
    n = 1 if mesh is None else mesh.shape.get(MEMBER_AXIS, 1)
    if n == 1:
        return xs
    rows = member_sharding(mesh)
    return tuple(jax.lax.with_sharding_constraint(x, rows) if x.shape[0] % n == 0 else x for x in xs)


def host_to_global(tree: Any, mesh: Mesh) -> Any:
    """Host values (numpy, scalars, one-device arrays) placed replicated on ``mesh``; arrays
    already laid out on it pass through. A program over a mesh that spans processes takes only
    such global arrays."""
    def one(x: Any) -> Any:
        if isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh:
            return x
        return place(x if isinstance(x, jax.Array) else np.asarray(x), replicated(mesh))

    return jax.tree.map(one, tree)


def place(tree: Any, sharding: NamedSharding) -> Any:
    """``jax.device_put`` that also works when ``sharding`` spans other processes' devices: every
    process holds the same full values (the sweep's members are computed identically everywhere)
    and gives its own devices their slices (``jax.make_array_from_callback``)."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(x: Any) -> Any:
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
    """Numpy copies of ``tree``'s arrays, gathered from every process when they span several."""
    leaves = jax.tree.leaves(tree)
    if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves):
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def shard_members(tree: Any, mesh: Mesh | None) -> tuple[Any, int]:
    """Pad the member axis to the ``data`` axis size and place it sharded; ``(tree, real_count)``.

    With ``mesh=None`` the tree is returned as is (one device). Jitted programs called on the
    result run each device's members there; outputs keep the member sharding. On several
    processes every process passes the same members and holds its devices' share.
    """
    if mesh is None:
        return tree, int(np.shape(jax.tree.leaves(tree)[0])[0])
    padded, n = pad_members(tree, mesh.shape[MEMBER_AXIS])
    return place(padded, member_sharding(mesh)), n


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Put a shared input (a dataset, the LM weights) on every device of ``mesh`` (None: as is)."""
    return tree if mesh is None else place(tree, replicated(mesh))


def layout(mesh: Mesh | None, members: int) -> dict[str, Any]:
    """How a sweep's members were laid out, recorded with its results:
    ``{"members", "padded", "mesh", "devices"}``."""
    per = 1 if mesh is None else mesh.shape[MEMBER_AXIS]
    return {"members": members, "padded": -members % per,
            "mesh": format_mesh(mesh) if mesh is not None else "one device",
            "devices": 1 if mesh is None else mesh.devices.size}
