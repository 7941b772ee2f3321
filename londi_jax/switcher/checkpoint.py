"""Resumable switcher training over the project's checkpoint store (``utils.checkpoint``).

``run_resumable`` drives any chunked, jitted training loop so that a killed run resumes from its
newest checkpoint; ``train_resumable`` applies it to a switcher ``Trainer`` (one run or a sweep).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from londi_jax.utils.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointStore,
    to_jsonable,
    tree_signature,
)

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointStore",
    "tree_signature",
    "to_jsonable",
    "run_resumable",
    "train_resumable",
    "ResumableResult",
]


# ----------------------------------------------------------------------------- resumable loop


def run_resumable(
    store: CheckpointStore,
    init_state: Callable[[], Any],
    chunk: Callable[[Any, int], Any],
    *,
    every_updates: int,
    total_updates: int,
    kind: str,
    config: Any = None,
    hparams: Any = None,
    on_checkpoint: Callable[[int, Any], None] | None = None,
    progress: bool = True,
    to_store: Callable[[Any], Any] | None = None,
    from_store: Callable[[Any], Any] | None = None,
) -> tuple[Any, int]:
    """Advance a state in chunks of ``every_updates`` up to ``total_updates``, saving after each.

    On start, resumes from the store's latest checkpoint when one exists (after checking it
    matches ``kind`` / ``config`` / ``hparams``; ``init_state`` is then only shape-evaluated),
    otherwise starts from ``init_state()``.
    ``chunk(state, n)`` must advance the state by ``n`` updates. ``on_checkpoint(step, state)``
    runs after each save (tests use it to stop a run part-way). Returns ``(state, resumed_from)``
    with ``resumed_from = 0`` for a fresh start. ``to_store(state)`` is what a checkpoint holds
    and ``from_store(stored)`` places it for training (default: as is, committed to the first
    device); a sweep sharded over devices stores its real members only, so a checkpoint restores
    onto any mesh.
    """
    to_store = to_store or (lambda s: s)
    # orbax restores committed arrays; committing the fresh state too keeps one compiled
    # chunk program for fresh and resumed runs (committed-ness is part of jit's cache key)
    from_store = from_store or (lambda s: jax.device_put(s, jax.devices()[0]))
    if every_updates < 1 or total_updates < 0:
        raise CheckpointError(
            f"every_updates must be >= 1 and total_updates >= 0 (got {every_updates}, {total_updates})"
        )
    start = store.latest_step()
    if start is None:
        state, start = from_store(to_store(init_state())), 0
    else:
        if start > total_updates:
            raise CheckpointError(
                f"checkpoint in {store.directory} is at update {start}, beyond total_updates="
                f"{total_updates}; raise total_updates or use another directory"
            )
        # only the structure is needed: eval_shape traces init without compiling or running it
        like = jax.eval_shape(lambda: to_store(init_state()))
        state, _ = store.restore(like, start, kind=kind, config=config, hparams=hparams)
        state = from_store(state)
    step = start
    with tqdm(total=total_updates, initial=start, desc="train", unit="upd", disable=not progress) as bar:
        while step < total_updates:
            n = min(every_updates, total_updates - step)
            state = chunk(state, n)
            step += n
            store.save(step, to_store(state), kind=kind, config=config, hparams=hparams)
            bar.update(n)
            if on_checkpoint is not None:
                store.wait()
                on_checkpoint(step, state)
    store.wait()
    return state, start


# ----------------------------------------------------------------------------- switcher training


class ResumableResult(NamedTuple):
    """Outcome of :func:`train_resumable`."""

    train_state: Any  # train.TrainState (leaves stacked [G, ...] for a sweep)
    metrics: dict[str, Any]  # metrics of the updates run by THIS call, stacked [..., updates]
    resumed_from: int  # update count the call started from (0 = fresh start)


_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _jitted(trainer: Any, sweep: bool) -> tuple[Callable, Callable]:
    """``(init, chunk)`` jitted once per trainer (and sweep mode), so repeated / resumed
    calls in one process do not recompile."""
    per = _JITTED.setdefault(trainer, {})
    if sweep not in per:
        if sweep:  # env params are shared by the members (in_axes None), passed as arguments
            init = jax.jit(jax.vmap(trainer.init_train_state, in_axes=(0, 0, None)))
            step = jax.jit(jax.vmap(trainer.train_chunk, in_axes=(0, 0, None, None)),
                           static_argnums=2, donate_argnums=0)
        else:
            init = jax.jit(trainer.init_train_state)
            step = jax.jit(trainer.train_chunk, static_argnums=2, donate_argnums=0)
        per[sweep] = (init, step)
    return per[sweep]


def train_resumable(
    trainer: Any,
    hparams: Any,
    rng: jax.Array,
    ckpt_dir: str | os.PathLike,
    *,
    every_updates: int,
    total_updates: int | None = None,
    keep: int = 3,
    on_checkpoint: Callable[[int, Any], None] | None = None,
    progress: bool = True,
    env_params: Any = None,
    meta: dict[str, Any] | None = None,
    mesh: Any = None,
    shard_members: bool = True,
) -> ResumableResult:
    """Train a switcher (or a vmapped sweep) with a checkpoint every ``every_updates`` updates.

    ``trainer`` is ``londi_jax.switcher.train.make_train(config, env, env_params)``. Runs
    ``trainer.train_chunk`` between saves, and on start resumes from the newest checkpoint in
    ``ckpt_dir``, so an interrupted run continues where it stopped and ends bit-for-bit where
    an uninterrupted one would. A sweep is recognised by ``hparams`` leaves with a leading axis
    ``[G]`` (then ``rng`` is ``[G]`` keys, one per member). The config, env parameters and
    hparams are stored as JSON next to every checkpoint; resuming with different ones (other
    width, sweep size, learner, env, ...) raises :class:`CheckpointMismatchError` naming the
    differences. ``total_updates`` defaults to ``config.num_updates`` (which also sets the
    epsilon schedule). ``env_params``: passed to the compiled programs as an argument (shared by a
    sweep's members), default ``trainer.env_params``. ``meta``: more JSON-able facts stored with
    every checkpoint and checked on resume (e.g. the members' seeds). ``mesh``: a sweep's members
    are sharded over its ``data`` axis (``utils.mesh``; padded, the copies never stored or
    returned) and ``env_params`` replicated; a checkpoint resumes on any mesh. ``shard_members=False``:
    the members are replicated over the mesh instead (for an env that splits its own rows over it).
    """
    config = trainer.config
    total = int(config.num_updates if total_updates is None else total_updates)
    sweep = jnp.ndim(hparams.c) == 1
    if sweep:
        size = int(jnp.shape(hparams.c)[0])
        if jnp.shape(rng)[:1] != (size,):
            raise CheckpointError(
                f"a sweep of {size} hparams needs {size} rng keys (jax.random.split(key, {size})), "
                f"got rng of shape {list(jnp.shape(rng))}"
            )
    init, step = _jitted(trainer, sweep)
    env_params = trainer.env_params if env_params is None else env_params
    chunks: list[dict[str, Any]] = []
    to_store = from_store = None
    stored_hparams, n_real = hparams, None
    if mesh is not None and sweep and shard_members:
        from londi_jax.utils import mesh as mesh_lib

        (rng, hparams), n_real = mesh_lib.shard_members((rng, hparams), mesh)
        env_params = mesh_lib.replicate(env_params, mesh)
        to_store = lambda s: mesh_lib.unpad(s, n_real)  # noqa: E731
        from_store = lambda s: mesh_lib.shard_members(s, mesh)[0]  # noqa: E731
    elif mesh is not None:  # every device holds the whole state; the programs split what they choose
        from londi_jax.utils import mesh as mesh_lib

        rng, hparams, env_params = mesh_lib.replicate((rng, hparams, env_params), mesh)
        from_store = lambda s: mesh_lib.replicate(s, mesh)  # noqa: E731

    def chunk(ts: Any, n: int) -> Any:
        ts, metrics = step(ts, hparams, n, env_params)
        chunks.append(metrics)
        return ts

    meta_config = {"switcher": config, "env": type(trainer.env).__name__, "env_params": trainer.env_meta(env_params),
                   **(meta or {})}
    with CheckpointStore(ckpt_dir, keep=keep) as store:
        ts, start = run_resumable(
            store, lambda: init(rng, hparams, env_params), chunk, every_updates=every_updates,
            total_updates=total, kind=f"switcher-train/{config.learner}", config=meta_config,
            hparams=stored_hparams, on_checkpoint=on_checkpoint, progress=progress,
            to_store=to_store, from_store=from_store,
        )
    axis = 1 if sweep else 0
    metrics = (jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=axis), *chunks) if chunks else {})
    if n_real is not None:
        ts, metrics = to_store(ts), jax.tree.map(lambda x: x[:n_real], metrics)
    return ResumableResult(train_state=ts, metrics=metrics, resumed_from=start)
