"""Vectorised sweeps: ONE compiled program trains every member (seeds x hyper-parameter points).

A ``SweepSpec`` names traced ``HParams`` fields and their values (grid) or distributions
(random search). ``run_sweep`` stacks the members' ``HParams`` along a leading axis, trains them
all with ``jax.vmap`` inside one ``jax.jit`` (chunked, so a progress bar can advance), evaluates
the greedy switches, and returns a ``ResultsTable`` (one row per member, printable, JSON/CSV).
Changing values never recompiles; only static ``SwitcherConfig`` changes do. Given a device mesh
(``utils/mesh.py``), the member axis is sharded over its ``data`` axis (padded to a multiple of
its size; the copies are dropped), and the table records the layout.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from londi_jax.switcher.config import HPARAM_NAMES, HParams, check_value
from londi_jax.switcher.train import Trainer, TrainState
from londi_jax.utils import mesh as mesh_lib
from londi_jax.utils.errors import LondiError, UnknownNameError
from londi_jax.utils.fields import at_least

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")


class SweepError(LondiError):
    """An invalid sweep specification."""


@dataclasses.dataclass
class SweepSpec:
    """What to sweep.

    params: ``name -> values`` (grid: a list; random: a list is sampled uniformly, or a tuple
        ``("uniform"|"loguniform", lo, hi)``, ``("randint", lo, hi)`` inclusive, ``("choice", [..])``).
    mode: ``"grid"`` (Cartesian product) or ``"random"`` (``num_samples`` draws).
    seeds: training seeds per point (members = points x seeds).
    base: fixed ``HParams`` overrides shared by all members.
    """

    params: dict[str, Any]
    mode: str = "grid"
    num_samples: int = 8
    seeds: int = 1
    base: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("grid", "random"):
            raise UnknownNameError("sweep mode", self.mode, ("grid", "random"))
        for name in (*self.params, *self.base):
            if name not in HPARAM_NAMES:
                raise UnknownNameError("hyper-parameter", name, HPARAM_NAMES,
                                       "only traced HParams fields can be swept")
        for name in ("seeds", "num_samples"):
            check_value(f"SweepSpec.{name}", getattr(self, name), int, at_least(1))
        for name, v in self.params.items():
            if self.mode == "grid" and (isinstance(v, tuple) or not len(v)):
                raise SweepError(f"grid sweep needs a non-empty list of values for {name!r}, got {v!r}")


def _sample(name: str, dist: Any, rng: np.random.Generator) -> float:
    if isinstance(dist, list):
        return dist[rng.integers(len(dist))]
    if not isinstance(dist, tuple) or not dist:
        raise SweepError(f"{name!r}: expected a list of values or a (kind, ...) tuple, got {dist!r}")
    kind, *args = dist
    if kind == "uniform":
        return float(rng.uniform(*args))
    if kind == "loguniform":
        lo, hi = args
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if kind == "randint":
        lo, hi = args
        return int(rng.integers(lo, hi + 1))
    if kind == "choice":
        return args[0][rng.integers(len(args[0]))]
    raise UnknownNameError("distribution", str(kind), DISTRIBUTIONS)


def expand(spec: SweepSpec, seed: int = 0) -> list[dict[str, Any]]:
    """Hyper-parameter points (without seeds), each a ``name -> value`` dict."""
    names = list(spec.params)
    if spec.mode == "grid":
        return [dict(zip(names, combo)) for combo in itertools.product(*spec.params.values())]
    rng = np.random.default_rng(seed)
    return [{n: _sample(n, spec.params[n], rng) for n in names} for _ in range(spec.num_samples)]


def stack_hparams(points: Sequence[dict[str, Any]], base: dict[str, float] | None = None) -> HParams:
    """Stack per-member hyper-parameters into one ``HParams`` with a leading member axis."""
    if not points:
        raise SweepError("no sweep members")
    each = [HParams.create(**{**(base or {}), **p}) for p in points]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *each)


def members(spec: SweepSpec, seed: int = 0) -> list[dict[str, Any]]:
    """Points x seeds, each a dict with a ``seed`` entry (seed index 0 .. seeds-1)."""
    return [{**p, "seed": s} for p in expand(spec, seed) for s in range(spec.seeds)]


def train_many(trainer: Trainer, rngs: jax.Array, hparams: HParams, num_updates: int | None = None,
               chunk: int | None = None, progress: bool = True,
               desc: str = "training") -> tuple[TrainState, dict[str, jax.Array]]:
    """Train ``len(rngs)`` switchers (stacked ``hparams``) in one vmapped program, in chunks.

    Every chunk reuses one compiled ``jit(vmap(train_chunk))``; metrics are concatenated to
    ``[members, num_updates]``. The progress bar counts *finished* updates: JAX dispatches
    asynchronously, so chunk k is dispatched first and then chunk k-1's output is waited on
    before the bar advances (the device never idles between chunks). ``num_updates`` and
    ``chunk`` must be ints >= 1 (``ConfigError``). Members sharded over devices
    (``mesh.shard_members``) stay where they are: each device trains its own.
    """
    check_value("num_updates", num_updates, int, at_least(1), optional=True)
    check_value("chunk", chunk, int, at_least(1), optional=True)
    num_updates = num_updates or trainer.config.num_updates
    chunk = min(chunk or num_updates, num_updates)
    init = trainer.__dict__.setdefault("_vmapped_init", jax.jit(jax.vmap(trainer.init_train_state)))
    step = _chunk_fn(trainer, chunk)
    ts = init(rngs, hparams)
    sharding = mesh_lib.members_sharding_of(hparams)
    if sharding is not None:  # a fresh state does not inherit the members' sharding: place it so
        ts = jax.device_put(ts, sharding)
    metrics, done = [], 0
    bar = tqdm(total=num_updates, desc=desc, disable=not progress, unit="upd", leave=False)
    pending: tuple[Any, int] | None = None  # (output, updates) of the chunk dispatched last
    while done < num_updates:
        n = min(chunk, num_updates - done)
        fn = step if n == chunk else _chunk_fn(trainer, n)
        ts, m = fn(ts, hparams)  # returns at once; runs while the previous chunk is waited on
        metrics.append(m)
        done += n
        if pending is not None:
            bar.update(_finished(*pending))
        pending = (m, n)
    jax.block_until_ready(ts)
    if pending is not None:
        bar.update(_finished(*pending))
    bar.close()
    return ts, jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *metrics)


def _finished(output: Any, n: int) -> int:
    """Wait until a chunk's ``output`` is computed; its number of updates ``n``."""
    jax.block_until_ready(output)
    return n


def _chunk_fn(trainer: Trainer, n: int) -> Callable:
    """``jit(vmap(train_chunk))`` for ``n`` updates, cached on the trainer (compiled once)."""
    cache = trainer.__dict__.setdefault("_vmapped_chunks", {})
    if n not in cache:
        cache[n] = jax.jit(jax.vmap(lambda ts, hp: trainer.train_chunk(ts, hp, n)),
                           donate_argnums=0)
    return cache[n]


def evaluate_many(trainer: Trainer, params: Any, hparams: HParams, rng: jax.Array,
                  num_episodes: int, max_steps: int, env_params: Any = None) -> dict[str, np.ndarray]:
    """Greedy evaluation of every member; per-member summary arrays ``[members]``.

    ``rng``: one key (split per member) or a ``[members]`` batch of keys (a sharded sweep passes
    its padded keys, so member i's episodes do not depend on the padding)."""
    m = jax.tree.leaves(hparams)[0].shape[0]
    keys = jax.random.split(rng, m) if rng.ndim == 0 else rng
    cache = trainer.__dict__.setdefault("_vmapped_evals", {})
    if (num_episodes, max_steps) not in cache:
        cache[num_episodes, max_steps] = jax.jit(jax.vmap(
            lambda p, hp, k, ep: trainer.evaluate(p, hp, k, num_episodes, max_steps, ep),
            in_axes=(0, 0, 0, None)))
    env_params = trainer.env_params if env_params is None else env_params
    out = mesh_lib.to_host(cache[num_episodes, max_steps](params, hparams, keys, env_params))
    return {
        "disc_return": np.asarray(out["disc_return"].mean(-1)),
        "env_return": np.asarray(out["env_return"].mean(-1)),
        "calls": np.asarray(out["calls"].mean(-1)),
        "max_calls": np.asarray(out["calls"].max(-1)),
        "success": np.asarray(out["success"].mean(-1)),
        "violations": np.asarray(out["violation"].sum(-1)),
        "unfinished": np.asarray((~out["finished"]).sum(-1)),
    }


@dataclasses.dataclass
class ResultsTable:
    """One row per member: hyper-parameters then metrics."""

    columns: list[str]
    rows: list[dict[str, Any]]
    layout: dict[str, Any] | None = None  # members, padding, mesh and devices (utils.mesh.layout)

    def to_records(self) -> list[dict[str, Any]]:
        return [{c: _plain(r.get(c)) for c in self.columns} for r in self.rows]

    def to_json(self) -> str:
        return json.dumps(self.to_records(), indent=2)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns)
        w.writeheader()
        w.writerows(self.to_records())
        return buf.getvalue()

    def render(self) -> str:
        """Fixed-width text table."""
        cells = [[_fmt(r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
                  for i, c in enumerate(self.columns)]
        line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
        return "\n".join([line(self.columns), line(["-" * w for w in widths]),
                          *(line(row) for row in cells)])


def _plain(v: Any) -> Any:
    if isinstance(v, (np.generic, jnp.ndarray, np.ndarray)):
        return np.asarray(v).item()
    return v


def _fmt(v: Any) -> str:
    v = _plain(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run_sweep(trainer: Trainer, spec: SweepSpec, seed: int = 0, eval_episodes: int = 1000,
              eval_max_steps: int = 200, chunk: int | None = None, progress: bool = True,
              row_fn: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None,
              eval_env_params: Any = None, mesh: Any = None) -> ResultsTable:
    """Train and evaluate every member of ``spec`` in one compiled program; one row per member.

    ``row_fn(row, params)`` may add columns per member (``params`` = that member's Q-net params).
    ``mesh``: a ``jax.sharding.Mesh`` (``utils.mesh.make_mesh``) whose ``data`` axis shards the
    members; the rows equal the one-device run's, and ``table.layout`` says how they were laid out.
    Every member's values are checked (``HParams.create``) and ``eval_episodes``,
    ``eval_max_steps`` and ``chunk`` must be ints >= 1, before any training (``ConfigError``).
    """
    for name, value in (("eval_episodes", eval_episodes), ("eval_max_steps", eval_max_steps)):
        check_value(name, value, int, at_least(1))
    check_value("chunk", chunk, int, at_least(1), optional=True)
    check_value("seed", seed, int)
    mem = members(spec, seed)
    hp = stack_hparams([{k: v for k, v in m.items() if k != "seed"} for m in mem], spec.base)
    key = jax.random.key(seed)
    k_train, k_eval = jax.random.split(key)
    point_keys = jax.random.split(k_train, spec.seeds)  # same seed index -> same key across points
    rngs = jnp.stack([point_keys[m["seed"]] for m in mem])
    (rngs, hp, eval_keys), n = mesh_lib.shard_members((rngs, hp, jax.random.split(k_eval, len(mem))), mesh)
    ts, metrics = train_many(trainer, rngs, hp, chunk=chunk, progress=progress, desc="sweep")
    ev = evaluate_many(trainer, ts.learner.params, hp, eval_keys, eval_episodes, eval_max_steps,
                       mesh_lib.replicate(eval_env_params, mesh))
    ev, metrics, params = mesh_lib.unpad((ev, metrics, mesh_lib.to_host(ts.learner.params)), n)
    tail = max(1, trainer.config.num_updates // 10)
    metrics = mesh_lib.to_host(metrics)  # reduced on the host: the same sums whatever the device layout
    loss = metrics["loss"][:, -tail:].mean(-1)
    train_viol = metrics["violations"].sum(-1)
    train_eps = metrics["episodes"].sum(-1)
    rows = []
    for i, m in enumerate(mem):
        row = {**m, **{k: v[i] for k, v in ev.items()}, "final_loss": loss[i],
               "train_episodes": train_eps[i], "train_violations": train_viol[i]}
        if row_fn is not None:
            row.update(row_fn(row, jax.tree.map(lambda x: x[i], params)))
        rows.append(row)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return ResultsTable(columns=columns, rows=rows, layout=mesh_lib.layout(mesh, n))
